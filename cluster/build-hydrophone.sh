#!/usr/bin/env bash
# Builds Hydrophone (sigs.k8s.io/hydrophone), the conformance runner that
# docs/hydrophone.md drives podshare with, at the version pinned here, from the
# Go module proxy: `go install MODULE@VERSION`, so the build takes Hydrophone's
# own go.mod and go.sum and its --version names the release. The module's
# hash (the h1: line go.sum would hold) is pinned too and checked before the
# build. Static (CGO_ENABLED=0), as the other builds here. Go's module and
# build caches go under the cache as well, not the home directory. Output goes
# to a directory keyed by the version, its hash, the flags and the Go version:
# a warm call finds it and returns at once. Prints the directory.
#   build-hydrophone.sh --where   print the directory without building; exit 3 if not built
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${PODSHARE_CACHE:-/var/cache/podshare}
module=sigs.k8s.io/hydrophone
version=v0.8.0
sum=h1:jIZyfR4oWLKNn73z3AX5xtKxAlRmglw9BXUUM9Ad2yw=
export GOTOOLCHAIN=local GOMODCACHE=${GOMODCACHE:-$cache/go/mod} GOCACHE=${GOCACHE:-$cache/go/build}

# The download needs any Go; the build one new enough for Hydrophone's go.mod.
src=$(cd / && "$("$here/go-toolchain.sh")" mod download -json "$module@$version")  # outside any module
dir=$(echo "$src" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
got=$(echo "$src" | sed -n 's/^[[:space:]]*"Sum": "\(.*\)",$/\1/p')
[ "$got" = "$sum" ] || { echo "build-hydrophone.sh: $module@$version has hash $got, pinned $sum" >&2; exit 1; }
go=$("$here/go-toolchain.sh" "$dir")
ldflags="-s -w"

key=$( { echo "$module@$version $sum|$ldflags|CGO_ENABLED=0"; "$go" version; } | sha256sum | cut -c1-16)
out="$cache/hydrophone/$key"
if [ -x "$out/hydrophone" ] || [ "${1:-}" = --where ]; then echo "$out"; [ -x "$out/hydrophone" ] || exit 3; exit 0; fi

echo "building Hydrophone $version into $out (cold: about 3 min on 2 cores; warm: at once)" >&2
tmp="$out.tmp.$$"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
# Outside any module, so nothing of podshare's go.mod files takes part.
(cd "$tmp" && CGO_ENABLED=0 GOBIN="$tmp" GOFLAGS= "$go" install -trimpath -ldflags "$ldflags" "$module@$version")
rm -rf "$out" && mv "$tmp" "$out"
echo "built in $(( $(date +%s) - start ))s" >&2
echo "$out"
