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
#     (tests/test_nodes.py, tests/test_runtime_matrix.py, tests/test_user_namespaces.py),
#     in processes side by side (their tests mostly wait on pods: one at a time the
#     machine sat 60% idle). Those that stop a kubelet, freeze a component or cordon
#     a node run first, alone on the cluster (harness-disruptive); those that need no
#     step's results and own the cluster-wide confinement policies and fixed names
#     run beside steps 1-4 (harness-beside); the rest, after them, in six
#     (harness-after, the negative controls in three, the first node's host side in
#     one of them, runs side by side and pods that end under a run, and what runs
#     leave behind). Started any earlier, beside the steps, they slowed the steps as
#     much as they gained: CPU-bound, the machine is 99% busy from the nodes step on
#     (reports/cpu-busy.log), and a starved containerd timed out an exec.
#     Those that need no cluster (installs on stock Debian, the current stack's builds,
#     probes on the host, the harness's logic) run from
#     the start on the second core; their output follows the rest.
set -uo pipefail
cd "$(dirname "$0")/.."
rc=0
extra=("$@")
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
# The harness's tests that use the cluster, in groups (5. above); each group's process has its
# own reports (cluster/failures.py reads every reports/*/junit.xml) and its own temporary directory.
disruptive=(tests/test_disruptions.py::test_kubelet_killed_mid_run_ends_the_run_within_a_minute
            tests/test_disruptions.py::test_a_component_frozen_for_20s_mid_run_is_waited_for
            tests/test_nodes.py::test_a_cordoned_node_and_an_untolerated_taint_each_get_one_line
            tests/test_nodes.py::test_a_node_whose_kubelet_dies_mid_run_is_not_checked_and_the_others_are)
# every user of the confinement fixture (its policies live as long as the session that made them:
# one process) and of the fixed cluster-scoped names of the nightly and confinement tests
beside=(tests/test_nightly.py tests/test_confinement.py tests/test_clean_failures.py tests/test_least_privilege.py
        tests/test_hydrophone.py tests/test_history_and_metrics.py tests/test_images.py
        tests/test_docs.py tests/test_report_golden.py)
after=(tests/test_disruptions.py tests/test_nodes.py tests/test_runtime_matrix.py
       tests/test_user_namespaces.py tests/test_shared_fs.py tests/test_shared_csi.py tests/test_store.py tests/test_probe_delivery.py
       tests/test_channel.py tests/test_local_cluster.py)
# after the steps too, each in a process of its own (they wait on pods and the kubelet more than
# they work: side by side they take the after phase's time, not the sum): runs side by side and pods
# that end under a run (an OOM kill, an eviction); and what runs leave behind
late=(tests/test_side_by_side.py tests/test_pods_that_end.py)
leftovers=(tests/test_no_leftovers.py)
# the negative controls in three: those that use the first node's host (its network, IPC objects,
# paths) in one (they share nothing there), the rest in two of about the same length
host_side="host or cannot_schedule or stranger_that_shares or broken_patterns or never_reaches_beta"
split_side="split_pods or volume_names or split_volumes or memory_volume_on_disk"
unplaced=$(comm -23 <(ls tests/test_*.py | sort) \
  <(printf '%s\n' "${offline[@]}" "${beside[@]}" "${after[@]}" "${late[@]}" "${leftovers[@]}" tests/test_negative_controls.py | sort -u))
if [ -n "$unplaced" ]; then echo "in no group of cluster/test-all.sh, so not run: $unplaced"; rc=1; fi
harness_tmp=$(mktemp -d /tmp/podshare-harness.XXXXXX)
# how busy the machine was, every 30 s (where CI's time goes, and where it idles): reports/cpu-busy.log
{ read -r _ a b c d e f g h _ < /proc/stat
  while sleep 30; do
    read -r _ A B C D E F G H _ < /proc/stat
    busy=$(( (A + B + C + F + G + H) - (a + b + c + f + g + h) )) all=$(( (A + B + C + D + E + F + G + H) - (a + b + c + d + e + f + g + h) ))
    echo "$(( $(date +%s) - began ))s $(( 100 * busy / (all > 0 ? all : 1) ))% busy"
    a=$A b=$B c=$C d=$D e=$E f=$F g=$G h=$H
  done; } > reports/cpu-busy.log &
busy_pid=$!
trap 'kill "$busy_pid" 2>/dev/null; rm -rf "$harness_tmp"' EXIT
# harness NAME PYTEST-ARGS...: one group of the harness's tests in a process of its own
harness() {
  local name=$1
  shift
  step "harness-$name" .venv/bin/python -m pytest "$@" -p no:cacheprovider --reports-dir "reports/harness-$name" \
    --basetemp "$harness_tmp/$name" "${extra[@]}"
}
step harness-offline .venv/bin/python -m pytest "${offline[@]}" -p no:cacheprovider \
  --reports-dir reports/harness-offline "$@" > reports/harness-offline.log 2>&1 &
offline_pid=$!
known=cluster/gvisor-known-divergences.yaml
known_youki=cluster/youki-known-divergences.yaml
known_storage=cluster/storage-known-divergences.yaml  # local-path's: the nodes and matrix-hinted steps' class
first_node=$(hostname | tr '[:upper:]' '[:lower:]')
harness disruptive "${disruptive[@]}" || rc=1
harness beside "${beside[@]}" > reports/harness-beside.log 2>&1 &
beside_pid=$!
step nodes .venv/bin/python -m pytest suites -p no:cacheprovider --reports-dir reports/nodes \
  --all-nodes --tolerate sandbox.gke.io/runtime --storage-class local-path --known-divergences "$known" --known-divergences "$known_youki" \
  --known-divergences "$known_storage" "$@" || rc=1
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
    --known-divergences "$known" --known-divergences "$known_youki" --known-divergences "$known_storage" "$@" || rc=1
  export PODSHARE_MATRIX_HINTED_RESULTS="$PWD/reports/matrix-hinted/results.json"
fi
# the built image's run is one node and class: it leaves room for the user-namespace run beside it
# pinned: a pod the scheduler places could land where a claim's feature is missing (image volumes on containerd 1.6)
step built-probe .venv/bin/python -m pytest suites -p no:cacheprovider --reports-dir reports/built-probe \
  --node "${current_node:-$first_node}" \
  --probe-image "$PROBE_IMAGE" "$@" >reports/built-probe.log 2>&1 &
built_probe=$!
# the shared file system's StorageClasses (separate sshfs clients of one SFTP export): pinned per node, and
# ReadWriteMany through the CSI driver (the across-pod claims on two nodes, two clients); beside them
# then the SQLite pattern on them (one database, an app and its sidecar in one pod: one client)
{ step shared-fs .venv/bin/python -m pytest suites -p no:cacheprovider -m volume --node "$first_node" \
    --storage-class shared-sshfs --storage-class shared-sshfs-rwx --known-divergences cluster/shared-fs-known-divergences.yaml \
    --reports-dir reports/shared-fs "$@"; fs_rc=$?
  step shared-fs-sqlite .venv/bin/python -m pytest suites/test_pattern_sqlite.py -p no:cacheprovider --node "$first_node" \
    --storage-class shared-sshfs --storage-class shared-sshfs-rwx --known-divergences cluster/shared-fs-known-divergences.yaml \
    --reports-dir reports/shared-fs-sqlite "$@" && exit "$fs_rc"; } >reports/shared-fs.log 2>&1 &
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
pids=("$beside_pid")
groups=(beside)
background() {  # background NAME PYTEST-ARGS...: a group in its own process, its output in reports/harness-NAME.log
  local name=$1
  shift
  harness "$name" "$@" > "reports/harness-$name.log" 2>&1 &
  pids+=($!)
  groups+=("$name")
}
background negative-controls-host tests/test_negative_controls.py -k "$host_side"
background negative-controls-split tests/test_negative_controls.py -k "not ($host_side) and ($split_side)"
background negative-controls tests/test_negative_controls.py -k "not ($host_side) and not ($split_side)"
background late "${late[@]}"
background leftovers "${leftovers[@]}"
harness after "${after[@]}" "${disruptive[@]/#/--deselect=}" || rc=1
for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
for name in "${groups[@]}"; do echo "---- reports/harness-$name.log"; cat "reports/harness-$name.log"; done
wait "$offline_pid" || rc=1
echo "---- the harness tests that need no cluster (reports/harness-offline.log)"
cat reports/harness-offline.log
echo "---- how busy the machine was (reports/cpu-busy.log)"
paste -sd' ' reports/cpu-busy.log | fold -s -w 150
.venv/bin/python -m cluster.failures reports --unchecked-expected userns  # last: CI shows a long log's tail
exit $rc
