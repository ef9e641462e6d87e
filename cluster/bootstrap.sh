#!/usr/bin/env bash
# Everything a bare Debian machine needs, from Debian's packages and PyPI
# (Kubernetes itself is built from the Go module proxy by `up`), then the
# project virtualenv. Quick when all is there.
#   bootstrap.sh          for the local cluster too
#   bootstrap.sh python   only the virtualenv (for running against your own cluster)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
"$here/install-deps.sh" "${1:-all}"
"$here/venv.sh"
