"""The suites in a pytest process of their own: the one way the harness's
tests and scripts (soak, benchmark) start them."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
SUITES = [sys.executable, "-m", "pytest", "suites", "-q", "-p", "no:cacheprovider"]


def run_once(reports: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict, float]:
    """One run with its reports in `reports`: the process, its results.json
    (a stand-in naming the output when it wrote none) and its wall time."""
    start = time.monotonic()
    proc = subprocess.run([*SUITES, "--reports-dir", str(reports), *args], cwd=PROJECT,
                          capture_output=True, text=True)
    wall = time.monotonic() - start
    try:
        results = json.loads((reports / "results.json").read_text())
    except (OSError, ValueError):
        results = {"checks": [], "summary": {}, "run": {"fatal": (proc.stdout + proc.stderr)[-500:]}}
    return proc, results, wall
