"""Lifecycle: the pod, not the container, owns its volumes and IPC namespace.
A container restart keeps them; deleting and recreating the pod (same name)
starts from nothing."""
import pytest

from podshare.evidence import describe, failed_with

pytestmark = pytest.mark.lifecycle


def _leave_traces(alpha, key: int, name: str) -> dict:
    return {
        "disk": alpha.run("write", path=f"/data/disk/{name}", size=65536, seed=name),
        "memory": alpha.run("write", path=f"/data/memory/{name}", size=65536, seed=name),
        "sysv_shm": alpha.run("sysv-shm-write", key=key, size=4096, seed=name),
        "sysv_sem": alpha.run("sysv-sem-create", key=key, value=2),
        "posix_shm": alpha.run("posix-shm-write", name=name, size=4096, seed=name),
    }


def _look_for_traces(container, key: int, name: str) -> dict:
    return {
        "disk": container.run("read", path=f"/data/disk/{name}"),
        "memory": container.run("read", path=f"/data/memory/{name}"),
        "sysv_shm": container.run("sysv-shm-read", key=key, size=4096),
        "sysv_sem": container.run("sysv-sem-info", key=key),
        "posix_shm": container.run("posix-shm-read", name=name),
    }


def _boot_id(container) -> str:
    """The agent's boot id, new at every start of the container's main process."""
    answer = container.run("connect", port=container.port)
    assert answer["ok"], f"{container.name}'s agent does not answer: {describe(answer)}"
    return answer["peer"]["boot_id"]


def test_volume_and_ipc_objects_survive_a_container_restart(lifecycle_pod, ipc_key, ipc_name, evidence):
    """After alpha's process is killed and kubelet restarts it (restartCount goes up,
    a new boot id answers), the volume files and the System V and /dev/shm
    objects are all still there, unchanged."""
    alpha = lifecycle_pod.container("alpha")
    before = _leave_traces(alpha, ipc_key, ipc_name)
    assert all(r["ok"] for r in before.values()), (
        f"alpha could not leave its traces: {({k: describe(r) for k, r in before.items() if not r['ok']})}")
    boot_before = _boot_id(alpha)
    restarts_before = lifecycle_pod.restart_count("alpha")
    restarts_after = lifecycle_pod.restart_container("alpha")
    boot_after = _boot_id(alpha)
    after = _look_for_traces(alpha, ipc_key, ipc_name)
    evidence.update(restart_count=[restarts_before, restarts_after], boot_ids=[boot_before, boot_after],
                    before=before, after=after)
    assert restarts_after > restarts_before, (
        f"alpha's restartCount stayed at {restarts_before} after its process was killed: it was not restarted")
    assert boot_after != boot_before, (
        f"alpha's agent answers with the same boot id {boot_before} as before: its process was not restarted")
    for what in ("disk", "memory", "sysv_shm", "posix_shm"):
        assert after[what]["ok"], f"the {what} object is gone after the container restart: {describe(after[what])}"
        assert after[what]["sha256"] == before[what]["sha256"], (
            f"the {what} object changed across the restart: sha256 {before[what]['sha256'][:12]}... before, "
            f"{after[what]['sha256'][:12]}... after")
    assert after["sysv_sem"]["ok"] and after["sysv_sem"]["value"] == 2, (
        f"the System V semaphore did not survive the container restart with its value 2: "
        f"{describe(after['sysv_sem']) if not after['sysv_sem']['ok'] else after['sysv_sem']['value']}")


def test_recreated_pod_starts_without_the_old_volume_and_ipc_objects(lifecycle_pod, ipc_key, ipc_name, evidence):
    """After the pod is deleted and created again with the same name, it has a new
    UID, its volumes are empty and the old IPC objects are gone."""
    alpha = lifecycle_pod.container("alpha")
    before = _leave_traces(alpha, ipc_key, ipc_name)
    assert all(r["ok"] for r in before.values()), (
        f"alpha could not leave its traces: {({k: describe(r) for k, r in before.items() if not r['ok']})}")
    uid_before, node_before = lifecycle_pod.uid, lifecycle_pod.node
    lifecycle_pod.recreate()
    after = _look_for_traces(lifecycle_pod.container("alpha"), ipc_key, ipc_name)
    listing = {v: alpha.run("list", path=f"/data/{v}") for v in ("disk", "memory")}
    evidence.update(uids=[uid_before, lifecycle_pod.uid], nodes=[node_before, lifecycle_pod.node],
                    before=before, after=after, listing=listing)
    assert lifecycle_pod.uid != uid_before, f"the pod was not recreated: its UID is still {uid_before}"
    assert lifecycle_pod.node == node_before, (
        f"the recreated pod ran on {lifecycle_pod.node}, not {node_before}, where the old one left its objects")
    for what, result in after.items():
        assert failed_with(result, "ENOENT"), (
            f"the {what} object from the deleted pod survived into the recreated one: "
            f"{'it is there' if result['ok'] else describe(result)}")
    for volume in ("disk", "memory"):
        assert listing[volume]["entries"] == [], (
            f"the recreated pod's {volume} volume is not empty: {listing[volume]['entries']}")
