#!/usr/bin/env bash
# The conformance suites against the current kubeconfig context, or against
# the bundled local cluster where none is configured. Extra arguments go to pytest.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
kubeconfig=${KUBECONFIG:-$HOME/.kube/config}
if [ -f "${kubeconfig%%:*}" ] || [ -n "${KUBERNETES_SERVICE_HOST:-}" ]; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -e . >/dev/null 2>&1 || true
  exec python3 -m pytest suites "$@"
fi
echo "podshare: no kubeconfig context; using the bundled local cluster" >&2
exec "$here/with-cluster.sh" python3 -m pytest suites "$@"
