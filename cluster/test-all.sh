#!/usr/bin/env bash
# The conformance suites on the bundled cluster's three RuntimeClasses (gVisor
# with its known divergences; reports in reports/matrix) with the default probe
# image (the public Python image, probes delivered by the run); the same claims
# once more with the probe image built from images/probe.Containerfile (reports
# in reports/built-probe); then the harness's own tests, which also check that
# matrix (tests/test_runtime_matrix.py). Fails if any does. Runs inside with-cluster.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
rc=0
.venv/bin/python -m pytest suites -p no:cacheprovider --reports-dir reports/matrix \
  --runtime-class runc --runtime-class crun --runtime-class gvisor \
  --known-divergences cluster/gvisor-known-divergences.yaml "$@" || rc=1
.venv/bin/python -m pytest suites -p no:cacheprovider --reports-dir reports/built-probe \
  --probe-image "$PROBE_IMAGE" "$@" || rc=1
export PODSHARE_MATRIX_RESULTS="$PWD/reports/matrix/results.json"
.venv/bin/python -m pytest tests -p no:cacheprovider --reports-dir reports/harness "$@" || rc=1
exit $rc
