#!/usr/bin/env bash
# The full matrix, which `make test` samples (cluster/test-all.sh says how): every
# claim on every node x every RuntimeClass x with and without user namespaces x
# every volume kind (both emptyDirs, local-path, shared-sshfs, shared-sshfs-rwx), on the bundled
# local cluster, brought up and down around it. Hours, not minutes: where a node or
# class cannot run a combination, that combination is one not-applicable or
# could-not-check line. Reports in reports/full-matrix; extra arguments go to pytest.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
classes=()
for c in runc crun youki gvisor gvisor-hinted; do classes+=(--runtime-class "$c"); done
exec "$here/with-cluster.sh" python -m pytest suites -p no:cacheprovider --all-nodes --tolerate '*' \
  "${classes[@]}" --user-namespaces both --storage-class local-path --storage-class shared-sshfs --storage-class shared-sshfs-rwx \
  --known-divergences cluster/gvisor-known-divergences.yaml --known-divergences cluster/youki-known-divergences.yaml \
  --known-divergences cluster/shared-fs-known-divergences.yaml --known-divergences cluster/storage-known-divergences.yaml \
  --reports-dir reports/full-matrix "$@"
