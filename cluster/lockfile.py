#!/usr/bin/env python3
"""Picks entries out of requirements.lock, hashes and all, so that the probe
image installs exactly the versions the harness was tested with.

    lockfile.py posix_ipc sysv_ipc < requirements.lock > probe-requirements.txt
"""
from __future__ import annotations

import re
import sys


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def entries(lock: str) -> dict[str, str]:
    """Each `name==version \\ --hash=...` block of a pip-compile lock, by canonical name."""
    blocks: dict[str, list[str]] = {}
    current: list[str] = []
    for line in lock.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace():
            current.append(line)  # a --hash line of the entry above
        elif line.startswith("-"):
            current = []  # an option line (--index-url, ...), not an entry
        else:
            current = blocks.setdefault(canonical(re.split(r"[=<>!~ ;\\]", line, maxsplit=1)[0]), [line])
    return {name: "\n".join(lines) for name, lines in blocks.items()}


def select(lock: str, names: list[str]) -> str:
    found = entries(lock)
    missing = [n for n in names if canonical(n) not in found]
    if missing:
        raise SystemExit(f"lockfile: not in the lock: {', '.join(missing)}")
    # The last line of a block ends in a continuation only when a comment follows it.
    return "\n".join(found[canonical(n)].rstrip(" \\").rstrip() for n in names) + "\n"


if __name__ == "__main__":
    sys.stdout.write(select(sys.stdin.read(), sys.argv[1:]))
