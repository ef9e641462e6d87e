"""The plugin from a user's seat: help, collection and option errors work
without any cluster, and a missing cluster is one clear line, not a traceback."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from .conftest import PROJECT

NO_CLUSTER = {**os.environ, "KUBECONFIG": "/nonexistent/kubeconfig"}


def pytest_run(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=PROJECT,
                          capture_output=True, text=True, env=env or NO_CLUSTER, timeout=120)


def test_help_lists_every_option_without_a_cluster():
    out = pytest_run("--help")
    assert out.returncode == 0
    for flag in ("--kube-context", "--kubeconfig", "--namespace", "--probe-image", "--image-pull-policy",
                 "--image-pull-secret", "--node", "--keep", "--reports-dir", "--pod-timeout", "--pod-manifest"):
        assert flag in out.stdout, flag


def test_collect_only_works_without_a_cluster_and_markers_are_strict():
    out = pytest_run("suites", "--collect-only", "-q", "--strict-markers", "-m", "ipc or posix")
    assert out.returncode == 0, out.stdout + out.stderr
    collected = [line for line in out.stdout.splitlines() if "::" in line]
    assert collected and all("sysv" in line or "posix" in line for line in collected)


def test_invalid_option_values_are_usage_errors():
    for args, words in ((("--keep", "sometimes"), "--keep must be one of"),
                        (("--pod-timeout", "soon"), "--pod-timeout must be a number"),
                        (("--image-pull-policy", "Maybe"), "--image-pull-policy must be one of"),
                        (("--pod-manifest", "/nope.yaml"), "--pod-manifest /nope.yaml"),
                        (("--one-per-pool",), "--one-per-pool picks among several nodes")):
        out = pytest_run("suites", *args)
        assert out.returncode == 4, (args, out.stdout, out.stderr)
        assert words in out.stderr


def test_environment_variables_set_options():
    out = pytest_run("suites", "--collect-only", "-q", env={**NO_CLUSTER, "PODSHARE_KEEP": "often"})
    assert out.returncode == 4 and "--keep must be one of" in out.stderr


def test_missing_kubeconfig_fails_every_claim_with_one_line(tmp_path):
    out = pytest_run("suites/test_identity.py", "-q", "--reports-dir", str(tmp_path))
    assert out.returncode == 2  # pytest's "interrupted": the claims could not be checked (1 means they failed)
    stop = [line for line in out.stdout.splitlines() if "Interrupted: podshare:" in line]
    assert len(stop) == 1 and "no kubeconfig at /nonexistent/kubeconfig" in stop[0]
    assert "Traceback" not in out.stdout


def _stale_reports(directory) -> None:
    directory.mkdir()
    for name in ("results.json", "report.html", "summary.md", "junit.xml"):
        (directory / name).write_text("STALE: an earlier run's 2 passed")


def test_a_run_that_selects_no_claim_rewrites_every_report(tmp_path):
    reports = tmp_path / "reports"
    _stale_reports(reports)
    out = pytest_run("suites", "-q", "-m", "no_such_marker", "--reports-dir", str(reports))
    assert out.returncode == 5, out.stdout + out.stderr  # pytest: no tests ran
    for name in ("results.json", "report.html", "summary.md", "junit.xml"):
        assert "STALE" not in (reports / name).read_text(), name
    results = json.loads((reports / "results.json").read_text())
    assert results["checks"] == [] and results["run"]["checks_run"] == 0
    assert "No claim ran" in (reports / "summary.md").read_text()


def test_a_run_whose_collection_fails_says_so_in_every_report(tmp_path):
    reports, broken = tmp_path / "reports", tmp_path / "test_broken.py"
    _stale_reports(reports)
    broken.write_text("def test_(:\n")
    out = pytest_run(str(broken), "-q", "--reports-dir", str(reports))
    assert out.returncode == 2, out.stdout + out.stderr
    results = json.loads((reports / "results.json").read_text())
    assert results["run"]["fatal"].startswith("could not collect the claims: ")
    assert "test_broken.py" in results["run"]["fatal"]
    assert "Could not check the claims" in (reports / "summary.md").read_text()
    assert "Could not check the claims" in (reports / "report.html").read_text()
    assert "STALE" not in (reports / "junit.xml").read_text()


def on_a_terminal(*args: str, env=None) -> str:
    """pytest's output as a person's terminal gets it (a pseudo-terminal, 100 columns)."""
    import pty
    import struct
    import termios
    import fcntl
    control, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=PROJECT,
                            stdin=terminal, stdout=terminal, stderr=terminal, env=env or NO_CLUSTER)
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(control, 65536)
        except OSError:  # EIO: the process closed its end
            break
        if not chunk:
            break
        output += chunk
    proc.wait(timeout=120)
    os.close(control)
    return output.decode(errors="replace")


def test_a_run_on_a_terminal_shows_progress_per_group_and_a_log_does_not(tmp_path):
    """On a terminal one status line, rewritten in place, counts each RuntimeClass's
    claims and what did not pass; in a log (no terminal) pytest's letters stay."""
    args = ("suites/test_identity.py", "-q", "--runtime-class", "runc", "--runtime-class", "crun", "--workers", "1",
            "--reports-dir")
    shown = on_a_terminal(*args, str(tmp_path / "tty"))
    statuses = [s.strip() for s in shown.replace("\n", "\r").split("\r") if " in 0m" in s]
    assert statuses[0].startswith("runc 0/3 | crun 0/3   0/6 in 0m"), shown
    assert "runc 1/3, 1 error | crun 0/3   1/6 in 0m" in statuses[-1], shown  # no cluster: the first claim stops the run
    assert not any(re.fullmatch(r"[.FEsxC]+", s.strip()) for s in shown.splitlines()), shown
    logged = pytest_run(*args, str(tmp_path / "log")).stdout
    assert " in 0m" not in logged and re.search(r"^E", logged, re.M), logged
