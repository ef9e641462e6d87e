#!/usr/bin/env bash
# Runs a command against the bundled local cluster: installs what is missing,
# brings the cluster up, exports KUBECONFIG and the local image names, runs
# the command with the project virtualenv first on PATH, and takes the
# cluster down again whatever happened.
#   cluster/with-cluster.sh python -m pytest suites
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
"$here/bootstrap.sh" || exit 1
project=$(cd "$here/.." && pwd)
export PATH="$project/.venv/bin:$PATH"
# cluster/ is a package: its modules run from the top of the checkout.
localcluster() { (cd "$project" && python -m cluster.localcluster "$@"); }

# Three nodes, each a pool of its own (cluster/README.md); PODSHARE_NODES=1 for one.
export PODSHARE_NODES=${PODSHARE_NODES:-3}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if ! localcluster down; then
    echo "podshare: cluster down left something behind (above): failing" >&2
    [ "$rc" -eq 0 ] && rc=1
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ! out=$(localcluster up --nodes "$PODSHARE_NODES"); then
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
