#!/usr/bin/env bash
# Builds the current stack's container runtime from the official Go modules:
# containerd, containerd-shim-runc-v2 and ctr (containerd 2, runtime/containerd),
# runc (runtime/runc, cgo with seccomp: Debian's libseccomp-dev) and crictl
# (runtime/crictl, a CRI client to check a node without a kubelet). Each has a
# module of its own so its dependencies resolve to exactly its release's pins.
# Output goes to a directory keyed by the module files, tags, flags and the Go
# version: a warm call finds it and returns at once. Prints the directory.
#   build-runtime.sh --where   print the directory without building; exit 3 if not built
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mods="$here/runtime"
cache=${PODSHARE_CACHE:-/var/cache/podshare}
go=$("$here/go-toolchain.sh" "$mods/containerd" "$mods/runc" "$mods/crictl")
export GOTOOLCHAIN=local
ctrd_version=$(cd "$mods/containerd" && "$go" list -m -f "{{.Version}}" github.com/containerd/containerd/v2)
crictl_version=$(cd "$mods/crictl" && "$go" list -m -f "{{.Version}}" sigs.k8s.io/cri-tools)

# As containerd's Makefile builds them, less btrfs (its snapshotter needs cgo
# and the btrfs headers; the cluster uses overlayfs). The shim is built with
# no_grpc and without cgo, as upstream ships it. No revision is stamped: the
# module proxy serves no commit for a tag, and an invented one would mislead.
ctrd_ldflags="-s -w -X github.com/containerd/containerd/v2/version.Version=$ctrd_version"
ctrd_ldflags+=" -X github.com/containerd/containerd/v2/version.Package=github.com/containerd/containerd/v2"
ctrd_tags="urfave_cli_no_docs no_btrfs"
shim_tags="urfave_cli_no_docs no_grpc"
# As runc's Makefile builds it (PIE, cgo, seccomp), less libpathrs: that is a
# Rust library Debian 12 does not ship; runc then resolves paths in Go as its
# releases before 1.4 did. runc embeds its VERSION file, so it needs no -X.
runc_tags="seccomp urfave_cli_no_docs"
runc_flags="-buildmode=pie"
# As cri-tools' Makefile stamps it (there from `git describe`).
crictl_ldflags="-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$crictl_version"

key=$( { for m in containerd runc crictl; do cat "$mods/$m/go.mod" "$mods/$m/go.sum"; done
         echo "$ctrd_ldflags|$ctrd_tags|$shim_tags|$runc_tags|$runc_flags|$crictl_ldflags"
         "$go" version; dpkg-query -W -f='${Version}' libseccomp-dev 2>/dev/null || true; } | sha256sum | cut -c1-16)
out="$cache/runtime/$key"
binaries=(containerd containerd-shim-runc-v2 ctr runc crictl)

complete=1
for b in "${binaries[@]}"; do [ -x "$out/$b" ] || complete=0; done
if [ "$complete" = 1 ] || [ "${1:-}" = --where ]; then echo "$out"; [ "$complete" = 1 ] || exit 3; exit 0; fi

echo "building containerd $ctrd_version, runc and crictl $crictl_version (cold: about 3 min on 2 cores; warm: at once)" \
  "into $out" >&2
tmp="$out.tmp.$$"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
(cd "$mods/containerd" &&
  CGO_ENABLED=0 "$go" build -trimpath -tags "$ctrd_tags" -ldflags "$ctrd_ldflags" -o "$tmp/" \
    github.com/containerd/containerd/v2/cmd/containerd github.com/containerd/containerd/v2/cmd/ctr &&
  CGO_ENABLED=0 "$go" build -trimpath -tags "$shim_tags" -ldflags "$ctrd_ldflags" -o "$tmp/" \
    github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2)
echo "containerd built in $(( $(date +%s) - start ))s" >&2
mid=$(date +%s)
(cd "$mods/runc" &&
  CGO_ENABLED=1 "$go" build -trimpath $runc_flags -tags "$runc_tags" -ldflags "-s -w" -o "$tmp/runc" \
    github.com/opencontainers/runc)
echo "runc built in $(( $(date +%s) - mid ))s" >&2
mid=$(date +%s)
(cd "$mods/crictl" &&
  CGO_ENABLED=0 "$go" build -trimpath -ldflags "$crictl_ldflags" -o "$tmp/crictl" sigs.k8s.io/cri-tools/cmd/crictl)
echo "crictl built in $(( $(date +%s) - mid ))s" >&2
mkdir -p "$cache/runtime"
rm -rf "$out" && mv "$tmp" "$out"
echo "built in $(( $(date +%s) - start ))s" >&2
echo "$out"
