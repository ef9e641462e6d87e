#!/usr/bin/env bash
# The harness's own tests, then the conformance suites; fails if either does.
# Runs inside with-cluster.sh (the project virtualenv first on PATH).
set -uo pipefail
cd "$(dirname "$0")/.."
rc=0
.venv/bin/python -m pytest tests -p no:cacheprovider --reports-dir reports/harness "$@" || rc=1
.venv/bin/python -m pytest suites -p no:cacheprovider "$@" || rc=1
exit $rc
