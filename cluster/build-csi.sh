#!/usr/bin/env bash
# Builds the shared file system's CSI driver (cluster/csi, podshare-sshfs-csi:
# its node plugin and its provisioner, one binary) static, from the Go module
# proxy's modules, cached by the module's files, its Go sources and the Go
# version: a warm call returns at once. Prints the binary's path.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${PODSHARE_CACHE:-/var/cache/podshare}
mod="$here/csi"
go=$("$here/go-toolchain.sh" "$mod")
export GOTOOLCHAIN=local
key=$( { cat "$mod/go.mod" "$mod/go.sum" "$mod"/*.go; "$go" version; } | sha256sum | cut -c1-16)
out="$cache/bin/csi-$key/podshare-sshfs-csi"
if [ -x "$out" ]; then echo "$out"; exit 0; fi
echo "building podshare-sshfs-csi into $(dirname "$out") (cold: about 2 min on 2 cores)" >&2
tmp="$out.tmp.$$"
mkdir -p "$(dirname "$out")"
trap 'rm -f "$tmp"' EXIT
start=$(date +%s)
(cd "$mod" && CGO_ENABLED=0 "$go" build -trimpath -ldflags "-s -w" -o "$tmp" .)
mv "$tmp" "$out"
echo "built in $(( $(date +%s) - start ))s" >&2
echo "$out"
