#!/usr/bin/env bash
# `make test`: notes what the system's Python interpreters have installed, then
# runs everything against the bundled local cluster; the harness's tests check
# that those interpreters are untouched afterwards (tests/test_install.py).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
before=$(mktemp /tmp/podshare-system-python.XXXXXX)
trap 'rm -f "$before"' EXIT
"$here/system-python.sh" > "$before"
export PODSHARE_SYSTEM_PYTHON_BEFORE="$before"
"$here/with-cluster.sh" "$here/test-all.sh" "$@"
