"""A pod that dies or never starts for a reason the API names is that reason, not a
broken promise (issue 27): each kind caused by a pod variant on the live cluster
(tests/variants/pod-ends/), and each run's terminal said for a person, briefly.
The eviction's needs the bundled kubelets' volumeStatsAggPeriod of 10 s
(cluster/configs.py; the default measures a volume once a minute)."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from podshare.retry import NotYet, wait_until

from .conftest import PROJECT, run_suites
from .test_disruptions import _assert_reported_apart, _probe_pod, _rerun_checks, cluster_lock, suite_run  # noqa: F401
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


def _write_while_paused(kube, run, pod: str, container: str, argv: list[str]) -> None:
    """With the run paused (SIGSTOP on its pytest, not on the cluster), what an
    app of the pod would do: `argv` in `container`; then until the kubelet has
    evicted the pod, so that the next claim meets it however slowly the node acts."""
    os.kill(run.proc.pid, signal.SIGSTOP)
    try:
        stream = kube.exec_stream(run.namespace, pod, container, argv)
        stream.run_forever(timeout=30)
        assert stream.returncode == 0, stream.read_all()

        def evicted():  # its phase Failed, or Succeeded where its containers end cleanly (kubernetes#120182)
            live = kube.read_pod(run.namespace, pod)
            if live.status.phase not in ("Failed", "Succeeded"):
                raise NotYet(f"pod {pod}: phase {live.status.phase}, reason {live.status.reason}")
        wait_until(evicted, timeout=120, what=f"the kubelet to evict {pod}")
    finally:
        os.kill(run.proc.pid, signal.SIGCONT)


@pytest.mark.usefixtures("kube")
def test_a_probe_pod_evicted_for_its_own_volume_size_limit_is_the_cause_of_the_claims_after_it(kube, suite_run):
    """The disk emptyDir's sizeLimit is 512Ki; once the first claim passed (the perf claims
    that follow take seconds), 1 MiB goes
    into it: the kubelet evicts the pod. The claims after it could not be checked,
    with one cause: the eviction in the kubelet's words, and that the pod's own spec
    set the limit (a finding about the spec). No fresh pod is tried (it would meet
    the same limit), nothing failed, nothing is left behind."""
    with cluster_lock(exclusive=False):
        run = suite_run("-m", "perf or ipc or posix", "--pod-manifest", str(VARIANTS / "disk-over-its-size-limit.yaml"),
                        "--pod-timeout", "120", *_pinned())
        run.wait_passed(1)
        _write_while_paused(kube, run, _probe_pod(kube, run), "alpha",
                            ["python3", "-c", "open('/data/disk/fill', 'wb').write(bytes(1 << 20))"])
        results = run.finish()
    unchecked = _assert_reported_apart(run, results, "was evicted")
    assert re.fullmatch(r'pod podshare-probe-\S+ was evicted \(.*Usage of EmptyDir volume "disk" exceeds the limit '
                        r'"512Ki"\..*\)( \(the API calls it Succeeded: .*kubernetes#120182\))?; the pod\'s own spec '
                        r"limits its volume disk to 512Ki: a finding about the spec, not about what the containers share",
                        unchecked[0]["cause"]), unchecked[0]["cause"]
    assert not _rerun_checks(results)
    lines = run.output.splitlines()
    assert sum(line.startswith(f"could not check {len(unchecked)} claims: pod podshare-probe-") for line in lines) == 1, \
        run.output[-3000:]
    assert "Traceback" not in run.output
    assert_nothing_left(run.run_id)
