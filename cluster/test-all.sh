#!/usr/bin/env bash
# Everything on the bundled cluster (runs inside with-cluster.sh), each step's
# reports in reports/<step>; fails if any step does:
#  1. nodes: every claim on every node, the three pools side by side (the
#     sandboxed pool tolerated, with its known divergences), with the default
#     probe image (the public Python image, probes delivered by the run), every
#     volume claim also on a PVC of the local-path StorageClass;
#  2. matrix: runc, crun and youki on the first node (containerd 1.6, kubelet 1.35:
#     gVisor's shim needs containerd 2), side by side; matrix-current: runc, crun,
#     youki and gVisor plain on the current pool's node (containerd 2.4, runc 1.5,
#     kubelet 1.37); matrix-hinted: gVisor as GKE Sandbox sets it up (RuntimeClass
#     gvisor-hinted, its emptyDir hints) on the sandboxed pool's node;
#  3. built-probe: the claims once more with the probe image built from
#     images/probe.Containerfile; side by side with
#     and beside those, shared-fs: every volume claim on the shared-sshfs class (cluster/shared_fs.py);
#  4. userns: every claim with user namespaces (hostUsers: false) on the current
#     pool with its four RuntimeClasses, and on the default pool, whose
#     containerd 1.6 refuses them: could-not-check, one line per node and class
#     (exit 2, expected: the harness test checks exactly which);
#  5. harness: the harness's own tests, which also check steps 1, 2 and 4
#     (tests/test_nodes.py, tests/test_runtime_matrix.py, tests/test_user_namespaces.py).
#     Those that need no cluster (installs on stock Debian, the current stack's
#     builds, probes on the host, the harness's logic) run from the start, beside
#     steps 1-4, on the second core; their output follows the rest.
set -uo pipefail
cd "$(dirname "$0")/.."
rc=0
began=$(date +%s)
# step NAME COMMAND...: a line as each step starts and ends, with the time it took (CI's log shows where time goes)
step() {
  local name=$1 start
  shift
  start=$(date +%s)
  echo "==> step $name: started $(( start - began ))s in"
  "$@"
  local code=$?
  echo "==> step $name: ended after $(( $(date +%s) - start ))s, exit $code"
  return $code
}
offline=(tests/test_install.py tests/test_current_stack.py tests/test_probes_on_host.py tests/test_sqlite_probes_on_host.py tests/test_harness_logic.py
         tests/test_plugin_cli.py tests/test_conformance_image.py)
mkdir -p reports
step harness-offline .venv/bin/python -m pytest "${offline[@]}" -p no:cacheprovider \
  --reports-dir reports/harness-offline "$@" > reports/harness-offline.log 2>&1 &
offline_pid=$!
known=cluster/gvisor-known-divergences.yaml
known_youki=cluster/youki-known-divergences.yaml
first_node=$(hostname | tr '[:upper:]' '[:lower:]')
step nodes .venv/bin/python -m pytest suites -p no:cacheprovider --reports-dir reports/nodes \
  --all-nodes --tolerate sandbox.gke.io/runtime --storage-class local-path --known-divergences "$known" --known-divergences "$known_youki" "$@" || rc=1
# One after the other: side by side (each on its node) they saved 50 s of 355 on 2 cores, and the
# first node's kubelet, starved, took longer than a ConfigMap update's bound (1.5 x syncFrequency + 15 s).
step matrix .venv/bin/python -m pytest suites -p no:cacheprovider --reports-dir reports/matrix --node "$first_node" \
  --runtime-class runc --runtime-class crun --runtime-class youki --known-divergences "$known" --known-divergences "$known_youki" "$@" || rc=1
current_node=$(.venv/bin/python -c 'from podshare.kube import Kube
print(" ".join(n.metadata.name for n in Kube().nodes("podshare.io/pool=current")[:1]))') || rc=1
if [ -n "$current_node" ]; then  # the three-node cluster (PODSHARE_NODES=3, make test's default)
  step matrix-current .venv/bin/python -m pytest suites -p no:cacheprovider --reports-dir reports/matrix-current \
    --node "$current_node" \
    --runtime-class runc --runtime-class crun --runtime-class youki --runtime-class gvisor --known-divergences "$known" --known-divergences "$known_youki" "$@" || rc=1
  export PODSHARE_MATRIX_CURRENT_RESULTS="$PWD/reports/matrix-current/results.json"
  sandboxed_node=$(.venv/bin/python -c 'from podshare.kube import Kube
print(" ".join(n.metadata.name for n in Kube().nodes("podshare.io/pool=sandboxed")[:1]))') || rc=1
  step matrix-hinted .venv/bin/python -m pytest suites -p no:cacheprovider --reports-dir reports/matrix-hinted \
    --node "$sandboxed_node" --tolerate sandbox.gke.io/runtime --runtime-class gvisor-hinted --storage-class local-path \
    --known-divergences "$known" --known-divergences "$known_youki" "$@" || rc=1
  export PODSHARE_MATRIX_HINTED_RESULTS="$PWD/reports/matrix-hinted/results.json"
fi
# the built image's run is one node and class: it leaves room for the user-namespace run beside it
# pinned: a pod the scheduler places could land where a claim's feature is missing (image volumes on containerd 1.6)
step built-probe .venv/bin/python -m pytest suites -p no:cacheprovider --reports-dir reports/built-probe \
  --node "${current_node:-$first_node}" \
  --probe-image "$PROBE_IMAGE" "$@" >reports/built-probe.log 2>&1 &
built_probe=$!
# the shared file system's StorageClass (separate sshfs clients of one SFTP export), on the first node, beside them
step shared-fs .venv/bin/python -m pytest suites -p no:cacheprovider -m volume --node "$first_node" \
  --storage-class shared-sshfs --known-divergences cluster/shared-fs-known-divergences.yaml \
  --reports-dir reports/shared-fs "$@" >reports/shared-fs.log 2>&1 &
shared_fs=$!
step userns .venv/bin/python -m pytest suites -p no:cacheprovider --reports-dir reports/userns --user-namespaces on \
  --node-selector 'podshare.io/pool in (default,current)' --runtime-class runc --runtime-class crun \
  --runtime-class youki --runtime-class gvisor --known-divergences "$known" --known-divergences "$known_youki" --workers 2 "$@"
userns_rc=$?
[ "$userns_rc" -eq 0 ] || [ "$userns_rc" -eq 2 ] || rc=1  # 2: the nodes and classes that refuse them
wait "$built_probe" || rc=1
cat reports/built-probe.log
wait "$shared_fs" || rc=1
cat reports/shared-fs.log
export PODSHARE_SHARED_FS_RESULTS="$PWD/reports/shared-fs/results.json"
export PODSHARE_NODES_RESULTS="$PWD/reports/nodes/results.json"
export PODSHARE_MATRIX_RESULTS="$PWD/reports/matrix/results.json"
export PODSHARE_USERNS_RESULTS="$PWD/reports/userns/results.json"
step harness .venv/bin/python -m pytest tests "${offline[@]/#/--ignore=}" -p no:cacheprovider --reports-dir reports/harness "$@" \
  || rc=1
wait "$offline_pid" || rc=1
echo "---- the harness tests that need no cluster (reports/harness-offline.log)"
cat reports/harness-offline.log
.venv/bin/python -m cluster.failures reports --unchecked-expected userns  # last: CI shows a long log's tail
exit $rc
