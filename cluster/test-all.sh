#!/usr/bin/env bash
# Everything on the bundled cluster (runs inside with-cluster.sh), each step's
# reports in reports/<step>; fails if any step does:
#  1. nodes: every claim on every node, the three pools side by side (the
#     sandboxed pool tolerated, with its known divergences), with the default
#     probe image (the public Python image, probes delivered by the run);
#  2. matrix: the three RuntimeClasses on the first node, side by side;
#  3. built-probe: the claims once more with the probe image built from
#     images/probe.Containerfile;
#  4. harness: the harness's own tests, which also check steps 1 and 2
#     (tests/test_nodes.py, tests/test_runtime_matrix.py).
set -uo pipefail
cd "$(dirname "$0")/.."
rc=0
known=cluster/gvisor-known-divergences.yaml
first_node=$(hostname | tr '[:upper:]' '[:lower:]')
.venv/bin/python -m pytest suites -p no:cacheprovider --reports-dir reports/nodes \
  --all-nodes --tolerate sandbox.gke.io/runtime --known-divergences "$known" "$@" || rc=1
.venv/bin/python -m pytest suites -p no:cacheprovider --reports-dir reports/matrix --node "$first_node" \
  --runtime-class runc --runtime-class crun --runtime-class gvisor --known-divergences "$known" "$@" || rc=1
.venv/bin/python -m pytest suites -p no:cacheprovider --reports-dir reports/built-probe \
  --probe-image "$PROBE_IMAGE" "$@" || rc=1
export PODSHARE_NODES_RESULTS="$PWD/reports/nodes/results.json"
export PODSHARE_MATRIX_RESULTS="$PWD/reports/matrix/results.json"
.venv/bin/python -m pytest tests -p no:cacheprovider --reports-dir reports/harness "$@" || rc=1
exit $rc
