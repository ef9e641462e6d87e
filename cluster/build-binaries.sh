#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
# kube-proxy and etcd from cluster/k8s (one `go build`, so shared packages
# compile once). Output goes to a directory keyed by the module files and
# flags: a warm call finds it and returns at once. Prints the directory.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${PODSHARE_CACHE:-/var/cache/podshare}
go=$("$here/go-toolchain.sh")
export GOTOOLCHAIN=local
k8s_version=$(cd "$here/k8s" && "$go" list -m -f "{{.Version}}" k8s.io/kubernetes)
minor=$(echo "$k8s_version" | cut -d. -f2)

ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

key=$( { cat "$here/k8s/go.mod" "$here/k8s/go.sum" "$here/k8s/cmd/etcd/main.go"; echo "$ldflags"; "$go" version; } | sha256sum | cut -c1-16)
out="$cache/bin/$key"
components=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy etcd)

complete=1
for c in "${components[@]}"; do [ -x "$out/$c" ] || complete=0; done
if [ "$complete" = 1 ]; then echo "$out"; exit 0; fi

echo "building Kubernetes $k8s_version components into $out (cold: see cluster/README.md for the time)" >&2
tmp="$out.tmp.$$"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
(cd "$here/k8s" && CGO_ENABLED=0 "$go" build -trimpath -ldflags "$ldflags" -o "$tmp/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kubelet \
  k8s.io/kubernetes/cmd/kube-proxy \
  ./cmd/etcd)
rm -rf "$out" && mv "$tmp" "$out"
echo "built in $(( $(date +%s) - start ))s" >&2
echo "$out"
