"""The shared file system's ReadWriteMany class (cluster/shared_csi.py, the CSI
driver in cluster/csi): ONE claim of `shared-sshfs-rwx` mounted by two pods on two
different nodes (issue 26 §2), each through its own node's sshfs client; what one
writes the other reads byte for byte; and once the claim is deleted, its
PersistentVolume and its directory of the export are gone. Runs on the bundled
cluster that `up` started (it applies the driver and the class)."""
from __future__ import annotations

import base64
import json
import os
import time
import uuid
from pathlib import Path

import pytest

from cluster import shared_csi, shared_fs
from cluster.images import read_env
from cluster.layout import NODE

needs_local_cluster = pytest.mark.skipif(
    not os.environ.get("PODSHARE_LOCAL_CLUSTER") or os.geteuid() != 0,
    reason="the bundled cluster's shared file system and its CSI driver (PODSHARE_LOCAL_CLUSTER=1, root)")
# two nodes, two sshfs clients; vm-sandboxed's gVisor would put its own gofer between
NODES = (NODE, "vm-current")
MOUNT = "/shared"

# Each pod says, as one JSON line, where /shared comes from in its own mount
# namespace (fstype, source, the device: a FUSE connection of its own per client)
# and what it wrote or read. The probe image has python3 and no shell.
SCRIPT = r"""
import base64, hashlib, json, os, sys, time
mount = next(l.split() for l in open("/proc/self/mountinfo") if l.split()[4] == "/shared")
rest = mount[mount.index("-") + 1:]
said = {"node": os.environ["NODE"], "fstype": rest[0], "source": rest[1], "root": mount[3], "dev": mount[2]}
path = "/shared/from-" + os.environ["WRITER"]
if os.environ["ROLE"] == "writer":
    data = base64.b64decode(os.environ["DATA"])
    with open(path + ".tmp", "wb") as f:
        f.write(data); f.flush(); os.fsync(f.fileno())
    os.rename(path + ".tmp", path)
    said["wrote"] = len(data)
else:
    deadline = time.monotonic() + 90
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.5)
    said["read"] = base64.b64encode(open(path, "rb").read()).decode()
print(json.dumps(said), flush=True)
time.sleep(3600)
"""


def pod(name: str, node: str, role: str, claim: str, data: str, image: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {
                "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchFields": [
                        {"key": "metadata.name", "operator": "In", "values": [node]}]}]}}},
                "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{
                    "name": role, "image": image, "imagePullPolicy": "Never",
                    "command": ["python3", "-c", SCRIPT],
                    "env": [{"name": "ROLE", "value": role}, {"name": "WRITER", "value": NODES[0]},
                            {"name": "DATA", "value": data},
                            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                    "volumeMounts": [{"name": "shared", "mountPath": MOUNT}]}],
                "volumes": [{"name": "shared", "persistentVolumeClaim": {"claimName": claim}}]}}


def wait(what: str, probe, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(1)


@pytest.fixture
def kube():
    from podshare.kube import Kube
    return Kube(os.environ.get("KUBECONFIG") or str(shared_fs.STATE / "admin.kubeconfig"))


@pytest.fixture
def namespace(kube):
    from kubernetes.client.exceptions import ApiException
    name = f"podshare-csi-{uuid.uuid4().hex[:6]}"
    kube.create_namespace(name, {"app.kubernetes.io/managed-by": "podshare-tests"})
    yield name
    try:
        kube.core.delete_namespace(name, grace_period_seconds=0)
    except ApiException as exc:
        if exc.status != 404:
            raise
    wait(f"namespace {name} gone", lambda: not kube.namespace_exists(name), 120)


def first_line(kube, namespace: str, name: str) -> dict | None:
    from kubernetes.client.exceptions import ApiException
    phase = kube.core.read_namespaced_pod(name, namespace).status.phase
    assert phase in ("Pending", "Running"), (name, phase, kube.events(namespace, name))
    if phase != "Running":
        return None
    try:
        log = kube.core.read_namespaced_pod_log(name, namespace)
    except ApiException:
        return None
    return json.loads(log.splitlines()[0]) if log.strip() else None


@needs_local_cluster
def test_one_claim_two_nodes_two_clients(kube, namespace):
    storage = kube._storage
    driver = storage.read_csi_driver(shared_csi.DRIVER)
    assert driver.spec.attach_required is False and driver.spec.fs_group_policy == "None"
    assert kube.storage_class(shared_csi.CLASS).provisioner == shared_csi.DRIVER
    for node in NODES:  # each kubelet has its own node plugin registered
        drivers = storage.read_csi_node(node).spec.drivers or []
        assert [d.node_id for d in drivers if d.name == shared_csi.DRIVER] == [node], node

    claim = "shared"
    kube.core.create_namespaced_persistent_volume_claim(namespace, {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim},
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": shared_csi.CLASS,
                 "resources": {"requests": {"storage": "64Mi"}}}})
    pv_name = wait("the claim bound", lambda: kube.core.read_namespaced_persistent_volume_claim(
        claim, namespace).spec.volume_name if kube.core.read_namespaced_persistent_volume_claim(
        claim, namespace).status.phase == "Bound" else None, 60)
    pv = kube.core.read_persistent_volume(pv_name)
    assert pv.spec.csi.driver == shared_csi.DRIVER and pv.spec.csi.volume_handle == pv_name
    assert pv.spec.access_modes == ["ReadWriteMany"] and pv.spec.node_affinity is None
    assert pv.spec.persistent_volume_reclaim_policy == "Delete"
    directory = shared_fs.EXPORT / pv_name
    assert directory.is_dir()

    data = os.urandom(64 * 1024)
    image = read_env()["PROBE_IMAGE"]
    encoded = base64.b64encode(data).decode()
    kube.core.create_namespaced_pod(namespace, pod("writer", NODES[0], "writer", claim, encoded, image))
    kube.core.create_namespaced_pod(namespace, pod("reader", NODES[1], "reader", claim, "", image))
    writer = wait("the writer's line", lambda: first_line(kube, namespace, "writer"))
    reader = wait("the reader's line", lambda: first_line(kube, namespace, "reader"))

    evidence = {"writer": {k: v for k, v in writer.items()}, "reader": {k: v for k, v in reader.items() if k != "read"},
                "pv": pv_name}
    print("evidence:", json.dumps(evidence))
    # two nodes, each pod's mount an sshfs mount of the one export, of the volume's directory
    assert (writer["node"], reader["node"]) == NODES, evidence
    for said in (writer, reader):
        assert said["fstype"] == "fuse.sshfs", evidence
        assert said["source"] == f"127.0.0.1:{shared_fs.EXPORT}", evidence
        assert said["root"] == f"/{pv_name}", evidence
    # ... through two clients: each pod's device is its own node's client's (a FUSE
    # connection each), and they differ
    assert writer["dev"] != reader["dev"], evidence
    for said in (writer, reader):
        st = os.stat(shared_fs.client_dir(said["node"]))
        assert said["dev"] == f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}", (said["node"], evidence)
    # byte for byte, and through the server
    assert writer["wrote"] == len(data)
    assert base64.b64decode(reader["read"]) == data
    assert (directory / f"from-{NODES[0]}").read_bytes() == data
    # the kubelets' targets are the driver's mounts, one per pod
    assert len(shared_csi._publish_mounts()) >= 2, shared_csi._publish_mounts()

    # gracefully: a kubelet deletes the pod's object only once its volumes are
    # unpublished (a forced delete would leave that to after the object is gone)
    for name in ("writer", "reader"):
        kube.core.delete_namespaced_pod(name, namespace)
    for name in ("writer", "reader"):
        wait(f"pod {name} gone", lambda name=name: name not in
             [p.metadata.name for p in kube.core.list_namespaced_pod(namespace).items], 120)
    assert not [m for m in shared_csi._publish_mounts() if pv_name in m]
    kube.core.delete_namespaced_persistent_volume_claim(claim, namespace)
    wait(f"PV {pv_name} gone", lambda: pv_name not in [v.metadata.name for v in kube.core.list_persistent_volume().items])
    assert not directory.exists()


def test_up_applies_the_driver_and_its_class():
    """What `up` (and `start --apply`) create from cluster/shared-sshfs-rwx.yaml, and where."""
    from cluster import addons
    made = []
    addons.apply(shared_csi.MANIFEST, {}, lambda path, body: (made.append((path, body)), (201, {}))[1])
    (driver_path, driver), (class_path, sc) = made
    assert driver_path == "/apis/storage.k8s.io/v1/csidrivers" and driver["metadata"]["name"] == shared_csi.DRIVER
    assert driver["spec"]["attachRequired"] is False and driver["spec"]["podInfoOnMount"] is False
    assert driver["spec"]["volumeLifecycleModes"] == ["Persistent"] and driver["spec"]["fsGroupPolicy"] == "None"
    assert class_path == "/apis/storage.k8s.io/v1/storageclasses" and sc["metadata"]["name"] == shared_csi.CLASS
    assert sc["provisioner"] == shared_csi.DRIVER and sc["reclaimPolicy"] == "Delete"


def test_each_kubelet_gets_its_own_plugin_sockets():
    """The first node's kubelet root is STATE/kubelet, a worker's STATE/nodes/N/kubelet:
    each plugin listens under its own kubelet's root, within a unix socket's 107 bytes."""
    root = shared_fs.STATE / "nodes" / "vm-sandboxed" / "kubelet"
    assert shared_csi.csi_socket(root) == root / "plugins" / "podshare.io~sshfs" / "csi.sock"
    assert shared_csi.registration_socket(root) == root / "plugins_registry" / "sshfs.podshare.io-reg.sock"
    assert all(len(str(s)) < 108 for s in (shared_csi.csi_socket(root), shared_csi.registration_socket(root)))
