#!/usr/bin/env bash
# Builds gVisor from its official Go module (gvisor.dev/gvisor, the go branch
# the module proxy serves): runsc and its containerd shim,
# containerd-shim-runsc-v1. Static (CGO_ENABLED=0), as gVisor's releases are: a
# cgo runsc is dynamically linked and dies in the sandbox's empty chroot (no
# ELF interpreter there). The shim is built from a patched copy of the module
# (patches/*.patch, each saying why; a `replace` in a copy of the module file,
# since the module cache cannot be overlaid); runsc is built from the same
# copy, and no patch touches it. Output goes to a directory keyed by the module
# files, the patches, the flags and the Go version: a warm call finds it and
# returns at once. Prints the directory.
#   build-gvisor.sh --where   print the directory without building; exit 3 if not built
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mod="$here/gvisor"
cache=${PODSHARE_CACHE:-/var/cache/podshare}
go=$("$here/go-toolchain.sh" "$mod")
export GOTOOLCHAIN=local
version=$(cd "$mod" && "$go" list -m -f "{{.Version}}" gvisor.dev/gvisor)
patches=("$mod"/patches/*.patch)

# runsc's version is a link-time variable (runsc/version), left
# "VERSION_MISSING" by a plain go build; the module version is all the proxy
# says (a pseudo-version of the go branch: its date and commit). The shim's -v
# prints containerd's library version (v2.1.5, pinned by gVisor) unless told:
# it names gVisor's version and that it is patched here.
runsc_ldflags="-s -w -X gvisor.dev/gvisor/runsc/version.version=$version"
shim_ldflags="-s -w -X github.com/containerd/containerd/v2/version.Version=$version+podshare.${#patches[@]}patches"

key=$( { cat "$mod/go.mod" "$mod/go.sum" "${patches[@]}"
         echo "$runsc_ldflags|$shim_ldflags|CGO_ENABLED=0"
         "$go" version; } | sha256sum | cut -c1-16)
out="$cache/gvisor/$key"
binaries=(runsc containerd-shim-runsc-v1)

complete=1
for b in "${binaries[@]}"; do [ -x "$out/$b" ] || complete=0; done
if [ "$complete" = 1 ] || [ "${1:-}" = --where ]; then echo "$out"; [ "$complete" = 1 ] || exit 3; exit 0; fi

echo "building gVisor $version (runsc, containerd-shim-runsc-v1) into $out (cold: see cluster/README.md for the time)" >&2
tmp="$out.tmp.$$"
mkdir -p "$tmp/bin"
trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
start=$(date +%s)
src=$(cd "$mod" && "$go" mod download -json gvisor.dev/gvisor | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
cp -r "$src" "$tmp/gvisor" && chmod -R u+w "$tmp/gvisor"
for p in "${patches[@]}"; do
  patch -d "$tmp/gvisor" -p1 --forward --no-backup-if-mismatch --quiet < "$p"
done
mkdir "$tmp/mod" && cp "$mod/go.mod" "$mod/go.sum" "$mod/tools.go" "$tmp/mod/"
(cd "$tmp/mod" && "$go" mod edit -replace "gvisor.dev/gvisor=$tmp/gvisor" &&
  CGO_ENABLED=0 "$go" build -trimpath -ldflags "$runsc_ldflags" -o "$tmp/bin/runsc" gvisor.dev/gvisor/runsc &&
  CGO_ENABLED=0 "$go" build -trimpath -ldflags "$shim_ldflags" -o "$tmp/bin/containerd-shim-runsc-v1" gvisor.dev/gvisor/shim)
mkdir -p "$cache/gvisor"
rm -rf "$out" && mv "$tmp/bin" "$out"
echo "built in $(( $(date +%s) - start ))s" >&2
echo "$out"
