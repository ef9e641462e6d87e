#!/usr/bin/env bash
# The conformance suites against the current kubeconfig context, or against
# the bundled local cluster where none is configured. Extra arguments go to pytest.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
kubeconfig=${KUBECONFIG:-$HOME/.kube/config}
if [ -f "${kubeconfig%%:*}" ] || [ -n "${KUBERNETES_SERVICE_HOST:-}" ]; then
  "$here/bootstrap.sh" python || exit 1
  exec .venv/bin/python -m pytest suites "$@"
fi
echo "podshare: no kubeconfig context; using the bundled local cluster (three pools, every node checked)" >&2
exec "$here/with-cluster.sh" python -m pytest suites --all-nodes --tolerate sandbox.gke.io/runtime \
  --known-divergences cluster/gvisor-known-divergences.yaml "$@"
