"""Smoke test of the cluster the suites run on, end to end through real
components: scheduler, kubelet + containerd, the exec subresource, the pod
network and kube-proxy. Needs a cluster (`make test` brings the local one up)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from podshare import MANAGED_BY, POD_LABEL
from podshare.retry import NotYet, wait_until

from .conftest import PROJECT, run_suites


@pytest.fixture(scope="module")
def smoke_pod(pod_factory):
    pod = pod_factory.pod("probe-pod.yaml", "podshare-smoke")
    pod.create().wait_ready()
    return pod


def read_agent(host: str, port: int) -> dict:
    try:
        with socket.create_connection((host, port), timeout=2) as s:
            line = s.makefile().readline()
    except OSError as exc:
        raise NotYet(f"{host}:{port}: {exc}") from None
    if not line:
        raise NotYet(f"{host}:{port}: closed without an answer")
    return json.loads(line)


def test_two_container_pod_is_scheduled_and_answers_exec_in_both(kube, smoke_pod):
    events = kube.events(smoke_pod.namespace, smoke_pod.name)
    assert any(e.startswith("Normal Scheduled") for e in events), events  # placed by kube-scheduler
    for name in ("alpha", "beta"):
        assert smoke_pod.container(name).run("identity")["container"] == name


def test_one_container_reaches_the_other_over_loopback(smoke_pod):
    answer = smoke_pod.container("beta").run("connect", host="127.0.0.1", port=7001)
    assert answer["ok"] and answer["peer"]["container"] == "alpha"


def test_nodeport_service_answers_from_the_host_through_kube_proxy(kube, smoke_pod, run_namespace):
    service = kube.create(run_namespace, {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "podshare-smoke", "labels": dict(MANAGED_BY)},
        "spec": {"type": "NodePort", "selector": {POD_LABEL: smoke_pod.name},
                 "ports": [{"port": 7001, "targetPort": 7001}]}})
    try:
        node_port = service.spec.ports[0].node_port
        node_ip = next(a.address for a in kube.node(smoke_pod.node).status.addresses if a.type == "InternalIP")
        for host in ("127.0.0.1", node_ip):
            answer = wait_until(lambda: read_agent(host, node_port), timeout=30,
                                what=f"NodePort {node_port} on {host}")
            assert answer["container"] == "alpha"
    finally:
        kube.delete(run_namespace, "Service", "podshare-smoke")


local_only = pytest.mark.skipif(not os.environ.get("PODSHARE_LOCAL_CLUSTER"),
                                reason="about the bundled local cluster, which is not the one in use")


@local_only
def test_a_second_up_while_the_cluster_runs_says_so_and_fails():
    second = subprocess.run([sys.executable, "-m", "cluster.localcluster", "up"], cwd=PROJECT,
                            capture_output=True, text=True, timeout=60)
    assert second.returncode == 1
    assert "already running" in second.stderr


@local_only
def test_status_sees_every_component_running():
    status = subprocess.run([sys.executable, "-m", "cluster.localcluster", "status"], cwd=PROJECT,
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stdout
    for component in ("containerd", "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
                      "kubelet", "kube-proxy"):
        assert component in status.stdout


@pytest.mark.skipif(not os.environ.get("PODSHARE_LOCAL_CLUSTER"), reason="the bundled cluster's own RuntimeClasses")
def test_up_creates_the_five_runtime_classes_and_annotates_each_node_with_its_runtimes(kube):
    """gVisor's two classes select the containerd 2 pools (cluster/workers.py);
    each node says its runtimes' versions (podshare.io/runtimes)."""
    from cluster import workers
    classes = {name: kube.runtime_class(name) for name in workers.RUNTIME_CLASSES}
    assert {name: c.handler for name, c in classes.items()} == {
        "runc": "runc", "crun": "crun", "youki": "youki", "gvisor": "gvisor", "gvisor-hinted": "gvisor-hinted"}
    assert classes["gvisor"].scheduling.node_selector == {"podshare.io/gvisor": "plain"}
    assert classes["gvisor-hinted"].scheduling.node_selector == {"sandbox.gke.io/runtime": "gvisor"}
    for node in kube.nodes():
        said = json.loads(node.metadata.annotations["podshare.io/runtimes"])
        assert {"runc", "crun", "youki"} <= set(said["handlers"]), node.metadata.name


def test_a_runtime_class_that_does_not_exist_stops_the_run_in_one_line(tmp_path):
    out = run_suites("-m", "identity", "--runtime-class", "no-such-class",
                     "--reports-dir", str(tmp_path), timeout=120)
    assert out.returncode == 2, out.stdout[-2000:]
    stop = [line for line in out.stdout.splitlines() if "Interrupted: podshare:" in line]
    assert len(stop) == 1 and "RuntimeClass 'no-such-class' does not exist" in stop[0], out.stdout[-2000:]


def test_a_storage_class_that_cannot_bind_gives_its_claims_one_line_naming_it(tmp_path):
    """A --storage-class with no such class: the volume claims on its PVCs could
    not be checked, in one line that names the class and what the claim's events
    say, at once (not at --pod-timeout); the emptyDir claims beside them pass, and
    nothing is left behind."""
    out = run_suites("-k", "test_file_written_in_alpha", "--storage-class", "no-such-class",
                     "--reports-dir", str(tmp_path), timeout=300)
    results = json.loads((tmp_path / "results.json").read_text())
    by_volume = {c["volume"]: c for c in results["checks"]}
    assert by_volume["emptyDir"]["outcome"] == by_volume["emptyDir:Memory"]["outcome"] == "passed", by_volume
    unbound = by_volume["pvc:no-such-class"]
    assert unbound["outcome"] == "could-not-check", unbound
    assert "StorageClass no-such-class" in unbound["message"] and "not found" in unbound["message"], unbound["message"]
    lines = [line for line in out.stdout.splitlines() if line.startswith("could not check")]
    assert len(lines) == 1 and "no-such-class" in lines[0], out.stdout[-3000:]
    assert out.returncode == 2 and results["run"]["leftovers"] == [], (out.returncode, results["run"]["leftovers"])


def test_a_class_without_read_write_many_makes_the_two_node_claims_not_applicable(tmp_path):
    """local-path makes no ReadWriteMany volume: the two-node across-pod claims are
    not applicable in one line with the provisioner's words, the one-node ones run,
    and the run exits 0 (not applicable is neither a pass nor could-not-check)."""
    out = run_suites("-k", "test_a_file_written_in_one_pod", "--storage-class", "local-path",
                     "--reports-dir", str(tmp_path), timeout=300)
    results = json.loads((tmp_path / "results.json").read_text())
    by_placement = {("two-nodes" if "two-nodes" in c["id"] else "one-node"): c for c in results["checks"]}
    assert by_placement["one-node"]["outcome"] == "passed", by_placement["one-node"]
    refused = by_placement["two-nodes"]
    assert refused["outcome"] == "skipped" and "not applicable: StorageClass local-path does not provision" in \
        refused["message"] and "ReadWriteOnce" in refused["message"], refused["message"]
    assert out.returncode == 0 and results["run"]["leftovers"] == [], (out.returncode, out.stdout[-2000:])
