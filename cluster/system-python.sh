#!/usr/bin/env bash
# Lists what each system Python interpreter (Debian's, and the python3 on PATH
# outside the project virtualenv) has installed, without needing their pip.
set -uo pipefail
venv=$(cd "$(dirname "$0")/.." && pwd)/.venv
for py in /usr/bin/python3 $(PATH=$(echo "$PATH" | tr ':' '\n' | grep -vx "$venv/bin" | paste -sd:) command -v python3); do
  [ -x "$py" ] || continue
  "$py" -I - "$py" <<'PY'  # -I: not the current directory's packages
import importlib.metadata as m, sys
if sys.prefix != sys.base_prefix:
    sys.exit()  # a virtualenv (ours, or any other on PATH), not a system interpreter
for d in sorted({f"{d.metadata['Name']}=={d.version}" for d in m.distributions()}, key=str.lower):
    print(f"{sys.argv[1]} {sys.executable} {d}")
PY
done | sort -u
