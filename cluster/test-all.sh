#!/usr/bin/env bash
# The harness's own tests, then the conformance suites; fails if either does.
set -uo pipefail
cd "$(dirname "$0")/.."
rc=0
python3 -m pytest tests -p no:cacheprovider --reports-dir reports/harness "$@" || rc=1
python3 -m pytest suites -p no:cacheprovider "$@" || rc=1
exit $rc
