"""Runs inside a probe container as its first step, with nothing but the probe
image's python3 and its standard library: unpacks the probes package and this
machine's posix_ipc and sysv_ipc wheels from the run's ConfigMap into the
container's own directory of the pod's delivered-probes emptyDir (on its
PYTHONPATH), then becomes the container's real command. Nothing is fetched from
the network.

    python3 unpack_probes.py BUNDLE_DIR TARGET_DIR [-- COMMAND...]

Prints one JSON line on stderr (what it unpacked, how long it took); on a
problem, one line on stderr that the pod's status carries
(terminationMessagePolicy FallbackToLogsOnError), and exit 1. A restarted
container finds its copy complete and goes straight to its command.

A wheel is a zip whose top level goes onto sys.path as it is: extension
modules that need no installer, so no pip either.
"""
from __future__ import annotations

import compileall
import json
import os
import platform
import sys
import time
import zipfile
from pathlib import Path

PACKAGES = ("posix_ipc", "sysv_ipc")
PYTHON = (3, 11)  # the wheels' ABI (cp311), the lock's


def wheel_for(bundle: Path, package: str, machine: str) -> Path | None:
    """The package's wheel whose platform tags name this machine (x86_64, aarch64)."""
    for wheel in sorted(bundle.glob(f"{package}-*.whl")):
        platforms = wheel.name[:-len(".whl")].split("-")[-1].split(".")
        if any(tag.endswith("_" + machine) for tag in platforms):
            return wheel
    return None


def unpack(bundle: Path, target: Path) -> dict:
    started = time.monotonic()
    machine = platform.machine()
    if sys.version_info[:2] != PYTHON:
        raise SystemExit(f"podshare: the probe image's python3 is {platform.python_version()}, the delivered wheels "
                         f"are for CPython {PYTHON[0]}.{PYTHON[1]}: use a Python {PYTHON[0]}.{PYTHON[1]} image, or "
                         f"--probe-image with an image built from images/probe.Containerfile")
    wheels = {package: wheel_for(bundle, package, machine) for package in PACKAGES}
    missing = [package for package, wheel in wheels.items() if wheel is None]
    if missing:
        raise SystemExit(f"podshare: no {' or '.join(missing)} wheel for this node's machine {machine} in the "
                         f"delivered probes (there are wheels for x86_64 and aarch64)")
    for archive in [bundle / "probes.zip", *wheels.values()]:
        with zipfile.ZipFile(archive) as z:
            z.extractall(target)
    # Compiled once here: the containers mount the copy read-only, so each of
    # their interpreters would otherwise compile the probes again at start.
    compileall.compile_dir(str(target / "probes"), quiet=1)
    return {"ok": True, "machine": machine, "python": platform.python_version(),
            "wheels": [w.name for w in wheels.values()], "unpack_ms": round((time.monotonic() - started) * 1000, 1)}


def main(argv: list[str]) -> None:
    bundle, target = Path(argv[0]), Path(argv[1])
    command = argv[3:] if argv[2:3] == ["--"] else []
    done = target / ".unpacked"  # written last: a copy without it is redone
    if not done.exists():
        target.mkdir(parents=True, exist_ok=True)
        told = json.dumps(unpack(bundle, target))
        done.write_text(told)
        print(told, file=sys.stderr, flush=True)
    if command:  # the same process (PID and signals) becomes the container's command
        os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
