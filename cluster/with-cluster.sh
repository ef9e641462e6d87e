#!/usr/bin/env bash
# Runs a command against the bundled local cluster: installs what is missing,
# brings the cluster up, exports KUBECONFIG and the local image names, runs
# the command with the project virtualenv first on PATH, and takes the
# cluster down again whatever happened.
#   cluster/with-cluster.sh python -m pytest suites
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
"$here/bootstrap.sh" || exit 1
export PATH="$(cd "$here/.." && pwd)/.venv/bin:$PATH"

cleanup() {
  trap - EXIT INT TERM
  python "$here/localcluster.py" down || echo "podshare: cluster down reported leftovers" >&2
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ! out=$(python "$here/localcluster.py" up); then
  echo "podshare: the local cluster did not come up (log tails above); failing, not skipping" >&2
  exit 1
fi
export "$out"  # KUBECONFIG=...
set -a; . "$here/images.env"; set +a
# No PODSHARE_PROBE_IMAGE: runs take the default, the public Python image (the
# cluster has its Debian python base under that name) with the probes delivered
# by the run. The built probe image stays PROBE_IMAGE (test-all.sh runs it too).
export PODSHARE_NGINX_IMAGE="$NGINX_IMAGE" PODSHARE_RUNNER_IMAGE="$RUNNER_IMAGE"
export PODSHARE_IMAGE_PULL_POLICY=Never PODSHARE_LOCAL_CLUSTER=1
"$@"
