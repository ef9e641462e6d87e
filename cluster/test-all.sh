#!/usr/bin/env bash
# Everything on the bundled cluster (runs inside with-cluster.sh), each step's
# reports in reports/<step>; fails if any step does:
#  1. nodes: every claim on every node, the three pools side by side (the
#     sandboxed pool tolerated, with its known divergences), with the default
#     probe image (the public Python image, probes delivered by the run);
#  2. matrix: the three RuntimeClasses on the first node, side by side;
#  3. built-probe: the claims once more with the probe image built from
#     images/probe.Containerfile; side by side with
#  4. userns: every claim with user namespaces (hostUsers: false) on the current
#     pool with its three RuntimeClasses, and on the default pool, whose
#     containerd 1.6 refuses them: could-not-check, one line per node and class
#     (exit 2, expected: the harness test checks exactly which);
#  5. harness: the harness's own tests, which also check steps 1, 2 and 4
#     (tests/test_nodes.py, tests/test_runtime_matrix.py, tests/test_user_namespaces.py).
set -uo pipefail
cd "$(dirname "$0")/.."
rc=0
known=cluster/gvisor-known-divergences.yaml
first_node=$(hostname | tr '[:upper:]' '[:lower:]')
.venv/bin/python -m pytest suites -p no:cacheprovider --reports-dir reports/nodes \
  --all-nodes --tolerate sandbox.gke.io/runtime --known-divergences "$known" "$@" || rc=1
.venv/bin/python -m pytest suites -p no:cacheprovider --reports-dir reports/matrix --node "$first_node" \
  --runtime-class runc --runtime-class crun --runtime-class gvisor --known-divergences "$known" "$@" || rc=1
mkdir -p reports
# the built image's run is one node and class: it leaves room for the user-namespace run beside it
.venv/bin/python -m pytest suites -p no:cacheprovider --reports-dir reports/built-probe \
  --probe-image "$PROBE_IMAGE" "$@" >reports/built-probe.log 2>&1 &
built_probe=$!
.venv/bin/python -m pytest suites -p no:cacheprovider --reports-dir reports/userns --user-namespaces on \
  --node-selector 'podshare.io/pool in (default,current)' --runtime-class runc --runtime-class crun \
  --runtime-class gvisor --known-divergences "$known" --workers 2 "$@"
userns_rc=$?
[ "$userns_rc" -eq 0 ] || [ "$userns_rc" -eq 2 ] || rc=1  # 2: the nodes and classes that refuse them
wait "$built_probe" || rc=1
cat reports/built-probe.log
export PODSHARE_NODES_RESULTS="$PWD/reports/nodes/results.json"
export PODSHARE_MATRIX_RESULTS="$PWD/reports/matrix/results.json"
export PODSHARE_USERNS_RESULTS="$PWD/reports/userns/results.json"
.venv/bin/python -m pytest tests -p no:cacheprovider --reports-dir reports/harness "$@" || rc=1
exit $rc
