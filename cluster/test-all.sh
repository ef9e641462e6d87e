#!/usr/bin/env bash
# The conformance suites on the bundled cluster's three RuntimeClasses (gVisor
# with its known divergences; reports in reports/matrix), then the harness's
# own tests, which also check that matrix (tests/test_runtime_matrix.py).
# Fails if either does. Runs inside with-cluster.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
rc=0
.venv/bin/python -m pytest suites -p no:cacheprovider --reports-dir reports/matrix \
  --runtime-class runc --runtime-class crun --runtime-class gvisor \
  --known-divergences cluster/gvisor-known-divergences.yaml "$@" || rc=1
export PODSHARE_MATRIX_RESULTS="$PWD/reports/matrix/results.json"
.venv/bin/python -m pytest tests -p no:cacheprovider --reports-dir reports/harness "$@" || rc=1
exit $rc
