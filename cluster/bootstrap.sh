#!/usr/bin/env bash
# Everything a bare Debian machine needs, from Debian's packages and PyPI
# (Kubernetes itself is built from the Go module proxy by `up`), then the
# project virtualenv. Quick when all is there.
#   bootstrap.sh          for the local cluster too
#   bootstrap.sh python   only the virtualenv (for running against your own cluster)
# With PODSHARE_CURRENT_STACK=1 it also builds the current stack (containerd 2,
# runc 1.5, gVisor, Kubernetes 1.37: cluster/README.md, "Current stack") ahead of time;
# `up` builds whatever it needs anyway (cached by inputs).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
"$here/install-deps.sh" "${1:-all}"
"$here/venv.sh"
if [ "${PODSHARE_CURRENT_STACK:-0}" = 1 ] && [ "${1:-all}" != python ]; then
  "$here/build-runtime.sh" >/dev/null
  "$here/build-gvisor.sh" >/dev/null
  "$here/build-binaries.sh" k8s-1.37 >/dev/null
fi
