#!/usr/bin/env bash
# The project's virtualenv, .venv: Debian's python3 (PODSHARE_PYTHON to choose
# another), every dependency at the exact version and hash of requirements.lock,
# podshare itself editable. Nothing goes into the system interpreter, so
# neither its pip nor PEP 668's EXTERNALLY-MANAGED matter. Quick when the lock,
# pyproject.toml and the interpreter are unchanged since the last install.
set -euo pipefail
project=$(cd "$(dirname "$0")/.." && pwd)
venv=$project/.venv
python=${PODSHARE_PYTHON:-/usr/bin/python3}
stamp=$( { cat "$project/requirements.lock" "$project/pyproject.toml"
           "$python" -c 'import sys; print(sys.executable, sys.version)'; } | sha256sum | cut -c1-16)
# The wheels podshare ships for the public Python image's pods, from the lock
# (podshare/probe_wheels, not in git); quick when they are there.
probe_wheels() { (cd "$project" && "$venv/bin/python" -m cluster.probe_wheels); }
if [ "$(cat "$venv/.podshare-stamp" 2>/dev/null)" = "$stamp" ] && [ -x "$venv/bin/podshare" ]; then
  probe_wheels
  exit 0
fi
echo "podshare: installing the project virtualenv in $venv from requirements.lock" >&2
rm -rf "$venv"
"$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input)
# pip's own errors reach stderr; set -e stops here on any of them.
"${pip[@]}" --no-deps --require-hashes -r "$project/requirements.lock"
probe_wheels
"${pip[@]}" --no-deps --no-build-isolation --editable "$project"
echo "$stamp" > "$venv/.podshare-stamp"
