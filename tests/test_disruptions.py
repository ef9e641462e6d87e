"""A cluster that moves under a run, for real: the probe pod deleted mid-run,
the node's kubelet killed mid-run, the API server or containerd frozen for
20 s. A disruption is not a broken promise: the claims it takes end as
could-not-check naming it (never failed), at once rather than after their
timeouts, except where recovery is cheap (the probe pod deleted: its claims
run once more on a fresh pod); a freeze the cluster rides out leaves a
passing run.

Run this file WITHOUT an outer `flock`: each test takes the shared cluster lock
it needs itself (exclusive around the kubelet kill and the freezes, which
disturb everyone's runs; every component is running again, and the node
Ready, before the lock is released).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterator

import pytest

from cluster.layout import NODE
from cluster.localcluster import node_ready
from cluster.processes import alive, recorded_pid
from podshare import RUN_ID_LABEL
from podshare.errors import KubeError
from podshare.retry import GaveUp, NotYet, wait_until

from .conftest import POD_TIMEOUT, PROJECT, start_suites, unchecked_exit, well_before

CLUSTER_LOCK = "/tmp/podshare-cluster.lock"
# The disruption comes once the first claim passed: it lands in the perf claims
# (seconds each), with the many short ipc, posix and volume claims still to run
# (they take about 0.05 s each: most of a run's time is pod start-up).
SELECTION = ("-m", "network or perf or ipc or posix or volume")
# The probe pod's own claims: its deletion meets none of the other pods' (the volume kinds' and
# the patterns'), which only lengthened the deletion tests' runs (138 s of CI's after phase).
PROBE_POD_CLAIMS = ("-m", "network or perf or ipc or posix")
# The deletion tests run beside other groups of the harness (a loaded machine): with a pod timeout
# far from what the rest of the run takes there, "ended well before the timeout" proves the run did
# not wait one out, and no load can reach the bound (their own times are in the benchmark's range).
LONG_POD_TIMEOUT = 360
STARTED = 1  # claims passed before the disruption


def restart_component(name: str, timeout: float) -> subprocess.CompletedProcess:
    """The local cluster's component started again as `up` starts it, once it serves."""
    return subprocess.run([sys.executable, "-m", "cluster.localcluster", "restart-component", name], cwd=PROJECT,
                          capture_output=True, text=True, timeout=timeout)


needs_local_cluster = pytest.mark.skipif(
    not os.environ.get("PODSHARE_LOCAL_CLUSTER") or os.geteuid() != 0,
    reason="kills and freezes the bundled local cluster's processes (PODSHARE_LOCAL_CLUSTER=1, root)")


@contextlib.contextmanager
def cluster_lock(exclusive: bool) -> Iterator[None]:
    """The lock every user of the shared cluster takes: shared for a run,
    exclusive for a disruption."""
    with open(CLUSTER_LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class SuiteRun:
    """The suites in the background (-vv against the -q of start_suites: a line per claim), their output read as it comes."""

    def __init__(self, reports: Path, *args: str) -> None:
        self.run_id = f"disrupt-{uuid.uuid4().hex[:8]}"
        self.reports = reports
        self.proc = start_suites("--reports-dir", str(reports), "--run-id", self.run_id, "-vv", *args)
        self.lines: list[str] = []
        self.ended_at: float | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
        self.proc.wait()
        self.ended_at = time.monotonic()

    @property
    def namespace(self) -> str:
        return f"podshare-{self.run_id}"

    def wait_passed(self, count: int, timeout: float = 120) -> None:
        def enough():
            assert self.proc.poll() is None, "the run ended before the disruption:\n" + "".join(self.lines[-40:])
            if sum(" PASSED" in line for line in self.lines) < count:
                raise NotYet(f"{sum(' PASSED' in line for line in self.lines)} claims passed")
        wait_until(enough, timeout=timeout, what=f"{count} claims to pass")

    def finish(self, timeout: float = 240) -> dict:
        self._reader.join(timeout)
        assert self.ended_at is not None, "the run did not end:\n" + "".join(self.lines[-40:])
        return json.loads((self.reports / "results.json").read_text())

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self._reader.join(60)


@pytest.fixture
def suite_run(tmp_path):
    runs: list[SuiteRun] = []

    def start(*args: str) -> SuiteRun:
        runs.append(SuiteRun(tmp_path / f"run{len(runs)}", *args))
        return runs[-1]
    yield start
    for run in runs:
        run.stop()


def _outcomes(results: dict) -> dict[str, list[dict]]:
    by: dict[str, list[dict]] = {}
    for c in results["checks"]:
        by.setdefault(c["outcome"], []).append(c)
    return by


def _assert_reported_apart(run: SuiteRun, results: dict, cause_words: str) -> list[dict]:
    """Every claim the disruption took: could-not-check with the same cause naming
    it, in every report; none failed; the run's exit says it did not check all."""
    by = _outcomes(results)
    unchecked = by.get("could-not-check", [])
    assert unchecked, run.output[-3000:]
    assert not by.get("failed") and not by.get("error"), [(c["id"], c["message"]) for c in
                                                         by.get("failed", []) + by.get("error", [])]
    assert by.get("passed"), "claims before the disruption passed"
    assert len({c["cause"] for c in unchecked}) == 1, {c["cause"] for c in unchecked}
    for c in unchecked:
        assert c["message"].startswith(f"could not check: {c['cause']}") and cause_words in c["cause"], c["message"]
        assert "Error" not in c["message"].split(";")[0] and "{" not in c["cause"], c["message"]
    # documented: not everything was checked, nothing broke (1 where it also left objects behind)
    assert run.proc.returncode == unchecked_exit(results), run.output[-3000:]
    assert results["summary"]["could-not-check"] == len(unchecked)
    suite = ET.parse(run.reports / "junit.xml").getroot().find("testsuite")
    errors = suite.findall("testcase/error")
    assert not suite.findall("testcase/failure") and len(errors) == len(unchecked)
    assert all(e.get("message").startswith("could not check: ") for e in errors)
    assert int(suite.get("errors")) == len(unchecked) and int(suite.get("failures")) == 0
    metrics = (run.reports / "metrics.prom").read_text()
    assert metrics.count("podshare_claim_passed{") == len(by["passed"])
    assert metrics.count("podshare_claim_checked{") == len(by["passed"]) + len(unchecked)
    assert f"Could not check ({len(unchecked)})" in (run.reports / "report.html").read_text()
    assert "could not check" in (run.reports / "summary.md").read_text().splitlines()[0]
    return unchecked


def _namespace_gone(kube, namespace: str, timeout: float) -> None:
    def gone():
        if kube.namespace_exists(namespace):
            raise NotYet(f"namespace {namespace} still exists")
    wait_until(gone, timeout=timeout, what=f"namespace {namespace} to be deleted")


def _pod_named(kube, run: SuiteRun, prefix: str) -> str:
    """The run's pod whose name starts with `prefix`, once the run made it."""
    def find():
        try:
            pods = [p.metadata.name for p in kube.list_labelled(run.namespace, "Pod", f"{RUN_ID_LABEL}={run.run_id}")
                    if p.metadata.name.startswith(prefix)]
        except KubeError as exc:
            raise NotYet(str(exc)) from None  # the run's namespace may not exist yet
        if not pods:
            raise NotYet(f"no pod {prefix}* yet")
        return pods[0]
    return wait_until(find, timeout=60, what=f"the run's pod {prefix}*")


def _delete_while_paused(kube, run: SuiteRun, pod: str) -> None:
    """Delete a pod of the run with the run paused (SIGSTOP on our own pytest, not
    on the cluster) until the API has it gone: the kubelet has ended its containers,
    so the next claim meets the deletion however slowly a loaded node acts on it."""
    os.kill(run.proc.pid, signal.SIGSTOP)
    try:
        kube.delete(run.namespace, "Pod", pod)
        kube.wait_pod_gone(run.namespace, pod, None, timeout=60)
    finally:
        os.kill(run.proc.pid, signal.SIGCONT)


def _probe_pod(kube, run: SuiteRun) -> str:
    return _pod_named(kube, run, "podshare-probe-")


def _rerun_checks(results: dict) -> list[dict]:
    return [c for c in results["checks"] if c["evidence"].get("first_attempt")]


@pytest.mark.usefixtures("kube")
def test_probe_pod_deleted_mid_run_its_claims_run_again_on_a_fresh_pod(kube, suite_run):
    """What an eviction, a drain or a colleague's `kubectl delete` does: the probe
    pod deleted while claims run. The claim it disrupted is run once more on a
    fresh probe pod (on the same node, beside the stranger) and reported as both:
    disrupted, naming the deletion and when it was asked for, then passed; the
    claims after it run on the fresh pod; nothing is reported failed, the run
    checked everything (exit 0) and leaves nothing behind."""
    with cluster_lock(exclusive=False):
        run = suite_run(*PROBE_POD_CLAIMS, "--pod-timeout", str(LONG_POD_TIMEOUT))
        run.wait_passed(STARTED)
        pod = _probe_pod(kube, run)
        _delete_while_paused(kube, run, pod)
        deleted = time.monotonic()
        results = run.finish()
    by = _outcomes(results)
    assert set(by) == {"passed"}, [(c["id"], c["outcome"], c["message"]) for c in results["checks"]
                                   if c["outcome"] != "passed"]
    again = _rerun_checks(results)
    assert again, "no claim met the deletion:\n" + run.output[-3000:]
    for c in again:
        cause = c["cause"]
        # gone from the API by then: named with the kubelet's events, not the time the deletion was asked
        assert cause.startswith(f"pod {pod} was deleted") and "{" not in cause, c["message"]
        assert c["message"].startswith(f"disrupted: {cause}; passed on a fresh pod podshare-probe-fresh-"), c["message"]
        first = c["evidence"]["first_attempt"]
        # what the first attempt saw (the channel to the deleted pod ending, say), where it saw anything
        assert first["disruption"] == cause and (first["claim_saw"] is None or pod in first["claim_saw"] or any(
            t["pod"] == pod for t in first["transcript"])), first
        assert all(t["pod"].startswith("podshare-probe-fresh-") for t in c["evidence"]["transcript"]
                   if t["container"] in ("alpha", "beta")), c["evidence"]["transcript"]
    later = results["checks"][results["checks"].index(again[-1]) + 1:]
    assert later and all(t["pod"] != pod for c in later for t in c["evidence"].get("transcript", [])), \
        "a claim after the re-run used the deleted pod"
    assert run.proc.returncode == 0, run.output[-3000:]  # documented: every claim was checked, and held
    assert not results["run"]["leftovers"]
    suite = ET.parse(run.reports / "junit.xml").getroot().find("testsuite")
    assert int(suite.get("errors")) == 0 and int(suite.get("failures")) == 0
    rerun_props = [p.get("value") for p in suite.iter("property") if p.get("name") == "podshare_rerun"]
    assert len(rerun_props) == len(again) and all(v.startswith(f"disrupted: pod {pod} was deleted")
                                                  for v in rerun_props), rerun_props
    assert f"Disrupted, then re-run on a fresh pod ({len(again)})" in (run.reports / "report.html").read_text()
    summary = (run.reports / "summary.md").read_text()
    assert "## Disrupted, then re-run on a fresh pod" in summary and "passed on a fresh pod" in summary
    metrics = (run.reports / "metrics.prom").read_text()
    assert metrics.count("podshare_claim_passed{") == len(by["passed"])
    print(f"probe pod deleted: {len(again)} claim(s) re-run on a fresh pod, {len(by['passed'])} passed; the run "
          f"ended {run.ended_at - deleted:.1f}s after it resumed with the pod gone; {again[0]['id']}: "
          f"{again[0]['message']}")
    assert run.ended_at - deleted < well_before(LONG_POD_TIMEOUT)  # not the fresh pod's readiness wait


@pytest.mark.usefixtures("kube")
def test_the_fresh_probe_pod_deleted_too_ends_its_claims_as_could_not_check(kube, suite_run):
    """Never more than once: the probe pod deleted, then the fresh pod that is to
    replace it deleted too, as soon as it exists (the run paused until it is
    gone, as for the first). The second deletion is not
    chased: the claims end at once as could-not-check naming a deletion (the
    first, when the fresh pod never started; its own, when it did), none is
    reported failed, and no claim is run a third time."""
    with cluster_lock(exclusive=False):
        run = suite_run(*PROBE_POD_CLAIMS, "--pod-timeout", str(LONG_POD_TIMEOUT))
        run.wait_passed(STARTED)
        first = _probe_pod(kube, run)
        _delete_while_paused(kube, run, first)
        try:
            fresh = _pod_named(kube, run, "podshare-probe-fresh-")
        except GaveUp:
            raise AssertionError("no fresh probe pod:\n" + run.output[-4000:]) from None
        _delete_while_paused(kube, run, fresh)  # unpaused, a loaded node's kubelet acted after the last claim
        deleted = time.monotonic()
        results = run.finish()
    by = _outcomes(results)
    listing = [(c["id"], c["outcome"], c["message"][:200]) for c in results["checks"] if c["outcome"] != "passed"]
    assert not by.get("failed") and not by.get("error"), listing
    unchecked = by.get("could-not-check", [])
    assert unchecked, f"no claim met the second deletion: {listing}\n{run.output[-3000:]}"
    for c in unchecked:
        assert c["cause"].startswith((f"pod {first} was deleted", f"pod {fresh} was deleted")), c["message"]
        assert c["message"].startswith(f"could not check: {c['cause']}"), c["message"]
    again = _rerun_checks(results)
    assert all(c["outcome"] in ("passed", "could-not-check") for c in again), again
    pods = {p.metadata.name for p in kube.list_labelled(run.namespace, "Pod", f"{RUN_ID_LABEL}={run.run_id}")} \
        if kube.namespace_exists(run.namespace) else set()
    assert not {p for p in pods if p.startswith("podshare-probe-fresh-") and p != fresh}, pods  # no third probe pod
    assert run.proc.returncode == unchecked_exit(results), run.output[-3000:]
    assert not results["run"]["leftovers"]
    print(f"probe pod and then its fresh pod deleted: {len(unchecked)} claims could not be checked "
          f"({', '.join(sorted({c['cause'].split(' was ')[0] for c in unchecked}))}), {len(again)} re-run; the run "
          f"ended {run.ended_at - deleted:.1f}s after the second deletion")
    assert run.ended_at - deleted < well_before(LONG_POD_TIMEOUT)  # not the fresh pod's readiness wait


@pytest.mark.usefixtures("kube")
def test_a_lifecycle_pod_deleted_ends_only_its_claim_as_could_not_check(kube, suite_run):
    """Each lifecycle claim has a pod of its own: the first one's deleted as the run
    starts. That claim could not be checked, and says which pod went and when; the
    other lifecycle claim, on its own pod, is checked and passes."""
    with cluster_lock(exclusive=False):
        run = suite_run("-m", "lifecycle and not pattern")  # the lifecycle pods of their own
        pod = _pod_named(kube, run, "podshare-lifecycle0-")
        kube.delete(run.namespace, "Pod", pod)
        results = run.finish()
    by = _outcomes(results)
    assert len(by.get("could-not-check", [])) == 1 and len(by.get("passed", [])) == 1, [
        (c["id"], c["outcome"], c["message"]) for c in results["checks"]]
    unchecked = by["could-not-check"][0]
    assert unchecked["cause"].startswith(f"pod {pod} was deleted"), unchecked["message"]
    assert run.proc.returncode == unchecked_exit(results), run.output[-3000:]
    print(f"lifecycle pod deleted: {unchecked['id']}: {unchecked['message']}")


@needs_local_cluster
def test_kubelet_killed_mid_run_ends_the_run_within_a_minute(kube, suite_run):
    """The node's kubelet killed (SIGKILL) while claims run: every remaining claim
    ends as could-not-check naming the node's kubelet, the run ends within 60 s of
    the kill and names what it could not clean up; the kubelet is started again
    (as `up` starts it) and the node is Ready before anyone else runs."""
    with cluster_lock(exclusive=True):
        run = suite_run(*SELECTION, "--node", NODE)  # the node whose kubelet this kills
        try:
            run.wait_passed(STARTED)
            pid = recorded_pid("kubelet")
            assert pid and alive("kubelet"), "the local cluster's kubelet is not running"
            os.kill(pid, signal.SIGKILL)
            killed = time.monotonic()
            results = run.finish(timeout=180)
        finally:
            restart = restart_component("kubelet", timeout=240)
            assert restart.returncode == 0, restart.stderr
            assert node_ready(), "the node is not Ready after the kubelet's restart"
        took = run.ended_at - killed
        unchecked = _assert_reported_apart(run, results, f"node {NODE}'s kubelet is not answering")
        print(f"kubelet killed: {len(unchecked)} claims could not be checked; the run ended {took:.1f}s after the "
              f"kill; kubelet back: {restart.stderr.strip()}; cause: {unchecked[0]['cause']}")
        assert took < well_before(POD_TIMEOUT), f"the run ended {took:.0f}s after the kill (a timeout waited out?)"
        leftovers = results["run"]["leftovers"]
        assert leftovers and all("kubelet is not answering" in item for item in leftovers), leftovers
        # The cluster is usable: the restarted kubelet finishes the deletion the run asked for.
        _namespace_gone(kube, run.namespace, timeout=120)


@needs_local_cluster
@pytest.mark.parametrize("component", ["kube-apiserver", "containerd"])
def test_a_component_frozen_for_20s_mid_run_is_waited_for(kube, suite_run, component):
    """The API server or containerd stopped (SIGSTOP) for 20 s while claims run,
    then continued: the run waits and passes, every claim checked."""
    with cluster_lock(exclusive=True):
        run = suite_run(*SELECTION, "--node", NODE)  # the node of the containerd this freezes
        run.wait_passed(STARTED)
        pid = recorded_pid(component)
        assert pid and alive(component), f"the local cluster's {component} is not running"
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(20)  # the freeze itself, not a poll
        finally:
            os.kill(pid, signal.SIGCONT)
        continued = time.monotonic()
        results = run.finish()
    by = _outcomes(results)
    print(f"{component} frozen 20 s: {len(by.get('passed', []))} passed; the run ended "
          f"{run.ended_at - continued:.1f}s after SIGCONT")
    assert run.proc.returncode == 0 and set(by) == {"passed"}, [(c["id"], c["outcome"], c["message"])
                                                               for c in results["checks"] if c["outcome"] != "passed"]
    assert run.ended_at - continued < POD_TIMEOUT  # the rest of the claims, no timeout waited out
