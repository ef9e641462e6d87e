"""Unit tests of the harness's own logic: rendering, option handling, terminal
pod states, the exec protocol and the report model. No cluster needed."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from kubernetes import client

from podshare import MANAGED_BY, POD_LABEL, RUN_ID_LABEL, records
from podshare.channel import ProbeAnswer
from podshare.errors import KubeError
from podshare.manifests import load_manifest, render
from podshare.records import RunInfo
from podshare.records import Check
from podshare.report import RunReport
from podshare.retry import GaveUp, NotYet, wait_until
from podshare.verbs import ProbeContainer
from podshare.waits import pod_problem


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
    assert argv == ["hold-port", "--port", "7", "--fsync", "--max-x", "1"]


def test_probe_answer_demands_exactly_one_json_line():
    assert ProbeAnswer('{"ok": true}\n', "").json() == {"ok": True}
    with pytest.raises(KubeError, match=r"^the probe verb  in  gave no answer \(2 lines where one was due\): it "
                                        "ended; its last words: boom$"):
        ProbeAnswer("Traceback...\n{}\n", "boom").json()
    with pytest.raises(KubeError):
        ProbeAnswer("", "python3: not found").json()


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
    assert reason in pod_problem(_pod(waiting_reason=reason))


NGINX_EACCES = 'nginx: [emerg] open() "/dev/stdout" failed (13: Permission denied)'


def test_a_crash_looping_container_says_its_last_log_line(tmp_path):
    """The kubelet's CrashLoopBackOff says only "back-off ... restarting failed
    container": the wait for a pod names how the container's last run ended and
    the last line it logged, so a known divergence's signature can name the
    cause (cluster/youki-known-divergences.yaml: nginx's EACCES on /dev/stdout),
    not any failure of the container."""
    from podshare import signatures
    from podshare.errors import PodNotReady
    from podshare.known_divergences import KnownDivergences
    from podshare.waits import wait_for_pod
    pod = _pod(waiting_reason="CrashLoopBackOff")
    cs = pod.status.container_statuses[0]
    cs.name, pod.metadata.name = "nginx", "podshare-proxy"
    cs.state.waiting.message = "back-off 10s restarting failed container=nginx pod=podshare-proxy_ns(u)"
    cs.last_state = client.V1ContainerState(terminated=client.V1ContainerStateTerminated(exit_code=1, reason="Error"))
    asked = []

    class Kube:
        def read_pod(self, namespace, name):
            return pod

        def logs(self, namespace, name, container, previous=False, tail=50):
            asked.append((namespace, name, container, previous))
            return f"2026/12/02 06:00:00 [notice] 1#1: using the epoll event method\n{NGINX_EACCES}\n"

    with pytest.raises(PodNotReady) as raised:
        wait_for_pod(Kube(), "ns", "podshare-proxy", 5)
    said = str(raised.value)
    assert asked == [("ns", "podshare-proxy", "nginx", True)]
    assert "its last run ended Error, exit code 1" in said and said.endswith(f"its last log line: {NGINX_EACCES}")
    assert not raised.value.outside  # the pod's own crash: its claims rely on it
    [entry] = KnownDivergences.load("cluster/youki-known-divergences.yaml").entries
    assert signatures.any_matches(entry["seen"], {}, [], said)
    other = said.replace(NGINX_EACCES, "nginx: [emerg] host not found in upstream")
    assert not signatures.any_matches(entry["seen"], {}, [], other)
    assert not signatures.any_matches(entry["seen"], {}, [], "container nginx of pod podshare-proxy is ImagePullBackOff: x")


def test_a_volume_that_never_mounts_names_the_kubelets_failed_mount():
    """A class that binds but whose volume never mounts: the wait ends at the pod
    timeout with the kubelet's FailedMount words, as could-not-check (the
    storage's doing, not a broken promise of the pod)."""
    from podshare.errors import PodNotReady
    from podshare.waits import wait_for_pod
    pod = _pod(waiting_reason="ContainerCreating")
    pod.spec.node_name = "vm"
    failed = 'MountVolume.SetUp failed for volume "pvc-1" : rpc error: code = Internal desc = mount: no such device'

    class Kube:
        def read_pod(self, namespace, name):
            return pod

        def event_records(self, namespace, name, timeout=None):
            return [{"reason": "Scheduled", "message": "assigned"}, {"reason": "FailedMount", "message": failed}]

    with pytest.raises(PodNotReady) as raised:
        wait_for_pod(Kube(), "ns", "p", 0.3)
    assert str(raised.value).endswith(f"the kubelet could not mount its volumes: {failed}") and raised.value.outside


def test_unschedulable_reports_the_scheduler_message():
    assert "0/1 nodes are available" in pod_problem(_pod(scheduled="0/1 nodes are available: x"))


def test_an_image_the_node_cannot_get_or_no_node_is_the_clusters_cause_not_the_promises():
    """Its claims could not be checked; a crash is the pod's own (its claims rely on it)."""
    from podshare.waits import outside_the_promise
    assert outside_the_promise(_pod(waiting_reason="ImagePullBackOff"))
    assert outside_the_promise(_pod(scheduled="0/3 nodes are available: x"))
    assert not outside_the_promise(_pod(waiting_reason="CrashLoopBackOff"))


def test_pulling_or_creating_is_not_a_problem():
    assert pod_problem(_pod(waiting_reason="ContainerCreating")) is None


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
        raise KubeError("pods is forbidden", 403, "Forbidden")
    with pytest.raises(KubeError):
        wait_until(check, timeout=5, what="x")
    assert len(calls) == 1


def test_wait_until_retries_throttling_and_server_errors_after_their_retry_after():
    import time
    answers = [KubeError("slow down", 429, "TooManyRequests", retry_after=0.3), KubeError("etcd", 503),
               KubeError("no route", unreachable=True)]
    calls = []

    def check():
        calls.append(time.monotonic())
        if answers:
            raise answers.pop(0)
        return "done"
    assert wait_until(check, timeout=5, what="x") == "done"
    assert len(calls) == 4 and calls[1] - calls[0] >= 0.3  # the server's Retry-After, not the 50 ms backoff


def test_report_counts_outcomes_and_renders_every_claim(tmp_path):
    checks = [Check("s::a", "claim A", "passed", 0.1, {"x": 1}), Check("s::b", "claim <B>", "failed", 0.2, {}, "boom"),
              Check("s::c", "claim C", "skipped", 0.0, {}, "no ipv6")]
    report = RunReport(run=RunInfo(id="r", duration_s=1.0), cluster={"server_version": "v1.35.4"}, checks=checks)
    paths = report.write(tmp_path)
    data = json.loads(paths[0].read_text())
    assert data["summary"] == {"passed": 1, "failed": 1, "error": 0, "skipped": 1, "interrupted": 0,
                               "known-divergence": 0, "could-not-check": 0, "total": 3}
    assert [c["outcome"] for c in data["checks"]] == ["passed", "failed", "skipped"]
    page = paths[1].read_text()
    assert "claim &lt;B&gt;" in page and "<script" not in page and "http" not in page.split("<body>")[1]
    assert "| ❌ | claim <B> (`b`) | failed" in paths[2].read_text()


class RecordingKube:
    """Just enough of Kube for the pod layer: remembers what was created where,
    and 'schedules' a pod on the node its affinity names, else on node-b."""

    def __init__(self):
        self.created: list[dict] = []

    def create(self, namespace, body):
        self.created.append(json.loads(json.dumps(body)))
        return client.V1Pod(metadata=client.V1ObjectMeta(uid=f"uid-{len(self.created)}"))

    def delete_pod(self, namespace, name, timeout):
        pass

    def read_pod(self, namespace, name):
        body = self.created[-1]
        terms = body["spec"].get("affinity", {}).get("nodeAffinity", {})
        node = terms["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0][
            "matchFields"][0]["values"][0] if terms else "node-b"
        ready = [client.V1ContainerStatus(name=c["name"], ready=True, restart_count=0, image="i", image_id="i")
                 for c in body["spec"]["containers"]]
        return client.V1Pod(metadata=client.V1ObjectMeta(name=name, uid=f"uid-{len(self.created)}"),
                            spec=client.V1PodSpec(containers=[], node_name=node),
                            status=client.V1PodStatus(phase="Running", container_statuses=ready))


def test_a_recreated_pod_is_pinned_to_the_node_of_the_first():
    from podshare.pods import Pod, ProbeSet
    kube = RecordingKube()
    body = render(load_manifest("probe-pod.yaml"), name="p", settings=FakeSettings(), run_id="r")
    probes = ProbeSet([Pod(kube, "ns", body, 5)])
    probes.pods[0].create()
    probes.pods[0].uid, probes.pods[0].node = "uid-1", "node-a"  # where the scheduler put the first
    probes.recreate()
    assert probes.node == "node-a"
    again = kube.created[-1]["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert again["nodeSelectorTerms"][0]["matchFields"][0]["values"] == ["node-a"]


def test_a_pod_that_never_gets_ready_keeps_its_reason_for_the_claims():
    from podshare.pods import Pod, ProbeSet, start_pods_for_claims

    class NeverReady(RecordingKube):
        def read_pod(self, *a, **kw):
            raise GaveUp("timed out after 5s waiting for pod p to be ready: container nginx is not ready")
    pod = Pod(NeverReady(), "ns", render(load_manifest("probe-pod.yaml"), name="p", settings=FakeSettings(),
                                         run_id="r"), 5)
    start_pods_for_claims([pod], (GaveUp,))
    assert "container nginx is not ready" in pod.start_failure
    assert ProbeSet([pod]).start_failure.startswith("p: timed out")


def test_reports_name_what_makes_a_run_incomplete(tmp_path):
    from podshare.findings import run_problems
    from podshare.html_report import render_html
    from podshare.markdown_report import render_markdown
    checks = [Check(id="a", claim="A", outcome="passed", duration_s=1.0),
              Check(id="b", claim="B", outcome="interrupted", duration_s=0.5, message="the run stopped")]
    report = RunReport(run=RunInfo(id="r", interrupted="signal 15"), cluster={}, checks=checks)
    assert report.summary["interrupted"] == 1 and report.summary["passed"] == 1
    assert "1 interrupted" in render_markdown(report.findings()) and "Interrupted (signal 15)" in render_markdown(report.findings())
    assert "Interrupted (signal 15)" in render_html(report.findings())
    assert run_problems(RunInfo(id="r", checks_run=0)) == ["No claim ran: the selection (-m, -k, paths) matched none."]
    assert run_problems(RunInfo(id="r", fatal="x")) == ["Could not check the claims: x"]


def test_known_divergences_match_claim_and_class(tmp_path):
    from podshare.known_divergences import KnownDivergences
    listed = tmp_path / "known.yaml"
    listed.write_text("- {claim: 'suites/test_volumes.py::test_inotify_in_beta_sees_alpha_write[*]', "
                      "runtime_class: gvisor, reason: inotify does not cross containers, seen: 'message: no event'}\n")
    known = KnownDivergences.load(str(listed))
    assert known.match("suites/test_volumes.py::test_inotify_in_beta_sees_alpha_write[disk]", "gvisor")
    assert known.match("suites/test_volumes.py::test_inotify_in_beta_sees_alpha_write[disk]", "runc") is None
    assert known.match("suites/test_volumes.py::test_shared_mappings_are_coherent[disk]", "gvisor") is None
    listed.write_text("- {claim: x}\n")
    with pytest.raises(ValueError, match="expected a list"):
        KnownDivergences.load(str(listed))


def test_known_divergences_refuse_empty_signatures(tmp_path):
    """`seen: "message:"` (or blank words, or a list holding one) would be in every
    failure's message, so any failure of the claim would pass as the divergence:
    the loader refuses it, as it refuses a signature with no kind."""
    from podshare import signatures
    from podshare.known_divergences import KnownDivergences
    for seen in ("message:", "message:   ", "send:", "evidence beta_acquired:",
                 ["message: no event", "message: "], [], ":x", "no colon"):
        assert not signatures.valid(seen), seen
        listed = tmp_path / "known.yaml"
        listed.write_text(json.dumps([{"claim": "x", "runtime_class": "gvisor", "reason": "r", "seen": seen}]))
        with pytest.raises(ValueError, match="expected a list"):
            KnownDivergences.load(str(listed))
    for seen in ("message: no event", "send: ENOSYS", "evidence beta_acquired: true", ["message: a", "send: EPERM"]):
        assert signatures.valid(seen), seen


def test_a_known_divergence_of_a_storage_class_holds_only_on_its_pvcs(tmp_path):
    """`storage_class:` places a divergence on the claims whose volume dimension is
    a PVC of that class (as cluster/shared-fs-known-divergences.yaml lists sshfs's):
    not on the emptyDirs beside it, not on another class, and with another place
    key both must hold."""
    from podshare.known_divergences import KnownDivergences
    listed = tmp_path / "known.yaml"
    listed.write_text("- {claim: 'suites/test_volumes.py::test_unix_socket_file_in_the_volume_connects[*]', "
                      "storage_class: shared-sshfs, reason: sshfs makes no socket files, "
                      "seen: 'message: could not bind its object: EPERM'}\n"
                      "- {claim: 'suites/test_volumes.py::test_inotify_in_beta_sees_alpha_write[*]', reason: r, "
                      "seen: 'evidence beta.errno: ETIMEDOUT', where: [{storage_class: nfs, runtime_class: gvisor}]}\n")
    known = KnownDivergences.load(str(listed))
    sock = "suites/test_volumes.py::test_unix_socket_file_in_the_volume_connects[pvc-shared-sshfs]"
    assert known.match(sock, None, volume="pvc:shared-sshfs") == "sshfs makes no socket files"
    assert known.match(sock, "gvisor", {"podshare.io/pool": "current"}, volume="pvc:shared-sshfs")
    assert known.match(sock.replace("pvc-shared-sshfs", "disk"), None, volume="emptyDir") is None
    assert known.match(sock, None, volume="pvc:local-path") is None
    assert known.match(sock, None) is None  # a run whose claims have no volume dimension
    inotify = "suites/test_volumes.py::test_inotify_in_beta_sees_alpha_write[pvc-nfs]"
    assert known.match(inotify, "gvisor", volume="pvc:nfs") == "r"
    assert known.match(inotify, "runc", volume="pvc:nfs") is None and known.match(inotify, "gvisor", volume="pvc:x") is None


def test_known_divergences_files_are_tried_in_the_order_given():
    """A runtime's file and a StorageClass's, as CI gives both (--known-divergences
    twice): on the sandboxed pool gVisor's entry decides the unix socket claim on
    shared-sshfs too (its gofer makes the socket: connect is ENOENT), on runc
    nodes the class's (bind is EPERM); nothing is lost or doubled."""
    from podshare.known_divergences import KnownDivergences
    cluster = Path(__file__).resolve().parent.parent / "cluster"
    gvisor, sshfs = cluster / "gvisor-known-divergences.yaml", cluster / "shared-fs-known-divergences.yaml"
    both = KnownDivergences.load([str(gvisor), str(sshfs)])
    assert len(both.entries) == len(KnownDivergences.load(str(gvisor)).entries) + len(KnownDivergences.load(str(sshfs)).entries)
    sock = "suites/test_volumes.py::test_unix_socket_file_in_the_volume_connects[pvc-shared-sshfs]"
    sandboxed = {"podshare.io/pool": "sandboxed"}
    assert both.entry(sock, None, sandboxed, volume="pvc:shared-sshfs")["seen"] == "evidence beta.errno: ENOENT"
    assert both.entry(sock, None, {"podshare.io/pool": "current"}, volume="pvc:shared-sshfs")["seen"] == \
        "message: could not bind its object: EPERM"
    assert KnownDivergences.load("").entries == [] and KnownDivergences.load(()).entries == []


def test_the_matrix_has_a_row_per_claim_and_a_column_per_class():
    from podshare.findings import claim_matrix
    from podshare.html_report import render_html
    from podshare.markdown_report import render_markdown
    checks = [Check(id=f"s.py::t[disk-{k}]", claim="T", outcome=o, duration_s=0.1, claim_id="s.py::t[disk]",
                    runtime_class=k) for k, o in (("runc", "passed"), ("gvisor", "known-divergence"))]
    matrix = claim_matrix(checks)
    assert matrix.columns == ["runc", "gvisor"] and list(matrix.rows) == ["s.py::t[disk]"]
    report = RunReport(run=RunInfo(id="r"), cluster={}, checks=checks)
    assert "| T (`t[disk]`) | ✅ passed | 🔶 known-divergence |" in render_markdown(report.findings())
    assert 'href="#check-1">known-divergence</a>' in render_html(report.findings())
    assert claim_matrix([Check(id="a", claim="A", outcome="passed", duration_s=0)]) is None


def test_figures_summarise_samples_without_judging_them():
    from podshare.evidence import Evidence, summarize
    assert summarize("µs", list(range(1, 101))) == {"unit": "µs", "samples": 100, "median": 50.5, "p95": 95,
                                                    "min": 1, "max": 100}
    assert summarize("µs", []) == {"unit": "µs", "samples": 0}
    ev = Evidence()
    ev.figure("tcp round trip", "µs", [30.0, 10.0, 20.0])
    assert ev.figures["tcp round trip"]["median"] == 20.0


def test_the_figures_table_has_a_row_per_measurement_and_a_column_per_class():
    from podshare.evidence import summarize
    from podshare.findings import figure_table
    from podshare.html_report import render_html
    from podshare.markdown_report import render_markdown
    checks = [Check(id=f"p.py::t[{k}]", claim="T", outcome="passed", duration_s=0.1, claim_id="p.py::t",
                    runtime_class=k, figures={"tcp round trip": summarize("µs", samples)})
              for k, samples in (("runc", [40, 50, 60]), ("gvisor", [150, 160, 900]))]
    classes, rows = figure_table(checks)
    assert classes == ["runc", "gvisor"] and list(rows) == ["tcp round trip"]
    report = RunReport(run=RunInfo(id="r"), cluster={}, checks=checks)
    assert "| tcp round trip | 50 µs (p95 60, n=3) | 160 µs (p95 900, n=3) |" in render_markdown(report.findings())
    assert 'href="#check-1">160 µs (p95 900, n=3)</a>' in render_html(report.findings())
    assert figure_table([Check(id="a", claim="A", outcome="passed", duration_s=0)]) is None


def test_a_refused_exec_names_the_verbs_and_resource_without_the_headers():
    from kubernetes.client.rest import ApiException

    from podshare.errors import AccessDenied
    from podshare.kube_calls import api_call

    def refused():
        raise ApiException(status=0, reason="Handshake status 403 Forbidden -+-+- {'audit-id': 'x'} -+-+- "
                                            '{"kind":"Status","message":"pods \\"p\\" is forbidden: ","code":403}')
    with pytest.raises(AccessDenied) as caught:
        api_call("exec in ns/p/alpha", refused)
    message = str(caught.value)
    assert caught.value.status == 403 and "audit-id" not in message
    assert 'cannot create or get resource "pods/exec"' in message and 'pods "p" is forbidden' in message


def test_a_refusal_by_an_admission_policy_is_not_blamed_on_rbac():
    from kubernetes.client.rest import ApiException

    from podshare.errors import AccessDenied
    from podshare.kube_calls import api_call
    said = ("pods is forbidden: ValidatingAdmissionPolicy 'podshare-confinement' with binding "
            "'podshare-confinement' denied request: podshare's identity may not create pods in namespace default")
    exc = ApiException(status=403, reason="Forbidden")
    exc.body = json.dumps({"kind": "Status", "message": said, "reason": "Forbidden", "code": 403})

    def refused():
        raise exc
    with pytest.raises(AccessDenied) as caught:
        api_call("create pod x in default", refused)
    assert str(caught.value) == ("create pod x in default: refused by the admission policy podshare-confinement "
                                 "(403), not by RBAC: podshare's identity may not create pods in namespace default")


def _check(outcome, runtime_class="runc", claim_id="s.py::t", **kw):
    return Check(id=f"{claim_id}[{runtime_class}]", claim="T", outcome=outcome, duration_s=1.5, claim_id=claim_id,
                 runtime_class=runtime_class, **kw)


def test_metrics_are_prometheus_text_with_one_sample_per_claim_and_class():
    from podshare.metrics import exposition
    checks = [_check("passed"), _check("known-divergence", "gvisor"), _check("skipped", "crun"),
              _check("failed", claim_id='s.py::t["x"]')]
    text = exposition(RunInfo(id="r", started_epoch=1700000000.5), records.ClusterFacts(node="vm"), checks)
    assert 'podshare_claim_passed{claim="s.py::t",runtime_class="runc",node="vm",pool=""} 1\n' in text
    assert 'podshare_claim_passed{claim="s.py::t",runtime_class="gvisor",node="vm",pool=""} 0\n' in text
    assert 'podshare_claim_passed{claim="s.py::t[\\"x\\"]",runtime_class="runc",node="vm",pool=""} 0\n' in text
    assert 'runtime_class="crun"' not in text  # a skipped claim says nothing about the cluster
    assert 'podshare_claim_duration_seconds{claim="s.py::t",runtime_class="runc",node="vm",pool=""} 1.5\n' in text
    assert "podshare_run_timestamp_seconds 1700000000.500\n" in text
    for line in text.splitlines():  # every line is a comment or `name{labels} value`
        assert line.startswith("# ") or re.fullmatch(r'[a-z_]+(\{[^}]*\})? -?[0-9.e+]+', line), line


def test_history_tells_newly_failing_recovered_and_flaky(tmp_path):
    from podshare.history import History

    def run(i, outcomes):
        return {"run": {"id": f"r{i}", "started_at": f"2026-11-2{i}T00:00:00+00:00"},
                "checks": [{"id": k, "claim": k, "claim_id": k, "runtime_class": "runc", "outcome": o, "duration_s": 1}
                           for k, o in outcomes.items()]}
    for i, outcomes in enumerate([{"a": "passed", "b": "failed", "c": "passed", "d": "passed", "e": "passed"},
                                  {"a": "passed", "b": "failed", "c": "failed", "d": "passed", "e": "failed"},
                                  {"a": "passed", "b": "failed", "c": "passed", "d": "passed", "e": "passed"},
                                  {"a": "passed", "b": "passed", "c": "failed", "d": "failed", "e": "passed"}], 1):
        History.record(tmp_path, run(i, outcomes))
    (tmp_path / "torn.json").write_text("{")
    history = History.load(tmp_path)
    assert [p.outcome for p in history.timeline("a @ runc")] == ["passed"] * 4
    assert history.changes() == {"b @ runc": "recovered", "c @ runc": "flaky", "d @ runc": "newly failing"}
    assert history.verdict("e @ runc") is None  # a regression, fixed the next day: no longer news
    assert History.load(tmp_path, window=2).verdict("c @ runc") == "newly failing"  # the flips left the window


def test_report_opens_with_what_needs_attention_and_folds_long_evidence():
    from podshare.html_report import render_html
    from podshare.markdown_report import render_markdown
    long = {"transcript": [{"command": f"read {i}", "result": {"ok": True}} for i in range(40)], "key": 1}
    checks = [_check("passed", claim_id=f"s.py::ok{i}") for i in range(30)] + [
        _check("failed", claim_id="s.py::broken", message="AssertionError: beta cannot read alpha's file\nassert x",
               evidence=long)]
    page = render_html(RunReport(run=RunInfo(id="r"), cluster={}, checks=checks).findings())
    assert page.index("Needs attention (1)") < page.index("s.py::ok0")
    assert '<a href="#check-30">broken[runc]</a> — beta cannot read alpha&#x27;s file' in page
    assert "<summary>Probe transcript (" in page and "&quot;key&quot;: 1" in page
    assert "- ❌ `broken[runc]`: beta cannot read alpha's file" in render_markdown(
        RunReport(run=RunInfo(id="r"), cluster={}, checks=checks).findings())


def test_ctrl_c_inside_the_clients_websocket_call_stops_the_run_instead_of_failing_a_claim():
    from kubernetes.client.rest import ApiException

    from podshare.kube_calls import api_call

    def connect():  # what kubernetes.stream's websocket_call does with any exception
        try:
            raise KeyboardInterrupt("signal 2")
        except (Exception, KeyboardInterrupt, SystemExit) as e:
            raise ApiException(status=0, reason=str(e))
    with pytest.raises(KeyboardInterrupt):
        api_call("exec in p/alpha", connect)


# ------------------------------------------------------------------ could not check

DELETED = "pod podshare-probe-x was deleted at 19:42:10 UTC (event Killing at 19:42:10 UTC: Stopping container alpha)"


def _unchecked(claim_id, cause=DELETED, runtime_class="runc"):
    return _check("could-not-check", runtime_class, claim_id, cause=cause,
                  message=f"could not check: {cause}; the claim saw: exec in podshare-probe-x/alpha: 404 not found")


def test_a_claim_the_cluster_moved_under_is_counted_and_shown_apart_from_broken_promises(tmp_path):
    from podshare.html_report import render_html
    from podshare.markdown_report import render_markdown
    checks = [_check("passed", claim_id="s.py::ok"), _check("failed", claim_id="s.py::broken",
                                                            message="beta cannot read alpha's file"),
              _unchecked("s.py::a"), _unchecked("s.py::b"),
              _unchecked("s.py::c", cause="node n1's kubelet is not answering: 500 connection refused")]
    report = RunReport(run=RunInfo(id="r"), cluster={}, checks=checks)
    assert report.summary["could-not-check"] == 3 and report.summary["failed"] == 1
    page = render_html(report.findings())
    attention = page[page.index("Needs attention (1)"):page.index("</section>")]
    assert "broken[runc]" in attention and "a[runc]" not in attention  # broken promises only
    unchecked = page[page.index("Could not check (3)"):]
    unchecked = unchecked[:unchecked.index("</section>")]
    assert f"2 claims: {DELETED}" in unchecked and "1 claim: node n1&#x27;s kubelet is not answering" in unchecked
    assert '<details id="check-2" class="could-not-check" open>' in page and ".could-not-check{background:" in page
    md = render_markdown(report.findings())
    assert md.startswith("# podshare: 1 passed, 1 failed, 0 errors, 0 skipped, 3 could not check")
    assert f"- 🌀 2 claims: {DELETED} (`a[runc]`, `b[runc]`)" in md
    assert "- ❌ `broken[runc]`: beta cannot read alpha's file" in md and "- 💥 `a" not in md
    data = json.loads(report.write(tmp_path)[0].read_text())
    assert data["summary"]["could-not-check"] == 3 and data["checks"][2]["cause"] == DELETED


def test_metrics_have_no_passed_sample_for_a_claim_that_was_not_checked():
    from podshare.metrics import exposition
    text = exposition(RunInfo(id="r", started_epoch=1), records.ClusterFacts(node="vm"),
                      [_check("passed"), _check("failed", "crun"), _unchecked("s.py::t", runtime_class="gvisor")])
    assert 'podshare_claim_passed{claim="s.py::t",runtime_class="gvisor"' not in text
    assert 'podshare_claim_checked{claim="s.py::t",runtime_class="gvisor",node="vm",pool=""} 0\n' in text
    assert 'podshare_claim_checked{claim="s.py::t",runtime_class="runc",node="vm",pool=""} 1\n' in text
    assert 'podshare_claim_checked{claim="s.py::t",runtime_class="crun",node="vm",pool=""} 1\n' in text
    assert 'podshare_claim_passed{claim="s.py::t",runtime_class="crun",node="vm",pool=""} 0\n' in text


def test_history_does_not_count_a_claim_that_could_not_be_checked_as_a_change(tmp_path):
    from podshare.history import History

    def run(i, outcome):
        return {"run": {"id": f"r{i}", "started_at": f"2026-11-2{i}T00:00:00+00:00"},
                "checks": [{"id": "a", "claim": "A", "claim_id": "a", "runtime_class": "runc", "outcome": outcome,
                            "duration_s": 1},
                           {"id": "b", "claim": "B", "claim_id": "b", "runtime_class": "runc",
                            "outcome": "passed" if i < 5 else "failed", "duration_s": 1}]}
    outcomes = ["passed", "could-not-check", "passed", "could-not-check"]
    for i, outcome in enumerate(outcomes, 1):
        History.record(tmp_path, run(i, outcome))
    history = History.load(tmp_path)
    assert history.verdict("a @ runc") is None  # neither newly failing, recovered nor flaky
    assert [p.outcome for p in history.timeline("a @ runc")] == outcomes  # but shown in the timeline
    History.record(tmp_path, run(5, "passed"))
    assert History.load(tmp_path).changes() == {"b @ runc": "newly failing"}


def test_a_disruption_covers_its_pods_its_node_or_everything():
    from podshare.disruption import Disrupted, Disruption, Disruptions
    known = Disruptions()
    pod = type("P", (), {"uid": "u1", "node": "n1", "name": "p"})()
    other = type("P", (), {"uid": "u2", "node": "n2", "name": "q"})()
    assert known.of(pod) is None
    gone = known.record(Disruption("pod p was deleted", pods=frozenset({"u1"})))
    assert known.of(pod) is gone and known.of(other) is None
    with pytest.raises(Disrupted, match="pod p was deleted"):
        known.check("u1", "n9")
    down = known.record(Disruption("node n2 is NotReady since 19:43:02 UTC", node="n2"))
    assert known.of(other) is down and known.covering("u3", "n2") is down
    # the same node looked at again and worded otherwise: still the one cause
    assert known.record(Disruption("node n2's kubelet is not answering: reset", node="n2")) is down
    assert [d for d in known.known if d.node == "n2"] == [down]
    known.record(Disruption("the API server did not answer", everywhere=True))
    assert known.covering("u4", "n4").everywhere


def test_a_probe_that_fails_before_it_is_ready_is_a_sentence_not_a_dump():
    from podshare.channel import VerbRun
    run = VerbRun(["hold-lock", "--path", "/data/disk/x"], 5, "p/beta")
    run.finish('{"detail": "Permission denied", "errno": "EACCES", "ok": false, "path": "/data/disk/x"}\n',
               ending={"exit": 0})
    with pytest.raises(KubeError) as raised:
        run.wait_ready(1)
    assert str(raised.value) == "beta's hold-lock failed before it was ready on /data/disk/x: EACCES (Permission denied)"
    run = VerbRun(["hold-lock", "--path", "/data/disk/x"], 5, "p/beta")
    run.finish('{"detail": "Read-only file system", "errno": "EROFS", "ok": false, "path": "/data/disk/x", '
               '"step": "open"}\n', ending={"exit": 1})
    with pytest.raises(KubeError) as raised:
        run.wait_ready(1)
    assert str(raised.value) == "beta could not open /data/disk/x: EROFS (Read-only file system)"
    killed = VerbRun(["hold-mmap"], 5, "p/alpha")
    killed.feed_err('{"path": "/dev/shm/podshare-x", "step": "open"}\n'
                    '{"mapped": true, "path": "/dev/shm/podshare-x", "step": "write"}\n')
    killed.finish("", ending={"signal": "SIGBUS"})
    with pytest.raises(KubeError, match="^alpha's probe was killed by SIGBUS while writing the mapped /dev/shm object$"):
        killed.wait_ready(1)
    silent = VerbRun(["hold-lock"], 5, "p/alpha")
    silent.finish("", ending={"exit": 1})
    with pytest.raises(KubeError, match=r"^the probe verb hold-lock in p/alpha gave no answer \(0 lines where one was "
                                        r"due\): it exited with code 1$"):
        silent.wait_ready(1)


def test_a_harness_errors_message_reaches_the_reports_without_its_class_name():
    from types import SimpleNamespace

    from podshare.outcomes import short_message as _short_message
    crash = SimpleNamespace(message="podshare.errors.KubeError: read the log of p/alpha: 500 connection refused")
    assert _short_message(SimpleNamespace(longrepr=SimpleNamespace(reprcrash=crash))) == (
        "read the log of p/alpha: 500 connection refused")
    # a claim's own words stay as they are, without pytest's class name and introspection (a dict's repr)
    crash.message = ("AssertionError: beta could not open alpha's lock file: EACCES (Permission denied)\nassert False\n"
                     " +  where False = failed_with({'errno': 'EACCES', 'ok': False}, 'EAGAIN')")
    assert _short_message(SimpleNamespace(longrepr=SimpleNamespace(reprcrash=crash))) == (
        "beta could not open alpha's lock file: EACCES (Permission denied)")
    crash.message = "Failed: the pod this claim needs never became ready: pod p is unschedulable"
    assert _short_message(SimpleNamespace(longrepr=SimpleNamespace(reprcrash=crash))) == (
        "the pod this claim needs never became ready: pod p is unschedulable")


class ClusterFacts:
    """Just enough of Kube for podshare.disruption: the pod, node, events and
    log answers a cluster gives at the moment a claim failed."""
    server = "https://api.example:6443"

    def __init__(self, pod=None, node_ready=("True", None, None), log_error=None, events=()):
        self.pod, self.node_ready, self.log_error, self.events = pod, node_ready, log_error, list(events)

    def read_pod(self, namespace, name, timeout=None):
        if self.pod is None:
            raise KubeError(f'read pod {name}: 404 pods "{name}" not found', 404, "NotFound")
        return self.pod

    def node(self, name, timeout=None):
        status, reason, since = self.node_ready
        ready = client.V1NodeCondition(type="Ready", status=status, reason=reason, message="Kubelet stopped posting "
                                       "node status.", last_transition_time=since, last_heartbeat_time=since)
        return client.V1Node(metadata=client.V1ObjectMeta(name=name), status=client.V1NodeStatus(conditions=[ready]))

    def event_records(self, namespace, name, timeout=None):
        return self.events

    def read_log(self, namespace, pod, container, tail=None, timeout=None):
        if self.log_error:
            raise self.log_error
        return "last line\n"


def _live_pod(deleted_at=None, grace=None, phase="Running", reason=None, message=None):
    import datetime as dt
    running = client.V1ContainerState(running=client.V1ContainerStateRunning())
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name="p", uid="u1", deletion_timestamp=deleted_at,
                                     deletion_grace_period_seconds=grace),
        spec=client.V1PodSpec(containers=[], node_name="n1"),
        status=client.V1PodStatus(phase=phase, reason=reason, message=message, container_statuses=[
            client.V1ContainerStatus(name="alpha", image="i", image_id="", ready=True, restart_count=0,
                                     state=running)]))


def _handle():
    return type("Handle", (), {"name": "p", "uid": "u1", "node": "n1", "namespace": "ns"})()


def test_the_facts_name_the_disruption_and_its_source():
    import datetime as dt

    from podshare.disruption import diagnose
    at = dt.datetime(2026, 11, 29, 19, 42, 15, tzinfo=dt.timezone.utc)
    killing = {"type": "Normal", "reason": "Killing", "message": "Stopping container alpha", "time": at,
               "source": "kubelet"}
    gone = diagnose(ClusterFacts(_live_pod(deleted_at=at, grace=5), events=[killing]), [_handle()])
    assert gone.cause == ("pod p was deleted at 19:42:10 UTC (event Killing at 19:42:15 UTC: "
                          "Stopping container alpha)") and gone.pods == {"u1"} and gone.node is None
    assert diagnose(ClusterFacts(None, events=[killing]), [_handle()]).cause == (
        "pod p was deleted (event Killing at 19:42:15 UTC: Stopping container alpha)")
    evicted = diagnose(ClusterFacts(_live_pod(phase="Failed", reason="Evicted",
                                              message="The node was low on resource: memory.")), [_handle()])
    assert evicted.cause == "pod p was evicted (The node was low on resource: memory.)" and not evicted.by_spec
    over = diagnose(ClusterFacts(_live_pod(phase="Failed", reason="Evicted",
                                           message='Usage of EmptyDir volume "disk" exceeds the limit "512Ki". ')),
                    [_handle()])
    assert over.cause == ('pod p was evicted (Usage of EmptyDir volume "disk" exceeds the limit "512Ki".); the '
                          "pod's own spec limits its volume disk to 512Ki: a finding about the spec, not about what "
                          "the containers share") and over.by_spec
    said = {"type": "Warning", "reason": "Evicted", "message": 'Usage of EmptyDir volume "disk" exceeds the limit '
            '"512Ki". ', "time": at, "source": "kubelet"}
    succeeded = diagnose(ClusterFacts(_live_pod(phase="Succeeded"), events=[said]), [_handle()])
    assert succeeded.cause == ('pod p was evicted (event Evicted at 19:42:15 UTC: Usage of EmptyDir volume "disk" '
                               'exceeds the limit "512Ki".) (the API calls it Succeeded: its containers ended cleanly '
                               "on the eviction's SIGTERM, kubernetes#120182); the pod's own spec limits its volume "
                               "disk to 512Ki: a finding about the spec, not about what the containers share")
    assert diagnose(ClusterFacts(_live_pod(phase="Succeeded")), [_handle()]) is None
    container = diagnose(ClusterFacts(_live_pod(phase="Failed", reason="Evicted", message=(
        'Container beta exceeded its local ephemeral storage limit "1Mi". '))), [_handle()])
    assert "the pod's own spec limits the ephemeral storage of container beta to 1Mi" in container.cause
    down = diagnose(ClusterFacts(_live_pod(), node_ready=("Unknown", "NodeStatusUnknown", at)), [_handle()])
    assert down.cause == ("node n1 is NotReady (its Ready condition is Unknown) since 19:42:15 UTC (NodeStatusUnknown: "
                          "Kubelet stopped posting node status.)") and down.node == "n1"
    refused = KubeError('read the log of p/alpha: 500 dial tcp 10.0.0.1:10250: connect: connection refused', 500)
    silent = diagnose(ClusterFacts(_live_pod(), node_ready=("True", "KubeletReady", at), log_error=refused),
                      [_handle()])
    assert silent.cause == ("node n1's kubelet is not answering: the API server could not reach it to read the log "
                            "of p/alpha: 500 dial tcp 10.0.0.1:10250: connect: connection refused; the API last "
                            "heard from it at 19:42:15 UTC") and silent.node == "n1"


def test_a_pod_and_node_in_good_health_are_no_disruption():
    from podshare.disruption import diagnose
    assert diagnose(ClusterFacts(_live_pod()), [_handle()]) is None
    # a refusal that is not the kubelet's (a container not started yet: 400) says nothing either
    assert diagnose(ClusterFacts(_live_pod(), log_error=KubeError("read the log: 400 waiting to start", 400)),
                    [_handle()]) is None
    assert diagnose(ClusterFacts(None), [_handle()], pod_level=False) is None  # another claim's pod: not this cause


def test_podshare_history_exits_2_when_the_newest_run_could_not_check_some_claims(tmp_path, capsys):
    from podshare.cli import show_history
    from podshare.history import History
    checks = [{"id": "a", "claim": "A", "claim_id": "a", "runtime_class": None, "outcome": o, "duration_s": 1}
              for o in ("passed", "could-not-check")]
    History.record(tmp_path / "store", {"run": {"id": "r1", "started_at": "2026-11-29T00:00:00+00:00"},
                                        "cluster": {}, "checks": checks})
    assert show_history(tmp_path / "store", tmp_path / "out", 14) == 2
    assert "(1 passed, 0 failed, 1 could not check)" in capsys.readouterr().out


def test_failures_with_one_errno_for_one_container_are_one_cause_with_the_evidence_of_why():
    """Needs attention groups the claims beta fails with EACCES into one item that
    says why, from the evidence: each probe container's uid and groups, and the
    refused objects' owners and modes; a lone failure stays an item of its own."""
    from podshare.records import RunInfo
    from podshare.html_report import render_html
    from podshare.markdown_report import render_markdown
    from podshare.report import RunReport

    def refused(claim, path):
        return _check("failed", claim_id=claim, message=f"beta could not open alpha's file: EACCES (Permission denied)",
                      evidence={"transcript": [{"pod": "probe-1", "container": "beta", "command": "try-lock",
                                                "result": {"ok": False, "errno": "EACCES", "step": "open",
                                                           "path": path, "object": {"path": path, "mode": "0644",
                                                                                    "uid": 65532, "gid": 65532}}}]})
    cluster = {"probe_containers": {"probe-1": {
        "alpha": {"uid": 65532, "gid": 65532, "groups": [65532], "mounts": {}},
        "beta": {"uid": 65533, "gid": 65533, "groups": [65532], "mounts": {}}}}}
    report = RunReport(run=RunInfo(id="r", started_at="2026-11-29T22:00:00+00:00"), cluster=cluster, checks=[
        refused("s.py::lock", "/data/disk/a.lock"), refused("s.py::map", "/data/disk/b.map"),
        _check("failed", claim_id="s.py::other", message="beta read other bytes than alpha wrote")])
    why = ("alpha runs as uid 65532, gid 65532 (groups 65532); beta runs as uid 65533, gid 65533 (groups 65532); "
           "/data/disk/a.lock is mode 0644, owner 65532:65532; /data/disk/b.map is mode 0644, owner 65532:65532")
    summary = render_markdown(report.findings())
    assert f"**2 claims, one cause: beta got EACCES**: {why} (`lock[runc]`, `map[runc]`)" in summary
    assert "`other[runc]`: beta read other bytes than alpha wrote" in summary
    assert summary.count("beta could not open alpha's file") == 1 + 2  # once in attention, twice in the table
    page = render_html(report.findings())
    assert "<b>2 claims, one cause: beta got EACCES</b>: " + why.replace("'", "&#x27;") in page


def test_a_ready_line_split_over_two_frames_is_ready():
    """The exec stream may cut the holder's ready line anywhere: it is read whole,
    so a verb that said it was ready and then finished is not "exited before it was ready"."""
    from podshare.channel import VerbRun
    run = VerbRun(["hold-flock"], timeout=5, where="p/alpha")
    run.feed_err('{"ready": ')
    assert not run._ready.is_set()
    run.feed_err('true}\n')
    run.finish(out='{"ok": true}\n')
    run.wait_ready(1)  # no error: it said ready
    assert run.answer().json() == {"ok": True}


def test_an_older_results_json_reads_into_todays_records_and_joins_the_trend(tmp_path):
    """A results.json written before the version field (no nodes, no API cost, no
    could-not-check) reads into the records, renders, and is one trend with a run
    of today: the claim that held then and not now is newly failing."""
    from podshare.history import History
    from podshare.records import NEWLY_FAILING, RESULTS_VERSION, RunInfo
    from podshare.markdown_report import render_markdown
    old = json.loads((Path(__file__).parent / "data" / "results-v1.json").read_text())
    assert "version" not in old
    report = RunReport.from_json(old)
    assert report.run == RunInfo.from_json(old["run"]) and report.run.api_cost == {} and report.run.workers is None
    assert [c.node for c in report.checks] == [None, None] and not any(c.per_node for c in report.checks)
    assert "2 passed" in render_markdown(report.findings())
    now = RunReport(run=RunInfo(id="20261129-031700-d4e5f6", started_at="2026-11-29T03:17:00+00:00"), cluster={},
                    checks=[Check.from_json({**old["checks"][0], "outcome": "failed", "message": "beta: other"}),
                            Check.from_json(old["checks"][1])]).to_json()
    assert now["version"] == RESULTS_VERSION
    history = History([old, now])
    assert history.changes() == {"suites/test_identity.py::test_hostname_is_the_pod_name_in_every_container @ default":
                                 NEWLY_FAILING}
    History.record(tmp_path, old)
    History.record(tmp_path, now)
    assert History.load(tmp_path).changes() == history.changes()


def test_readme_options_table_is_generated_from_the_one_options_table():
    """docs/options.md's options table is podshare/settings.py's OPTIONS, rendered: an
    option added, renamed or re-defaulted without regenerating it fails here, and
    `python -m podshare.options_doc --check` says so too."""
    from podshare import options_doc
    project = Path(__file__).resolve().parent.parent
    assert options_doc.DOC == project / "docs" / "options.md"
    doc = options_doc.DOC.read_text()
    assert options_doc.rewritten(doc) == doc, "run: python -m podshare.options_doc"
    assert all(f"| `{o.flag}` |" in doc for o in options_doc.OPTIONS)
    assert options_doc.main(["--check"]) == 0
    assert options_doc.BEGIN not in (project / "README.md").read_text(), "the table lives in docs/options.md only"


def test_option_precedence_is_command_line_then_environment_then_ini_then_default(monkeypatch):
    """As settings.py documents it (and most tools order them)."""
    from podshare.settings import Settings

    class Config:  # what Settings reads of pytest's config
        def __init__(self, given: dict, ini: dict) -> None:
            self.given, self.ini = given, ini

        def getoption(self, dest):
            return self.given.get(dest)

        def getini(self, name):
            return self.ini.get(name, "")

    timeout = "podshare_pod_timeout"
    monkeypatch.delenv("PODSHARE_POD_TIMEOUT", raising=False)
    assert Settings.from_config(Config({}, {})).pod_timeout == 120.0
    assert Settings.from_config(Config({}, {timeout: "30"})).pod_timeout == 30.0
    monkeypatch.setenv("PODSHARE_POD_TIMEOUT", "40")
    assert Settings.from_config(Config({}, {timeout: "30"})).pod_timeout == 40.0
    assert Settings.from_config(Config({timeout: "50"}, {timeout: "30"})).pod_timeout == 50.0


def test_leftovers_outrank_could_not_check_in_the_exit_code():
    """README's exit codes: a run that left objects behind exits 1, also when some or
    all of its claims could not be checked (2 would let the user-namespace step's
    tolerated 2 hide them); a broken promise stays 1; nothing left: as before."""
    from types import SimpleNamespace as NS

    from podshare.run_end import exit_status
    unchecked = NS(checks={"a": NS(outcome="could-not-check"), "b": NS(outcome="passed")}, fatal=None)
    fatal = NS(checks={}, fatal="cannot reach the API server")
    held = NS(checks={"a": NS(outcome="passed")}, fatal=None)
    assert exit_status(unchecked, pytest.ExitCode.TESTS_FAILED, []) == 2
    assert exit_status(unchecked, pytest.ExitCode.TESTS_FAILED, ["namespace/x"]) == 1
    assert exit_status(fatal, pytest.ExitCode.TESTS_FAILED, []) == 2
    assert exit_status(fatal, pytest.ExitCode.TESTS_FAILED, ["namespace/x"]) == 1
    assert exit_status(held, pytest.ExitCode.OK, []) == 0
    assert exit_status(held, pytest.ExitCode.OK, ["namespace/x"]) == 1
    assert exit_status(held, pytest.ExitCode.USAGE_ERROR, ["namespace/x"]) == 4


# docs/architecture.md's layers, top first: a module imports only its own layer or those below.
LAYERS = [
    {"plugin", "fixtures", "session", "dimensions", "claim_diagnosis", "outcomes", "recovery", "controller",
     "failure_block", "progress",
     "run_end", "junit", "settings", "options_doc", "cli", "nightly", "__main__", "conformance_image",
     "conformance_select"},
    {"cluster", "factory", "across_pods", "pods", "term_log", "manifests", "waits", "verbs", "channel", "disruption", "delivery",
     "unpack_probes", "gc", "images", "store", "confinement", "fence", "namespace_cap"},
    {"kube", "kube_calls", "errors", "retry", "evidence", "node_features", "node_facts"},
    {"report", "findings", "common_causes", "markdown_report", "html_report", "known_divergences", "signatures",
     "metrics", "history"},
    {"records", "markers", "__init__"},
]


def test_layers_data_flows_down_with_no_cycle_and_small_modules():
    """The import graph of podshare/ as docs/architecture.md draws it."""
    import ast
    package = Path(__file__).resolve().parent.parent / "podshare"
    layer = {m: i for i, names in enumerate(LAYERS) for m in names}
    graph: dict[str, set[str]] = {}
    for path in package.glob("*.py"):
        tree = ast.parse(path.read_text())
        assert len(path.read_text().splitlines()) <= (249 if path.name == "plugin.py" else 400), \
            f"{path.name} is too long: the plugin only wires hooks to the modules that do the work"
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                found |= {node.module} if node.module else {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("podshare."):
                found.add(node.module.split(".")[1])
        graph[path.stem] = {m.split(".")[0] for m in found}
    assert set(graph) <= set(layer), f"not placed in a layer: {sorted(set(graph) - set(layer))}"
    up = [(a, b) for a, bs in graph.items() for b in bs if b in layer and layer[b] < layer[a]]
    assert not up, f"imports that run up a layer: {up}"
    seen: dict[str, int] = {}

    def visit(m: str, path: tuple[str, ...]) -> None:
        assert m not in path, f"import cycle: {' -> '.join(path + (m,))}"
        if seen.get(m):
            return
        for n in graph.get(m, ()):
            visit(n, path + (m,))
        seen[m] = 1
    for m in graph:
        visit(m, ())


def test_a_known_divergence_signature_tells_the_listed_failure_from_another():
    """A listed claim is a known divergence only where its failure looks as listed:
    a probe step's errno, an evidence field's value, or the claim's own words."""
    from podshare import signatures
    mq = [{"pod": "p", "container": "alpha", "command": "posix-mq-send",
           "result": {"ok": False, "step": "send", "errno": "ENOSYS"}}]
    assert signatures.any_matches("send: ENOSYS", {}, mq, "beta got nothing")
    assert not signatures.any_matches("send: EAGAIN", {}, mq, "beta got nothing")
    assert signatures.any_matches(["open: EROFS", "send: ENOSYS"], {}, mq, "")
    assert signatures.any_matches("evidence filesystem.fstype: 9p", {"filesystem": {"fstype": "9p"}}, [], "")
    assert not signatures.any_matches("evidence filesystem.fstype: 9p", {"filesystem": {"fstype": "tmpfs"}}, [], "")
    assert signatures.any_matches("evidence beta_acquired: true", {"beta_acquired": True}, [], "")
    assert signatures.any_matches("message: takes the lock", {}, [], "beta takes the lock alpha holds")
    assert signatures.seen(mq, "x") == "send: ENOSYS" and signatures.seen([], "it broke") == "message: it broke"
    assert signatures.valid(["send: ENOSYS", "message: x"]) and not signatures.valid("ENOSYS") and not signatures.valid([])


def test_a_known_divergences_file_without_signatures_is_refused(tmp_path):
    from podshare.known_divergences import KnownDivergences
    bare = tmp_path / "known.yaml"
    bare.write_text('- {claim: "s.py::t", reason: "gVisor", runtime_class: gvisor}\n')
    with pytest.raises(ValueError, match="seen"):
        KnownDivergences.load(str(bare))
    bare.write_text('- {claim: "s.py::t", reason: "gVisor", runtime_class: gvisor, seen: "send: ENOSYS"}\n')
    assert KnownDivergences.load(str(bare)).entry("s.py::t", "gvisor")["seen"] == "send: ENOSYS"


def test_a_container_the_kubelet_restarted_mid_run_is_named_as_the_api_says():
    """A probe container OOM-killed (or ending with an error) and restarted by the
    kubelet while claims run: the cause names the container, the reason, the exit
    code and, where the pod's own spec set the limit it ran into, says that this is
    a finding about the spec. A restart a claim made itself is no disruption."""
    import datetime as dt

    from podshare.disruption import diagnose
    live = _live_pod()
    live.spec.containers = [client.V1Container(name="alpha", resources=client.V1ResourceRequirements(
        limits={"memory": "20Mi"}))]
    status = live.status.container_statuses[0]
    status.restart_count = 1
    status.last_state = client.V1ContainerState(terminated=client.V1ContainerStateTerminated(
        exit_code=137, reason="OOMKilled", finished_at=dt.datetime(2026, 12, 2, 6, 1, 2, tzinfo=dt.timezone.utc)))
    handle = _handle()
    handle.restarts_seen = {"alpha": 0}
    found = diagnose(ClusterFacts(live), [handle])
    assert found.cause == ("container alpha of pod p was restarted by the kubelet at 06:01:02 UTC: OOMKilled "
                           "(exit code 137); the pod's own spec limits its memory to 20Mi: a finding about the spec, "
                           "not about what the containers share") and found.container == "alpha" and found.pods == {"u1"}
    handle.restarts_seen = {"alpha": 1}  # the claim restarted it itself
    assert diagnose(ClusterFacts(live), [handle]) is None
    status.restart_count = 3  # a claim that allowed any number (Pod.allow_restarts: a sandbox it ends)
    handle.restarts_seen = {"alpha": float("inf")}
    assert diagnose(ClusterFacts(live), [handle]) is None


def test_a_node_with_a_skipped_claim_is_not_said_to_keep_every_promise():
    """A skip is not a pass: the node summary names the skip and its reason."""
    from podshare.findings import node_summary
    from podshare.records import ClusterFacts
    checks = [Check(id=f"s.py::{t}[{n}]", claim=f"Claim {t}.", outcome=o, duration_s=0, node=n, per_node=True,
                    claim_id=f"s.py::{t}", message=m)
              for n, t, o, m in [("a", "t", "passed", ""), ("a", "v6", "passed", ""), ("b", "t", "passed", ""),
                                 ("b", "v6", "skipped", "the pod's network namespace has no ::1")]]
    assert node_summary(checks, ClusterFacts(), None) == [
        "2 nodes checked: a keeps all 2 promises",
        "b skipped 1 (not counted as kept): Claim v6 (the pod's network namespace has no ::1)"]


def test_a_create_that_met_its_quota_being_updated_is_made_again():
    """Pods created side by side in a namespace with a ResourceQuota: the API may
    answer one 409 Conflict on resourcequotas (CI met it); nothing was made, so the
    same create goes again, while any other 409 (AlreadyExists) is its answer."""
    busy = KubeError('create pod p in ns: 409 Operation cannot be fulfilled on resourcequotas "podshare-quota": '
                     'the object has been modified; please apply your changes to the latest version and try again',
                     409, "Conflict")
    assert busy.quota_busy
    assert not KubeError('create pod p in ns: 409 pods "p" already exists', 409, "AlreadyExists").quota_busy


def test_an_object_that_already_exists_is_not_a_busy_quota():
    """Only the quota's own conflict is made again; AlreadyExists on a ResourceQuota is an answer."""
    assert not KubeError('create resourcequota podshare-quota in ns: 409 resourcequotas "podshare-quota" already '
                         'exists', 409, "AlreadyExists").quota_busy


def test_a_node_lacks_image_volumes_by_its_runtime_and_version_only():
    """containerd before 2.1 and cri-dockerd cannot mount image volumes: one line
    naming the runtime; CRI-O, containerd 2.1 on, and a version that does not
    parse are left to their pods."""
    from podshare.node_features import lacks, needed_by
    from podshare.records import NodeFacts

    def on(runtime: str) -> str | None:
        return lacks("image volumes", "n1", NodeFacts(container_runtime=runtime))

    assert on("containerd://1.6.20") == ("node n1's containerd 1.6.20 cannot mount image volumes "
                                         "(containerd 2.1 added them: containerd/containerd#10579)")
    assert on("containerd://2.0.5") and on("docker://28.1.1")
    assert on("containerd://2.1.0") is None and on("containerd://v2.4.2") is None
    assert on("cri-o://1.33.2") is None and on("containerd://devel") is None and on("") is None
    assert needed_by({"volumes": [{"name": "a", "image": None}, {"name": "b", "image": {"reference": "x"}}]}) == [
        "image volumes"]
    assert needed_by({"volumes": [{"name": "a", "image": None, "empty_dir": {}}]}) == [] and needed_by({}) == []


def test_a_node_lacks_restart_of_all_containers_by_its_declared_features_or_kubelet():
    """KEP-5532's RestartAllContainers: a node that declares the gate has it; one that
    declares features without it, or a kubelet before 1.36 declaring none, lacks it
    (one line naming which); a newer kubelet declaring nothing is left to its pods.
    A pod needs it where a restart rule of any container names the action."""
    from podshare.node_features import lacks, needed_by
    from podshare.records import NodeFacts

    def on(kubelet: str, declared: list[str]) -> str | None:
        return lacks("restart all containers", "n1", NodeFacts(kubelet=kubelet, declared_features=declared))

    assert on("v1.37.2", ["RestartAllContainersOnContainerExits"]) is None
    assert on("v1.35.4", ["RestartAllContainersOnContainerExits"]) is None  # its alpha gate on
    assert on("v1.35.4", []) == ("node n1's kubelet v1.35.4 restarts no pod's containers all at once: "
                                 "RestartAllContainersOnContainerExits is alpha and off by default before 1.36 "
                                 "(KEP-5532), and the node declares no features")
    assert "is not among them" in on("v1.37.2", ["InPlacePodVerticalScaling"])
    assert on("v1.37.2", []) is None and on("devel", []) is None
    rule = {"action": "RestartAllContainers", "exitCodes": {"operator": "In", "values": [42]}}
    assert needed_by({"containers": [{"name": "a", "restartPolicyRules": [rule]}]}) == ["restart all containers"]
    assert needed_by({"init_containers": [{"name": "i", "restart_policy_rules": [rule]}], "containers": None}) == [
        "restart all containers"]
    assert needed_by({"containers": [{"name": "a", "restartPolicyRules": [{**rule, "action": "Restart"}]}]}) == []


def test_a_failed_claim_is_three_lines_on_the_terminal():
    """What broke first (pytest's short summary shows it), the claim's sentence, and
    where its evidence is, with the way back to the traceback."""
    from podshare.evidence import Evidence
    from podshare.failure_block import block
    ev = Evidence()
    ev.transcript += [{}, {}]
    ev.pods += [object()]
    failed = block("A file is shared.", "suites/t.py::t[disk]", "beta could not open\n  alpha's file: ENOENT", ev,
                   "reports")
    # pytest's short summary and junit's message attribute show the first line only, on CI too
    assert failed.reprcrash.message == "beta could not open alpha's file: ENOENT"
    assert str(failed).splitlines() == [
        "beta could not open alpha's file: ENOENT", "claim: A file is shared.",
        "evidence: 2 probe answers, the state of 1 pod in reports/results.json (suites/t.py::t[disk]); "
        "--tb=short shows the traceback"]


def test_a_failed_claims_block_crosses_from_an_xdist_worker_as_a_block():
    """xdist sends a longrepr that is not a traceback as its text: the controller
    makes it a block again, or its short summary would print three lines a claim on CI."""
    import json as json_
    from _pytest.reports import TestReport
    from podshare import failure_block
    report = TestReport("suites/t.py::t", ("suites/t.py", 1, "t"), {}, "failed", None, "call")
    failure_block.mark(report, failure_block.Block(["beta got EACCES", "claim: c", "evidence: e"]))
    wire = TestReport._from_json(json_.loads(json_.dumps(report._to_json())))
    assert isinstance(wire.longrepr, str)
    failure_block.restore(wire)
    assert wire.longrepr.reprcrash.message == "beta got EACCES" and str(wire.longrepr) == str(report.longrepr)
    plain = TestReport("suites/t.py::u", ("suites/t.py", 2, "u"), {}, "failed", "AssertionError: x\ny", "call")
    failure_block.restore(plain)  # an unmarked failure keeps its text
    assert plain.longrepr == "AssertionError: x\ny"


def test_progress_is_one_line_per_group_that_fits_the_terminal():
    """Claims done of each node and class, what did not pass so far; finished groups
    give way to the running ones when the terminal is narrow."""
    from collections import Counter
    from podshare.progress import label, line
    segments = ["vm", "vm-current", "runc", "gvisor", "userns"]
    assert label("gvisor|userns|vm-current", segments) == "vm-current/gvisor/userns"
    assert label("default", segments) == "claims"
    totals = {"vm/runc": 50, "vm-current/gvisor": 50}
    done = Counter({"vm/runc": 50, "vm-current/gvisor": 31})
    bad = {"failed": Counter({"vm-current/gvisor": 2}), "error": Counter(), "could not check": Counter({"vm/runc": 1})}
    assert line(totals, done, bad, 161, 200) == (
        "vm/runc 50/50, 1 could not check | vm-current/gvisor 31/50, 2 failed   81/100 in 2m41s")
    assert line(totals, done, bad, 161, 60) == "vm-current/gvisor 31/50, 2 failed | 1 done   81/100 in 2m41s"
    assert len(line(totals, done, bad, 161, 20)) == 20
    assert line({"claims": 3}, Counter({"claims": 1}), {"failed": Counter()}, 5, 80) == "claims 1/3 in 0m05s"


def test_a_pod_needing_image_volumes_is_kept_off_the_nodes_without_them():
    """Through the scheduler, one field requirement per node (a field selector's
    NotIn takes one value)."""
    from podshare.manifests import keep_off_nodes
    from podshare.node_features import needed_by
    spec = {"volumes": [{"name": "scratch", "emptyDir": {}}, {"name": "image", "image": {"reference": "x"}}]}
    assert needed_by(spec) == ["image volumes"]
    keep_off_nodes(spec, ["vm-sandboxed", "vm"])
    assert spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"] == [
        {"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["vm"]},
                         {"key": "metadata.name", "operator": "NotIn", "values": ["vm-sandboxed"]}]}]


RUNTIMES = {"default": "gvisor-hinted", "handlers": {
    "runc": {"shim": "io.containerd.runc.v2", "version": "runc version 1.5.3"},
    "gvisor-hinted": {"shim": "io.containerd.runsc.v1", "version": "runsc version v0.0.0-20260905035102-160fafc42237",
                      "shim_version": "v0.0.0-20260905035102-160fafc42237+podshare.3patches", "platform": "systrap",
                      "hints": "GKE Sandbox emptyDir mount annotations"}}}


def _node(annotations: dict | None) -> client.V1Node:
    return client.V1Node(
        metadata=client.V1ObjectMeta(name="n1", labels={"podshare.io/pool": "sandboxed"}, annotations=annotations),
        spec=client.V1NodeSpec(),
        status=client.V1NodeStatus(node_info=client.V1NodeSystemInfo(
            architecture="amd64", boot_id="b", container_runtime_version="containerd://2.4.2", kernel_version="6.18",
            kube_proxy_version="", kubelet_version="v1.37.2", machine_id="m", operating_system="linux",
            os_image="Debian", system_uuid="u")))


def test_a_nodes_runtimes_come_from_its_annotation_and_both_headers_name_them():
    """The bundled cluster annotates each node with its runtimes' own words
    (cluster/runtime_versions.py); a node without the annotation (any real
    cluster's) has none, and the reports then say nothing of them."""
    from podshare.node_facts import node_facts
    from podshare.html_report import render_html
    from podshare.markdown_report import render_markdown
    said = node_facts(_node({records.RUNTIMES_ANNOTATION: json.dumps(RUNTIMES)}))
    assert said.runtimes == RUNTIMES
    assert node_facts(_node(None)).runtimes is None
    assert node_facts(_node({records.RUNTIMES_ANNOTATION: "not json"})).runtimes is None
    assert records.NodeFacts.from_json(said.to_json()).runtimes == RUNTIMES  # results.json keeps them
    line = ("runtimes of n1 (default gvisor-hinted): gvisor-hinted: runsc version v0.0.0-20260905035102-160fafc42237 "
            "(io.containerd.runsc.v1, shim_version v0.0.0-20260905035102-160fafc42237+podshare.3patches, "
            "platform systrap, hints GKE Sandbox emptyDir mount annotations); "
            "runc: runc version 1.5.3 (io.containerd.runc.v2)")
    checks = [Check(id="s.py::t", claim="T", outcome="passed", duration_s=0.1, node=n) for n in ("n1", "n2")]
    many = RunReport(run=RunInfo(id="r"), cluster={"nodes": {"n1": said.to_json(), "n2": {"pool": "default"}}},
                     checks=checks).findings()
    assert many.runtimes == [line]
    assert f"- {line}" in render_markdown(many)
    assert f'<p class="meta">{line}</p>' in render_html(many)
    one = RunReport(run=RunInfo(id="r"), cluster={"node": "n1", "runtimes": RUNTIMES}, checks=checks[:1]).findings()
    assert one.runtimes == [line]
    unsaid = RunReport(run=RunInfo(id="r"), cluster={"node": "n1"}, checks=checks[:1]).findings()
    assert unsaid.runtimes == [] and "runtimes of" not in render_markdown(unsaid) + render_html(unsaid)


def test_the_gvisor_hints_policy_is_a_v1_mutating_admission_policy_for_the_hinted_class_only():
    """cluster/gvisor-hints.yaml as far as it can be checked without an API
    server: its kinds and API version, the binding naming the policy, a CREATE of
    pods only, the match condition naming the hinted class (which the sandboxed
    pool's RuntimeClass is), and the hint keys and values the shim reads
    (containerd2.py's check sends the same)."""
    import yaml as pyyaml

    from cluster import addons, workers
    from cluster.containerd2 import HINTS
    policy, binding = pyyaml.safe_load_all((Path(__file__).parents[1] / "cluster" / "gvisor-hints.yaml").read_text())
    assert {policy["kind"], binding["kind"]} <= set(addons.PATHS)
    assert policy["apiVersion"] == binding["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    spec = policy["spec"]
    assert spec["matchConstraints"]["resourceRules"] == [
        {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}]
    [condition] = spec["matchConditions"]
    assert "'gvisor-hinted'" in condition["expression"] and workers.RUNTIME_CLASSES["gvisor-hinted"][0] == "gvisor-hinted"
    [mutation] = spec["mutations"]
    assert mutation["patchType"] == "JSONPatch" and "jsonpatch.escapeKey" in mutation["jsonPatch"]["expression"]
    text = " ".join(v["expression"] for v in spec["variables"])
    for key, value in HINTS.items():  # dev.gvisor.spec.mount.<volume>.<field> = value
        field = key.rsplit(".", 1)[1]
        assert f"'.{field}'" in text and f"'{value}'" in text, key
    # a user's own annotation wins: only the missing ones are patched in
    assert "!(h[0] in variables.annotations)" in text
    for expression in [condition["expression"], mutation["jsonPatch"]["expression"], text]:
        assert expression.count("(") == expression.count(")") and expression.count("[") == expression.count("]")


def test_gvisor_runs_under_its_own_shim_on_the_containerd_2_pools_only():
    """The nodes' configs and RuntimeClasses agree: gVisor's handlers (its shim,
    a runsc.toml each, systrap, the node's kubelet pods directory) are on the
    containerd 2 pools; RuntimeClass gvisor selects the current pool, gvisor-hinted
    the sandboxed one and tolerates its taint; containerd 1.6 has no gVisor."""
    from cluster import configs, workers
    toml = configs.containerd2_config(Path("/d"), Path("/bin"), "pause:1", gvisor=Path("/gv"))
    assert "runtime_type = 'io.containerd.runsc.v1'" in toml and "runtime_path = '/gv/containerd-shim-runsc-v1'" in toml
    assert "ConfigPath = '/d/runtimes/gvisor-hinted.toml'" in toml and "TypeUrl = 'io.containerd.runsc.v1.options'" in toml
    runsc = configs.runsc_toml(configs.containerd2_runtimes(Path("/bin"), Path("/d/runtimes"), Path("/gv"))["gvisor"],
                               Path("/k/pods"))
    assert runsc == ("binary_name = '/gv/runsc'\nroot = '/d/runtimes/gvisor'\nkubelet_pods_dir = '/k/pods'\n"
                     "[runsc_config]\n  platform = 'systrap'\n")
    assert "gvisor" not in configs.containerd_config(Path("/d"), "pause:1", "runc", "")
    pools = {p.name: p for p in workers.POOLS}
    for name, (handler, scheduling) in workers.RUNTIME_CLASSES.items():
        admitted = [p for p in pools.values() if all(p.labels.get(k) == v
                                                     for k, v in scheduling.get("nodeSelector", {}).items())]
        if handler in configs.GVISOR_HANDLERS:
            assert admitted and all(p.stack == "current" for p in admitted), name
            assert all(t.split(":")[0] in {f"{x['key']}={x['value']}" for x in scheduling.get("tolerations", [])}
                       for p in admitted for t in p.taints), name
    assert [p.name for p in pools.values() if p.labels.get("podshare.io/gvisor") == "plain"] == ["current"]
    assert pools["sandboxed"].default_runtime == "gvisor-hinted" and pools["sandboxed"].stack == "current"
    assert workers.runtime_class("gvisor-hinted")["scheduling"]["nodeSelector"] == pools["sandboxed"].labels


def test_a_workers_facts_join_the_controllers_without_erasing_what_it_knows():
    """A worker that never read a node's runtimes (None) leaves the controller's;
    dicts and lists join; what the controller lacks comes from the worker."""
    from podshare.records import ClusterFacts
    mine = ClusterFacts(runtimes={"default": "runc"}, runtime_classes={"runc": "runc"})
    mine.merge(ClusterFacts(node="vm", runtime_classes={"crun": "crun"}))
    assert mine.runtimes == {"default": "runc"} and mine.node == "vm"
    assert mine.runtime_classes == {"runc": "runc", "crun": "crun"}


@pytest.mark.parametrize("how", ["restart_container", "exit_by_restart_rule"])
def test_a_restart_the_claim_makes_is_no_disruption_while_it_is_waited_for(monkeypatch, how):
    """A restart slow enough that the wait looks for disruptions meanwhile (CI's
    loaded node: a restart of all containers past the check's period) is the
    claim's own: the wait ends on the restarted pod, not on "restarted by the
    kubelet". A second restart nobody asked for still is one."""
    from podshare import pods, waits
    from podshare.disruption import Disruptions
    monkeypatch.setattr(waits, "LOOK_EVERY", 0.0)  # every look also diagnoses
    live = _live_pod()
    live.status.container_statuses.append(client.V1ContainerStatus(
        name="beta", image="i", image_id="", ready=True, restart_count=0, state=live.status.container_statuses[0].state))
    looks = []

    class Restarting(ClusterFacts):
        def read_pod(self, namespace, name, timeout=None):
            looks.append(name)
            if len(looks) == 3:  # the kubelet restarting: counts up, not ready yet
                for s in live.status.container_statuses[:1 if how == "restart_container" else 2]:
                    s.restart_count, s.ready = 1, False
            if len(looks) == 6:
                for s in live.status.container_statuses:
                    s.ready = True
            return live

    kube = Restarting(live)
    pod = pods.Pod(kube, "ns", {"metadata": {"name": "p"}}, timeout=30, disruptions=Disruptions())
    pod.uid, pod.node, pod.restarts_seen = "u1", "n1", {"alpha": 0, "beta": 0}
    monkeypatch.setattr(pod, "container", lambda name: type("C", (), {"run": lambda self, *a, **k: {"ok": True}})())
    monkeypatch.setattr(pods, "sandbox_refused", lambda kube, pod: None, raising=False)
    monkeypatch.setattr(waits, "sandbox_refused", lambda kube, pod: None)
    if how == "restart_container":
        assert pod.restart_container("alpha") == 1
    else:
        assert pod.exit_by_restart_rule("alpha", 42) == {"alpha": 1, "beta": 1}
    assert len(looks) >= 6
    live.status.container_statuses[1].restart_count = 2
    from podshare.disruption import diagnose
    assert diagnose(kube, [pod]).cause.startswith("container beta of pod p was restarted by the kubelet")


def test_only_a_node_that_cannot_confirm_deletions_cuts_the_cleanup_wait():
    """A cordoned or tainted node that is Ready still deletes pods: the run waits for
    its namespace as anywhere; a node down or the API gone cannot confirm anything."""
    from podshare.disruption import Disruption
    assert not Disruption("node n is cordoned", node="n", node_ready=True).hides_cleanup
    assert Disruption("node n is NotReady", node="n").hides_cleanup
    assert Disruption("the API server did not answer", everywhere=True).hides_cleanup
    assert not Disruption("pod p was deleted", pods=frozenset({"u1"})).hides_cleanup


def test_the_runs_worker_groups_and_their_segments_come_from_the_dimensions_that_split_pods():
    """One table of each dimension's values (dimensions.run_values) gives the parameters,
    the workers' groups and the progress line's segments: a volume kind shares its pods."""
    from types import SimpleNamespace as NS

    from podshare.dimensions import groups_of_run, run_values, segments_of_run
    both = NS(runtime_class=["runc", "gvisor"], user_namespaces="both", storage_class=["local-path"])
    assert segments_of_run(both, ["vm", "vm-current"]) == ["vm", "vm-current", "runc", "gvisor", "hostusers", "userns"]
    assert groups_of_run(both, ["vm", "vm-current"]) == 8
    assert run_values(both, [])["volume"] == ["emptyDir", "emptyDir:Memory", "pvc:local-path"]
    plain = NS(runtime_class=[], user_namespaces="off", storage_class=[])
    assert segments_of_run(plain, []) == [] and groups_of_run(plain, []) == 1


def test_leftovers_outrank_a_worker_that_ended_without_its_results(tmp_path):
    """run_end.finish: a worker that ended without its results makes the run
    could-not-check (2), but a run that also left objects behind exits 1 (the
    user-namespace step tolerates 2), and its record says both."""
    import json as _json
    from collections import Counter
    from types import SimpleNamespace as NS

    from podshare.records import ClusterFacts
    from podshare.run_end import finish

    def ended(leftovers):
        cluster = NS(leftovers=leftovers, namespace="podshare-r1", warnings=[], facts=ClusterFacts(),
                     confinement="confined: test")
        settings = NS(pushgateway=None, history_dir=None, reports_dir=str(tmp_path / "reports"))
        ps = NS(checks={}, fatal=None, collection_errors=[], cluster=cluster, run_id="r1",
                started_at="2026-01-01T00:00:00Z", started=0.0, interrupted=None, settings=settings)
        session = NS(exitstatus=pytest.ExitCode.OK, config=NS(invocation_params=NS(args=())))
        controller = NS(remove_what_workers_left=lambda: None, ordered_checks=lambda: None,
                        namespaces=["podshare-r1-gw0"], warnings=[], cost=Counter(),
                        problems=["worker gw0 ended without its results: no output"])
        ending = finish(ps, session, controller)
        results = next(p for p in ending.paths if p.name.endswith(".json"))
        return session.exitstatus, _json.loads(results.read_text())["run"]

    status, run = ended([])
    assert status == pytest.ExitCode.INTERRUPTED and run["exit_status"] == 2
    assert "worker gw0 ended without its results" in run["fatal"]
    status, run = ended(["namespace/podshare-r1-gw0"])
    assert status == pytest.ExitCode.TESTS_FAILED and run["exit_status"] == 1
    assert "worker gw0 ended without its results" in run["fatal"]


def test_the_run_id_nightly_is_reserved(monkeypatch):
    """podshare-<run id> is a run's namespace, and podshare-nightly is the nightly's:
    a run may not take the id nightly (the admission policy refuses the namespace
    too, tests/test_confinement.py), so none makes it before the nightly is installed."""
    from podshare.settings import Settings

    class Config:
        def __init__(self, given: dict) -> None:
            self.given = given

        def getoption(self, dest):
            return self.given.get(dest)

        def getini(self, name):
            return ""

    monkeypatch.delenv("PODSHARE_RUN_ID", raising=False)
    assert Settings.from_config(Config({"podshare_run_id": "nightly-1"})).run_id == "nightly-1"
    with pytest.raises(pytest.UsageError, match="--run-id nightly is reserved"):
        Settings.from_config(Config({"podshare_run_id": "nightly"}))
    monkeypatch.setenv("PODSHARE_RUN_ID", "nightly")
    with pytest.raises(pytest.UsageError, match="--run-id nightly is reserved"):
        Settings.from_config(Config({}))


def test_every_volume_claim_says_its_volume_kind():
    """results.json's `volume` on every check marked `volume`: a claim run once per
    kind has its parameter, one on a kind of its own (image, configMap, projected,
    a subPath of an emptyDir, the Memory emptyDir's size) its volume_kind marker."""
    script = ("import json, sys, pytest\n"
              "from podshare.dimensions import of_item\n"
              "class Grab:\n"
              "    def pytest_collection_finish(self, session):\n"
              "        print('ITEMS', json.dumps([[i.nodeid, i.get_closest_marker('volume') is not None,\n"
              "                                    of_item(i).volume] for i in session.items]))\n"
              "sys.exit(pytest.main(['suites', '--collect-only', '-q', '-p', 'no:cacheprovider',\n"
              "                      '--storage-class', 'local-path'], plugins=[Grab()]))\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parent.parent,
                         capture_output=True, text=True, timeout=120)
    line = next((l for l in out.stdout.splitlines() if l.startswith("ITEMS ")), None)
    assert line, out.stdout[-2000:] + out.stderr[-2000:]
    items = json.loads(line.removeprefix("ITEMS "))
    marked = [(nodeid, kind) for nodeid, is_volume, kind in items if is_volume]
    assert len(marked) >= 40 and [n for n, kind in marked if not kind] == []
    kinds = {kind for _, kind in marked}
    assert {"emptyDir", "emptyDir:Memory", "pvc:local-path", "image", "configMap", "projected"} <= kinds, kinds


def test_the_term_log_is_read_until_the_awaited_events_are_in_or_the_reader_stops():
    """The deletion claims' one reader of the pod's term log: each agent's last
    incarnation's events count, a line that is not JSON is skipped, and the reads
    end on the awaited events (one more read after `settle`) or on the reader's end."""
    from podshare import term_log

    line = lambda c, e, t: json.dumps({"container": c, "event": e, "boottime_ns": t})  # noqa: E731
    assert term_log.events("\n".join([line("main", "sigterm", 1), "torn {", line("main", "sigterm", 5)])) == {
        ("main", "sigterm"): 5}

    class Reader:
        def __init__(self, texts):
            self.texts, self.asked = list(texts), 0

        def run(self, verb, **args):
            self.asked += 1
            if not self.texts:
                raise KubeError("the exec stream ended")
            return {"ok": True, "text": self.texts.pop(0)}

    growing = Reader([line("a", "sigterm", 1), line("a", "sigterm", 1) + "\n" + line("b", "sigterm", 3),
                      line("a", "sigterm", 1) + "\n" + line("b", "sigterm", 3) + "\n" + line("h", "sigterm", 4)])
    seen = term_log.read_while_terminating(growing, "/log", {("a", "sigterm"), ("b", "sigterm")}, within=5, settle=0.01)
    assert seen.reads == 2 and growing.asked == 3 and ("h", "sigterm") in seen.events
    assert list(seen.events_ms()) == ["a sigterm", "b sigterm", "h sigterm"] and seen.ended is None

    stops = Reader([line("a", "sigterm", 1)])
    seen = term_log.read_while_terminating(stops, "/log", {("a", "exit")}, within=5)
    assert seen.ended == "the exec stream ended" and seen.events == {("a", "sigterm"): 1}


def test_a_never_ready_pod_is_said_with_its_not_ready_containers_own_probe_events():
    """The readiness probe's words are the not-ready container's (the event's
    fieldPath): alpha's failures before it became ready are not why beta is not."""
    from podshare.waits import readiness_said

    def record(container, port):
        return {"reason": "Unhealthy", "message": f"Readiness probe failed: dial tcp 10.0.0.1:{port}: refused",
                "field_path": f"spec.containers{{{container}}}"}

    class Events:
        def event_records(self, namespace, name):
            return [record("alpha", 7001), record("beta", 7999), record("alpha", 7001)]

    pod = client.V1Pod(metadata=client.V1ObjectMeta(name="p", namespace="n"), status=client.V1PodStatus(
        container_statuses=[client.V1ContainerStatus(name=c, ready=c == "alpha", restart_count=0, image="i",
                                                     image_id="", state=client.V1ContainerState(
                                                         running=client.V1ContainerStateRunning()))
                            for c in ("alpha", "beta")]))
    assert readiness_said(Events(), pod) == "Readiness probe failed: dial tcp 10.0.0.1:7999: refused"


# ---------------------------------------------------------------- the namespace cap's webhook
class CountingKube:
    """The two reads the cap's webhook makes: the run namespaces, its ConfigMap."""

    def __init__(self, names, cap):
        self.names, self.cap = set(names), cap

    def list_namespaces(self, selector):
        assert selector == "app.kubernetes.io/managed-by=podshare,podshare.io/run-id"
        return [client.V1Namespace(metadata=client.V1ObjectMeta(name=n)) for n in sorted(self.names)]

    def configmap_data(self, namespace, name):
        return {"cap": str(self.cap)}


def namespace_review(run_id, dry_run=False, labels=None):
    name = f"podshare-{run_id}"
    return {"uid": "u1", "operation": "CREATE", "kind": {"group": "", "version": "v1", "kind": "Namespace"},
            "name": name, "dryRun": dry_run, "object": {"metadata": {"name": name, "labels": labels if labels is not
                                                                     None else {**MANAGED_BY, RUN_ID_LABEL: run_id}}}}


def test_the_cap_refuses_a_run_namespace_beyond_it_with_the_count():
    from podshare.namespace_cap import Counter
    counter = Counter(CountingKube({"podshare-a", "podshare-b"}, cap=3))
    assert counter.review(namespace_review("cccccc")).allowed
    refused = counter.review(namespace_review("dddddd"))  # c is counted before the list shows it
    assert not refused.allowed
    assert refused.message.startswith("podshare-namespace-cap: 3 podshare run namespaces exist and the cap is 3;")
    assert counter.review(namespace_review("eeeeee", labels={})).allowed  # not a run's: the policy's to refuse


def test_the_cap_counts_dry_runs_but_holds_no_place_for_them_and_forgets_a_create_the_list_never_shows():
    from podshare.namespace_cap import PENDING_FOR, Counter
    now = [0.0]
    counter = Counter(CountingKube({"podshare-a"}, cap=2), clock=lambda: now[0])
    assert counter.review(namespace_review("bbbbbb", dry_run=True)).allowed
    assert counter.review(namespace_review("cccccc")).allowed
    assert not counter.review(namespace_review("dddddd")).allowed
    now[0] = PENDING_FOR + 1  # c never appeared (refused further on): its place is free again
    assert counter.review(namespace_review("dddddd")).allowed


def test_the_caps_check_is_always_refused_with_the_count_and_a_create_of_an_existing_name_is_not_counted_twice():
    from podshare.namespace_cap import CHECK_RUN_ID, IN_FORCE, Counter
    counter = Counter(CountingKube({"podshare-a", "podshare-bbbbbb"}, cap=2))
    check = counter.review(namespace_review(CHECK_RUN_ID, dry_run=True))
    assert not check.allowed and check.message.startswith(
        f"{IN_FORCE}: 2 podshare run namespaces exist and the cap is 2")
    assert counter.review(namespace_review("bbbbbb")).allowed  # the API answers AlreadyExists, not the cap


def test_the_caps_webhook_answers_admission_reviews_over_tls(tmp_path):
    """The server as the API server calls it: HTTPS with the rendered certificate,
    an AdmissionReview in, one out (the uid echoed, a refusal as a 403 status)."""
    import base64
    import socket
    import ssl
    import threading
    import urllib.request
    from podshare import namespace_cap
    pem = namespace_cap.certificates(days=1)
    for name in ("tls.crt", "tls.key", "ca.crt"):
        (tmp_path / name).write_bytes(base64.b64decode(pem[name]))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    counter = namespace_cap.Counter(CountingKube({"podshare-a"}, cap=1))
    threading.Thread(target=namespace_cap.serve, args=(counter, port, tmp_path), daemon=True).start()
    context = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    context.check_hostname = False  # the certificate names the Service; the test calls 127.0.0.1
    body = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": namespace_review("bbbbbb")}

    def post():
        request = urllib.request.Request(f"https://127.0.0.1:{port}/namespaces", json.dumps(body).encode(),
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, context=context, timeout=5) as answer:
            return json.loads(answer.read())
    answer = wait_until(lambda: _or_not_yet(post), timeout=10, what="the webhook to listen")
    assert answer["response"]["uid"] == "u1" and answer["response"]["allowed"] is False
    assert answer["response"]["status"]["code"] == 403
    assert "1 podshare run namespaces exist and the cap is 1" in answer["response"]["status"]["message"]


def _or_not_yet(call):
    try:
        return call()
    except OSError as exc:
        raise NotYet(str(exc)) from None


def test_a_restart_of_all_containers_is_waited_for_until_each_started_after_the_kubelet_ended_them_all():
    """A "ready" from before the kubelet's AllContainersRestarting turned False is stale."""
    import datetime as dt

    from podshare.waits import restarted_with_all_ready
    t = dt.datetime(2026, 12, 4, 13, 45, 20, tzinfo=dt.timezone.utc)

    def pod(condition, beta_started, sidecar_restarts=1):
        running = lambda at: client.V1ContainerState(running=client.V1ContainerStateRunning(started_at=at))  # noqa: E731
        return client.V1Pod(status=client.V1PodStatus(
            conditions=[client.V1PodCondition(type="AllContainersRestarting", status=condition,
                                              last_transition_time=t)] if condition else [],
            init_container_statuses=[client.V1ContainerStatus(name="sidecar", ready=True, restart_count=sidecar_restarts,
                                                              image="i", image_id="", state=running(t))],
            container_statuses=[client.V1ContainerStatus(name=n, ready=True, restart_count=0, image="i", image_id="",
                                                         state=running(at)) for n, at in
                                (("alpha", t), ("beta", beta_started))]))
    settled = restarted_with_all_ready("sidecar", 0)
    early = t - dt.timedelta(seconds=30)
    assert not settled(pod("True", t))
    assert not settled(pod("False", early))  # beta's ready is its old container's
    assert settled(pod("False", t + dt.timedelta(seconds=5)))
    assert settled(pod(None, early))  # no RestartAllContainers rule: nothing to wait for
    assert not settled(pod(None, early, sidecar_restarts=0))
