#!/usr/bin/env bash
# Everything a bare machine needs, from Debian's packages and PyPI (Kubernetes
# itself is built from the Go module proxy by `up`). Quick when all is there.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
"$here/install-deps.sh"
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -e "$here/.."
