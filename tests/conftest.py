"""Helpers for the harness's own tests."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent


def probe(*args: str, prefix: tuple[str, ...] = (), timeout: float = 30) -> dict:
    """Run a probe verb on this host (optionally inside `unshare ...`) and parse its one JSON line."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    out = subprocess.run([*prefix, sys.executable, "-m", "probes", *args], capture_output=True, text=True,
                         env=env, timeout=timeout)
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"probe printed {len(lines)} lines: {out.stdout!r} {out.stderr!r}"
    return json.loads(lines[0])


@pytest.fixture
def run_probe():
    return probe


@pytest.fixture
def start_probe():
    """Start a probe verb in the background; yields a function returning the Popen."""
    procs = []

    def start(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": str(PROJECT)}
        p = subprocess.Popen([*prefix, sys.executable, "-m", "probes", *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
        procs.append(p)
        return p
    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def wait_ready(proc: subprocess.Popen) -> dict:
    """Block until a holding verb prints its ready line on stderr."""
    line = proc.stderr.readline()
    assert '"ready": true' in line, f"not ready: {line!r} {proc.stdout.read() if proc.poll() is not None else ''}"
    return json.loads(line)


def finish(proc: subprocess.Popen, timeout: float = 10) -> dict:
    out, _ = proc.communicate(timeout=timeout)
    return json.loads(out.strip().splitlines()[-1])


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="unshare of IPC/net namespaces needs root")
