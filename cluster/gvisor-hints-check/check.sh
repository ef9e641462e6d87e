#!/usr/bin/env bash
# Runs cluster/gvisor-hints.yaml's policy through Kubernetes 1.37's own admission
# code (main.go) on the pods of cases.json; prints each pod's annotations
# afterwards as JSON. Builds against cluster/k8s-1.37's module (its pins and
# go.sum), with k8s.io/apiserver replaced by a copy that has compilePolicy
# exported (export.go.txt; Go refuses overlays in the module cache, and the
# cache itself is left alone). Needs that module's dependencies downloaded (as
# build-binaries.sh k8s-1.37 does). The program is built once per set of inputs
# and kept in the cache (compiling the API server's admission packages takes
# minutes on 2 cores; a copy in a fresh directory each time missed Go's own
# build cache, whose keys include the source directory).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mod="$here/../k8s-1.37"
cache=${PODSHARE_CACHE:-/var/cache/podshare}
go=$("$here/../go-toolchain.sh" "$mod")
export GOTOOLCHAIN=local
key=$(cat "$here/main.go" "$here/export.go.txt" "$mod/go.mod" "$mod/go.sum" "$mod/tools.go" "$0" \
      <("$go" env GOVERSION) | sha256sum | cut -c1-16)
bin="$cache/gvisor-hints-check/check-$key"
if [ ! -x "$bin" ]; then
  apiserver=$(cd "$mod" && "$go" list -m -f '{{.Dir}}' k8s.io/apiserver)
  mkdir -p "$cache/gvisor-hints-check"
  tmp=$(mktemp -d "$cache/gvisor-hints-check/.build.XXXXXX")
  trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
  cp -r "$apiserver" "$tmp/apiserver" && chmod -R u+w "$tmp/apiserver"
  cp "$here/export.go.txt" "$tmp/apiserver/pkg/admission/plugin/policy/mutating/zz_podshare_export.go"
  mkdir "$tmp/mod" && cp "$mod/go.mod" "$mod/go.sum" "$mod/tools.go" "$here/main.go" "$tmp/mod/"
  (cd "$tmp/mod" && "$go" mod edit -replace "k8s.io/apiserver=$tmp/apiserver" &&
     CGO_ENABLED=0 "$go" build -o "$tmp/check" main.go)
  mv "$tmp/check" "$bin"  # whole or not at all
fi
"$bin" "$(realpath "${1:-$here/../gvisor-hints.yaml}")" "$(realpath "${2:-$here/cases.json}")"
