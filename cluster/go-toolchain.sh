#!/usr/bin/env bash
# Prints the path of a Go new enough for the given module directories
# (cluster/k8s when none is given): the `go` on PATH when it is, otherwise a
# pinned toolchain from the Go module proxy (Debian 12's golang is 1.19, too
# old), checked against its sha256 and cached.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${PODSHARE_CACHE:-/var/cache/podshare}
[ $# -gt 0 ] || set -- "$here/k8s"
need=$(for dir in "$@"; do awk '$1 == "go" {print $2; exit}' "$dir/go.mod"; done | sort -V | tail -1)
pinned=1.26.8
sha256=30c2b1bf7dcc88d3eb0a1364e47ddd9128edb3110a30e8a0ef61cd5856b31de7

if go=$(command -v go 2>/dev/null); then
  have=$(GOTOOLCHAIN=local "$go" env GOVERSION 2>/dev/null | sed 's/^go//')
  if [ -n "$have" ] && [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -1)" = "$need" ]; then
    echo "$go"; exit 0
  fi
fi
root="$cache/go/go$pinned"
if [ ! -x "$root/bin/go" ]; then
  echo "podshare: fetching Go $pinned from the Go module proxy (the go on PATH is missing or older than $need)" >&2
  mkdir -p "$cache/go"
  tmp=$(mktemp -d "$cache/go/.tmp.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  curl -fsSL -o "$tmp/go.zip" "https://proxy.golang.org/golang.org/toolchain/@v/v0.0.1-go$pinned.linux-amd64.zip"
  echo "$sha256  $tmp/go.zip" | sha256sum -c --quiet
  unzip -q "$tmp/go.zip" -d "$tmp/x"
  rm -rf "$root" && mv "$tmp/x/golang.org/toolchain@v0.0.1-go$pinned.linux-amd64" "$root"
fi
echo "$root/bin/go"
