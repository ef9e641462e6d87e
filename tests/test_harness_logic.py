"""Unit tests of the harness's own logic: rendering, option handling, terminal
pod states, the exec protocol and the report model. No cluster needed."""
from __future__ import annotations

import json

import pytest
from kubernetes import client

from podshare import MANAGED_BY, POD_LABEL, RUN_ID_LABEL
from podshare.kube import ExecResult, Kube, KubeError
from podshare.pods import ProbeContainer, load_manifest, render
from podshare.report import Check, RunReport
from podshare.retry import GaveUp, NotYet, wait_until


class FakeSettings:
    probe_image = "registry.example/probe:1"
    nginx_image = "nginx:1"
    image_pull_policy = "Never"
    image_pull_secret = "pull-me"


def test_render_fills_name_labels_images_and_node_affinity():
    body = render(load_manifest("probe-pod.yaml"), name="p1", settings=FakeSettings(), run_id="r1", node="n1")
    assert body["metadata"]["name"] == "p1"
    assert body["metadata"]["labels"] == {**MANAGED_BY, RUN_ID_LABEL: "r1", POD_LABEL: "p1"}
    assert {c["image"] for c in body["spec"]["containers"]} == {"registry.example/probe:1"}
    assert {c["imagePullPolicy"] for c in body["spec"]["containers"]} == {"Never"}
    assert body["spec"]["imagePullSecrets"] == [{"name": "pull-me"}]
    term = body["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["nodeSelectorTerms"][0]["matchFields"][0]["values"] == ["n1"]


def test_render_does_not_change_the_template():
    template = load_manifest("probe-pod.yaml")
    render(template, name="x", settings=FakeSettings(), run_id="r", node="n")
    assert template["metadata"]["name"] == "podshare-probe" and "affinity" not in template["spec"]


@pytest.mark.parametrize("manifest", ["probe-pod.yaml", "stranger-pod.yaml"])
def test_every_pod_is_restricted_pod_security(manifest):
    """The restricted Pod Security Standard's requirements, container by container."""
    spec = load_manifest(manifest)["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    for c in spec["containers"]:
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert not any(k in spec for k in ("hostIPC", "hostNetwork", "hostPID"))


def test_probe_argv_turns_flags_into_options():
    argv = ProbeContainer.argv("hold-port", {"port": 7, "fsync": True, "skip": False, "none": None, "max_x": 1})
    assert argv == ["python3", "-m", "probes", "hold-port", "--port", "7", "--fsync", "--max-x", "1"]


def test_exec_result_demands_exactly_one_json_line():
    assert ExecResult('{"ok": true}\n', "", 0).json() == {"ok": True}
    with pytest.raises(KubeError, match="expected one JSON line"):
        ExecResult("Traceback...\n{}\n", "boom", 1).json()
    with pytest.raises(KubeError):
        ExecResult("", "python3: not found", 127).json()


def _pod(waiting_reason=None, scheduled=None, phase="Pending"):
    statuses = [client.V1ContainerStatus(
        name="alpha", image="i", image_id="", ready=False, restart_count=0,
        state=client.V1ContainerState(waiting=client.V1ContainerStateWaiting(reason=waiting_reason, message="m"))
        if waiting_reason else None)]
    conditions = [client.V1PodCondition(type="PodScheduled", status="False", reason="Unschedulable",
                                        message=scheduled)] if scheduled else []
    return client.V1Pod(metadata=client.V1ObjectMeta(name="p"), spec=client.V1PodSpec(containers=[], restart_policy="Always"),
                        status=client.V1PodStatus(phase=phase, container_statuses=statuses, conditions=conditions))


@pytest.mark.parametrize("reason", ["ErrImagePull", "ImagePullBackOff", "CrashLoopBackOff", "CreateContainerConfigError"])
def test_terminal_waiting_reasons_fail_fast(reason):
    assert reason in Kube.pod_problem(_pod(waiting_reason=reason))


def test_unschedulable_reports_the_scheduler_message():
    assert "0/1 nodes are available" in Kube.pod_problem(_pod(scheduled="0/1 nodes are available: x"))


def test_pulling_or_creating_is_not_a_problem():
    assert Kube.pod_problem(_pod(waiting_reason="ContainerCreating")) is None


def test_wait_until_retries_not_yet_and_gives_up_with_the_last_state():
    calls = []

    def check():
        calls.append(1)
        raise NotYet(f"attempt {len(calls)}")
    with pytest.raises(GaveUp, match=r"waiting for the thing: attempt \d+"):
        wait_until(check, timeout=0.3, what="the thing")
    assert len(calls) > 1


def test_wait_until_stops_at_once_on_other_errors():
    calls = []

    def check():
        calls.append(1)
        raise KubeError("ErrImagePull")
    with pytest.raises(KubeError):
        wait_until(check, timeout=5, what="x")
    assert len(calls) == 1


def test_report_counts_outcomes_and_renders_every_claim(tmp_path):
    checks = [Check("s::a", "claim A", "passed", 0.1, {"x": 1}), Check("s::b", "claim <B>", "failed", 0.2, {}, "boom"),
              Check("s::c", "claim C", "skipped", 0.0, {}, "no ipv6")]
    report = RunReport(run={"id": "r", "duration_s": 1.0}, cluster={"server_version": "v1.35.4"}, checks=checks)
    paths = report.write(tmp_path)
    data = json.loads(paths[0].read_text())
    assert data["summary"] == {"passed": 1, "failed": 1, "error": 0, "skipped": 1, "total": 3}
    assert [c["outcome"] for c in data["checks"]] == ["passed", "failed", "skipped"]
    page = paths[1].read_text()
    assert "claim &lt;B&gt;" in page and "<script" not in page and "http" not in page.split("<body>")[1]
    assert "| ❌ | claim <B> (`b`) | failed" in paths[2].read_text()
