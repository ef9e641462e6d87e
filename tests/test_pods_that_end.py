"""A pod that dies or never starts for a reason the API names is that reason, not a
broken promise (issue 27): each kind caused by a pod variant on the live cluster
(tests/variants/pod-ends/), and each run's terminal said for a person, briefly.
An eviction is not among them: the kubelet measures a volume's usage once a
minute (volumeStatsAggPeriod), so a variant cannot time one into a run; the
code names it from the pod's status (tests/test_harness_logic.py)."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from .conftest import PROJECT, run_suites
from .test_negative_controls import assert_nothing_left

VARIANTS = Path(__file__).resolve().parent / "variants" / "pod-ends"
POD_TIMEOUT = 40.0


def _pinned() -> list[str]:
    return ["--node", socket.gethostname().lower()] if os.environ.get("PODSHARE_LOCAL_CLUSTER") else []


def _results(reports: Path) -> dict:
    return json.loads((reports / "results.json").read_text())


@pytest.mark.usefixtures("kube")
def test_a_probe_container_oom_killed_mid_run_is_the_cause_of_its_claim_and_of_those_after_it(tmp_path):
    """beta's memory limit has no room for the 20 MiB the Memory-volume claim has it
    write, and its agent is the OOM killer's pick: the kubelet restarts beta while
    that claim runs (OOMKilled). That claim and every one after it on the pod could
    not be checked, each with one cause in the API's words: beta, OOMKilled, exit
    code 137, and that the pod's own spec set the limit it ran into; the terminal
    says it once, in a few lines. Run in this order (the ids given): the claim
    that ends beta first."""
    reports, run_id = tmp_path / "reports", "ends-" + uuid.uuid4().hex[:8]
    ordered = ["suites/test_volumes.py::test_memory_volume_is_tmpfs_and_honours_its_size_limit",
               "suites/test_posix_ipc.py", "suites/test_sysv_ipc.py"]
    run = subprocess.run([sys.executable, "-m", "pytest", *ordered, "-q", "-p", "no:cacheprovider",
                          "--pod-manifest", str(VARIANTS / "beta-oom-killed.yaml"), "--pod-timeout", "120",
                          "--reports-dir", str(reports), "--run-id", run_id, *_pinned()],
                         cwd=PROJECT, capture_output=True, text=True, timeout=600)
    results = _results(reports)
    checks = results["checks"]
    assert len(checks) == 9 and {c["outcome"] for c in checks} == {"could-not-check"}, [
        (c["id"], c["outcome"], c["message"]) for c in checks]
    causes = {c["cause"] for c in checks}
    assert len(causes) == 1, causes
    cause = causes.pop()
    assert re.fullmatch(r"container beta of pod podshare-probe-\S+ was restarted by the kubelet at [\d:]+ UTC: "
                        r"OOMKilled \(exit code 137\); the pod's own spec limits its memory to 40Mi: a finding about "
                        r"the spec, not about what the containers share", cause), cause
    first = checks[0]
    assert first["id"].endswith("test_memory_volume_is_tmpfs_and_honours_its_size_limit"), first["id"]
    assert first["message"].startswith(f"could not check: {cause}; the claim saw: the probe channel to "), first["message"]
    assert run.returncode == 2, run.stdout[-3000:]
    lines = run.stdout.splitlines()
    assert sum(line.startswith("could not check 9 claims: container beta") for line in lines) == 1, run.stdout[-3000:]
    assert len(lines) <= 30 and "Traceback" not in run.stdout + run.stderr, run.stdout
    assert_nothing_left(run_id)


@pytest.mark.usefixtures("kube")
def test_a_pattern_pod_that_cannot_pull_its_image_could_not_be_checked_never_failed(tmp_path):
    """The log-watcher pattern's image is not to be had: its claim could not be
    checked, naming the container, the pull reason and the image, and where to get
    it; not "failed", and not "the promise it relies on does not hold here"."""
    reports, run_id = tmp_path / "reports", "ends-" + uuid.uuid4().hex[:8]
    run = run_suites("-k", "pattern_log_watcher", "--patterns-dir", str(VARIANTS / "image-not-there"),
                     "--pod-timeout", f"{POD_TIMEOUT:g}", "--reports-dir", str(reports), "--run-id", run_id, *_pinned())
    checks = _results(reports)["checks"]
    assert checks and {c["outcome"] for c in checks} == {"could-not-check"}, [
        (c["id"], c["outcome"], c["message"]) for c in checks]
    for check in checks:
        assert re.match(r"could not check: container (app|watcher) of pod podshare-logs-\S+ is "
                        r"(ErrImageNeverPull|ErrImagePull|ImagePullBackOff): .*podshare\.local/not-there:dev.* "
                        r"cannot get the image podshare\.local/not-there:dev: ", check["message"]), check["message"]
        assert "does not hold here" not in check["message"], check["message"]
    assert run.returncode == 2, run.stdout[-3000:]
    assert_nothing_left(run_id)


@pytest.mark.usefixtures("kube")
def test_a_probe_pod_that_runs_but_never_becomes_ready_names_the_container_and_its_readiness_probe(tmp_path):
    """beta runs and its readiness probe asks a port nothing listens on: the run
    ends, once the pod timeout is out (readiness never fails for good), with one
    line naming beta as the container not ready and the kubelet's words for its
    readiness probe, not a bare timeout."""
    reports, run_id = tmp_path / "reports", "ends-" + uuid.uuid4().hex[:8]
    run = run_suites("-m", "ipc", "--pod-manifest", str(VARIANTS / "beta-never-ready.yaml"),
                     "--pod-timeout", f"{POD_TIMEOUT:g}", "--reports-dir", str(reports), "--run-id", run_id, *_pinned())
    output = run.stdout + run.stderr
    assert run.returncode == 2, output[-3000:]
    said = [line for line in output.splitlines() if "container beta not ready" in line]
    assert said, output[-3000:]
    assert re.search(r"container beta not ready; its readiness probe: Readiness probe failed: dial tcp [\d.]+:7999: "
                     r"connect: connection refused", said[0]), said[0]
    assert "container alpha not ready" not in said[0] and "Traceback" not in output, said[0]
    assert_nothing_left(run_id)
