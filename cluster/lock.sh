#!/usr/bin/env bash
# Regenerates requirements.lock from pyproject.toml: exact versions with the
# sha256 of every file PyPI has for them (so one lock serves Python 3.11 to 3.13
# and the probe image's manylinux wheels), plus setuptools for the editable
# install. pip-tools runs in a throwaway virtualenv; installing from the lock
# needs only pip (`pip install --require-hashes`).
set -euo pipefail
project=$(cd "$(dirname "$0")/.." && pwd)
tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
/usr/bin/python3 -m venv "$tools"
"$tools/bin/python" -m pip install --quiet --disable-pip-version-check "pip-tools==7.*"
cd "$project"
env -u PIP_FIND_LINKS "$tools/bin/pip-compile" --quiet --generate-hashes --allow-unsafe --strip-extras \
  --build-deps-for=editable --no-emit-find-links --no-emit-index-url --annotation-style=line \
  --no-header -o requirements.lock "$@" pyproject.toml
