"""Downloads the posix_ipc and sysv_ipc wheels that podshare ships for the
public Python image (podshare/delivery.py) into podshare/probe_wheels, from
PyPI with `pip download --require-hashes` against requirements.lock: the lock
stays the one source of their versions and hashes. CPython 3.11 (the public
image's, the lock's) on x86_64 and aarch64 (the pod picks by its machine).

Quick when the wheels are there and match the lock (pip's own cache serves a
second download). cluster/venv.sh runs it; the runner image's build too.

    python -m cluster.probe_wheels [--check]     --check: only verify, download nothing
"""
from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from podshare.delivery import MACHINES, WHEELS as TARGET  # where podshare looks for them
from podshare.unpack_probes import PACKAGES, wheel_for  # how a pod picks its machine's

from . import lockfile
from .layout import PROJECT

LOCK = PROJECT / "requirements.lock"
# pip matches --platform literally: manylinux2014 is the tag both projects' wheels carry.
PLATFORM = "manylinux2014_{machine}"


def locked(lock: str) -> dict[str, tuple[str, set[str]]]:
    """package -> (version, sha256 hashes) from the lock."""
    found = {}
    for package, block in lockfile.entries(lock).items():
        version = re.match(r"\S+==(\S+)", block).group(1)
        found[package] = (version, set(re.findall(r"--hash=sha256:([0-9a-f]{64})", block)))
    return found


def problems(wheels: Path = TARGET, lock: str | None = None) -> list[str]:
    """What is wrong with the wheels in `wheels` against the lock: missing,
    another version, a hash the lock does not have, or a file too many."""
    pins = locked(lock if lock is not None else LOCK.read_text())
    found = sorted(wheels.glob("*.whl")) if wheels.is_dir() else []
    wrong = []
    for wheel in found:
        name, version = wheel.name.split("-")[:2]
        package = lockfile.canonical(name)
        if package not in {lockfile.canonical(p) for p in PACKAGES}:
            wrong.append(f"{wheel.name}: not a probe library")
            continue
        if version != pins[package][0]:
            wrong.append(f"{wheel.name}: the lock has {package}=={pins[package][0]}")
        if hashlib.sha256(wheel.read_bytes()).hexdigest() not in pins[package][1]:
            wrong.append(f"{wheel.name}: its sha256 is not among the lock's hashes")
        if "-cp311-cp311-" not in wheel.name:
            wrong.append(f"{wheel.name}: not a CPython 3.11 wheel")
    wrong += [f"no {p} wheel for {m}" for p in PACKAGES for m in MACHINES if wheel_for(wheels, p, m) is None]
    return wrong


def download() -> None:
    requirements = lockfile.select(LOCK.read_text(), list(PACKAGES))
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "req.txt").write_text(requirements)
        for machine in MACHINES:
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                            "--no-deps", "--require-hashes", "--only-binary", ":all:", "--implementation", "cp",
                            "--python-version", "3.11", "--abi", "cp311", "--platform", PLATFORM.format(machine=machine),
                            "-d", Path(tmp) / "wheels", "-r", Path(tmp) / "req.txt"], check=True)
        TARGET.mkdir(exist_ok=True)
        for old in TARGET.glob("*.whl"):
            old.unlink()
        for wheel in (Path(tmp) / "wheels").glob("*.whl"):
            shutil.move(wheel, TARGET / wheel.name)


def main() -> int:
    if problems() and "--check" not in sys.argv[1:]:
        print("podshare: downloading the probe wheels (posix_ipc, sysv_ipc) from requirements.lock", file=sys.stderr)
        download()
    wrong = problems()
    for line in wrong:
        print(f"podshare probe wheels: {line}", file=sys.stderr)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
