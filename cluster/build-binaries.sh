#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
# kube-proxy and etcd from one module directory (one `go build`, so shared
# packages compile once). Output goes to a directory keyed by the module files
# (which name the version) and flags: a warm call finds it and returns at once.
# Prints the directory.
#   build-binaries.sh            cluster/k8s: v1.35.4, what the local cluster runs
#   build-binaries.sh k8s-1.37   cluster/k8s-1.37: v1.37.2, the current stack
#   ... --where                  print the directory without building; exit 3 if not built
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${PODSHARE_CACHE:-/var/cache/podshare}
where=0 module=k8s
for arg in "$@"; do
  if [ "$arg" = --where ]; then where=1; else module=$arg; fi
done
mod="$here/$module"
[ -f "$mod/go.mod" ] || { echo "build-binaries.sh: no module at $mod" >&2; exit 2; }
go=$("$here/go-toolchain.sh" "$mod")
export GOTOOLCHAIN=local
k8s_version=$(cd "$mod" && "$go" list -m -f "{{.Version}}" k8s.io/kubernetes)
minor=$(echo "$k8s_version" | cut -d. -f2)

ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

key=$( { cat "$mod/go.mod" "$mod/go.sum" "$mod/cmd/etcd/main.go"; echo "$ldflags"; "$go" version; } | sha256sum | cut -c1-16)
out="$cache/bin/$key"
components=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy etcd)

complete=1
for c in "${components[@]}"; do [ -x "$out/$c" ] || complete=0; done
if [ "$complete" = 1 ] || [ "$where" = 1 ]; then echo "$out"; [ "$complete" = 1 ] || exit 3; exit 0; fi

tmp="$out.tmp.$$"
mkdir -p "$tmp"
log="$out.log"  # the build's own output, kept beside its output; its tail is shown if it fails
echo "building Kubernetes $k8s_version (cold: about 5 min for 1.35, 7-13 min for 1.37 on 2 cores; warm: at once)" \
  "into $out, log $log" >&2
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
if ! (cd "$mod" && CGO_ENABLED=0 "$go" build -trimpath -ldflags "$ldflags" -o "$tmp/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kubelet \
  k8s.io/kubernetes/cmd/kube-proxy \
  ./cmd/etcd) >"$log" 2>&1; then
  tail -n 20 "$log" >&2
  echo "building Kubernetes $k8s_version failed after $(( $(date +%s) - start ))s; the whole log: $log" >&2
  exit 1
fi
rm -rf "$out" && mv "$tmp" "$out"
echo "Kubernetes $k8s_version built in $(( ($(date +%s) - start) / 60 ))m$(( ($(date +%s) - start) % 60 ))s" >&2
echo "$out"
