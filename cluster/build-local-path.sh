#!/usr/bin/env bash
# Builds rancher's local-path-provisioner (the version cluster/local-path/go.mod
# pins, from the Go module proxy) as a static binary, cached by the module's
# files and the Go version: a warm call returns at once. Prints the binary's path.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${PODSHARE_CACHE:-/var/cache/podshare}
mod="$here/local-path"
go=$("$here/go-toolchain.sh" "$mod")
export GOTOOLCHAIN=local
key=$( { cat "$mod/go.mod" "$mod/go.sum"; "$go" version; } | sha256sum | cut -c1-16)
out="$cache/bin/local-path-$key/local-path-provisioner"
if [ -x "$out" ]; then echo "$out"; exit 0; fi
version=$(cd "$mod" && "$go" list -m -f "{{.Version}}" github.com/rancher/local-path-provisioner)
echo "building local-path-provisioner $version into $(dirname "$out") (cold: about 3 min on 2 cores)" >&2
tmp="$out.tmp.$$"
mkdir -p "$(dirname "$out")"
trap 'rm -f "$tmp"' EXIT
start=$(date +%s)
(cd "$mod" && CGO_ENABLED=0 "$go" build -trimpath -ldflags "-s -w" -o "$tmp" \
  github.com/rancher/local-path-provisioner)
mv "$tmp" "$out"
echo "built in $(( $(date +%s) - start ))s" >&2
echo "$out"
