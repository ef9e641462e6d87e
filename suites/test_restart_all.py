"""Restart of all containers in place (KEP-5532, Kubernetes 1.35 alpha, 1.36 on
beta and on by default): a container's exit that its restart rule names
(action RestartAllContainers) restarts every container of the pod, the init
containers first, in the same sandbox. Between a container restart and a pod
recreation, it keeps the pod's identity and what its containers share; nobody
else checks that. One exit for the module: both claims read what it did."""
from __future__ import annotations

import pytest

from podshare.evidence import describe

pytestmark = [pytest.mark.lifecycle, pytest.mark.pattern, pytest.mark.manifest("patterns/restart-all.yaml"),
              pytest.mark.needs("restart all containers")]

RULE_EXIT_CODE = 42  # manifests/patterns/restart-all.yaml's rule; probes/agent.py's RULE_EXIT_CODE
CONTAINERS = ("alpha", "beta")
SHARED = ("disk", "memory", "sysv_shm", "posix_shm")  # objects with content, compared by digest


@pytest.fixture(scope="module")
def restart_pod(pattern_pods):
    return pattern_pods["Pod/podshare-restart-all"]


@pytest.fixture(scope="module")
def restarted_all(restart_pod, podshare_session) -> dict:
    """alpha leaves traces in the volumes and the pod's IPC namespace, then exits with
    the code its rule names; what the pod was before and after, as the API and the
    containers tell it."""
    name = f"podshare-{restart_pod.uid[:8]}"
    key = int(restart_pod.uid.replace("-", "")[:7], 16) or 1
    alpha = restart_pod.container("alpha")
    with podshare_session.harness_errors(fatal=False):
        before = {"pod": _identity(restart_pod), "boot_ids": _boot_ids(restart_pod),
                  "init_runs": alpha.run("read", path="/data/disk/init-runs", text=True),
                  "traces": _leave_traces(alpha, key, name)}
        restarts = restart_pod.exit_by_restart_rule("alpha", RULE_EXIT_CODE)
        after = {"pod": _identity(restart_pod), "boot_ids": _boot_ids(restart_pod),
                 "init_runs": restart_pod.container("beta").run("read", path="/data/disk/init-runs", text=True),
                 "traces": _look_for_traces(restart_pod.container("beta"), key, name)}
    return {"before": before, "after": after, "restart_counts": restarts}


def _identity(pod) -> dict:
    read = pod.read()
    return {"uid": read.metadata.uid, "ip": read.status.pod_ip, "node": read.spec.node_name,
            "restart_counts": {s.name: s.restart_count for s in read.status.container_statuses or []},
            "init_restart_counts": {s.name: s.restart_count for s in read.status.init_container_statuses or []}}


def _boot_ids(pod) -> dict[str, str | None]:
    """Each agent's boot id, new at every start of its container's main process."""
    ids = {}
    for name in CONTAINERS:
        container = pod.container(name)
        answer = container.run("connect", port=container.port)
        ids[name] = answer["peer"]["boot_id"] if answer["ok"] else None
    return ids


def _leave_traces(alpha, key: int, name: str) -> dict:
    return {"disk": alpha.run("write", path=f"/data/disk/{name}", size=65536, seed=name),
            "memory": alpha.run("write", path=f"/data/memory/{name}", size=65536, seed=name),
            "sysv_shm": alpha.run("sysv-shm-write", key=key, size=4096, seed=name),
            "sysv_sem": alpha.run("sysv-sem-create", key=key, value=2),
            "posix_shm": alpha.run("posix-shm-write", name=name, size=4096, seed=name)}


def _look_for_traces(container, key: int, name: str) -> dict:
    return {"disk": container.run("read", path=f"/data/disk/{name}"),
            "memory": container.run("read", path=f"/data/memory/{name}"),
            "sysv_shm": container.run("sysv-shm-read", key=key, size=4096),
            "sysv_sem": container.run("sysv-sem-info", key=key),
            "posix_shm": container.run("posix-shm-read", name=name)}


def _lines(answer: dict) -> int | None:
    return answer["text"].count("init ran") if answer.get("ok") else None


def test_an_exit_its_rule_names_restarts_every_container_in_the_same_pod(restarted_all, evidence):
    """After alpha exits with the code its RestartAllContainers rule names, every
    container runs again (alpha and beta each with a new boot id and a higher
    restart count), the init container ran again and met its first run's line in
    the volume, and the pod is the same pod: its UID, IP and node unchanged."""
    before, after = restarted_all["before"], restarted_all["after"]
    evidence.update(pod=[before["pod"], after["pod"]], boot_ids=[before["boot_ids"], after["boot_ids"]],
                    init_runs=[before["init_runs"], after["init_runs"]])
    for name in CONTAINERS:
        assert before["boot_ids"][name], f"{name}'s agent did not answer before the exit"
        assert after["boot_ids"][name], f"{name}'s agent does not answer after alpha's exit"
    assert after["boot_ids"]["alpha"] != before["boot_ids"]["alpha"], "alpha's process did not start again"
    assert after["boot_ids"]["beta"] != before["boot_ids"]["beta"], (
        f"beta was not restarted: its agent answers with the boot id {before['boot_ids']['beta']} it had before "
        f"alpha exited with {RULE_EXIT_CODE} (restart counts: "
        f"{', '.join(f'{n} {c}' for n, c in after['pod']['restart_counts'].items())}): only alpha restarted, as "
        "without a RestartAllContainers rule")
    for name in CONTAINERS:
        assert after["pod"]["restart_counts"][name] > before["pod"]["restart_counts"][name], (
            f"{name}'s restartCount stayed at {before['pod']['restart_counts'][name]}, though its process started "
            "again")
    assert (_lines(before["init_runs"]), _lines(after["init_runs"])) == (1, 2), (
        f"the init container's runs in the volume: {_lines(before['init_runs'])} before, "
        f"{_lines(after['init_runs'])} after (2 after: it ran again and met its first run's line): "
        f"{describe(after['init_runs']) if not after['init_runs']['ok'] else after['init_runs']['text']!r}")
    for field in ("uid", "ip", "node"):
        assert after["pod"][field] == before["pod"][field], (
            f"the pod's {field} changed across the restart of all containers: {before['pod'][field]} before, "
            f"{after['pod'][field]} after: it was not restarted in place")


def test_what_the_containers_share_survives_a_restart_of_all_containers(restarted_all, evidence):
    """What alpha left before its exit (a file in the disk and the Memory emptyDir, a
    System V shared memory segment and semaphore, a POSIX shared memory object in
    /dev/shm) is there, unchanged, for beta after every container restarted: the
    sandbox's IPC namespace and the pod's volumes outlive its containers."""
    before, after = restarted_all["before"]["traces"], restarted_all["after"]["traces"]
    evidence.update(before=before, after=after, boot_ids=[restarted_all["before"]["boot_ids"],
                                                          restarted_all["after"]["boot_ids"]])
    assert all(r["ok"] for r in before.values()), (
        f"alpha could not leave its traces: {({k: describe(r) for k, r in before.items() if not r['ok']})}")
    for what in SHARED:
        assert after[what]["ok"], f"the {what} object is gone after the restart of all containers: {describe(after[what])}"
        assert after[what]["sha256"] == before[what]["sha256"], (
            f"the {what} object changed across the restart of all containers: sha256 {before[what]['sha256'][:12]}... "
            f"before, {after[what]['sha256'][:12]}... after")
    assert after["sysv_sem"]["ok"] and after["sysv_sem"]["value"] == 2, (
        "the System V semaphore did not survive the restart of all containers with its value 2: "
        f"{describe(after['sysv_sem']) if not after['sysv_sem']['ok'] else after['sysv_sem']['value']}")
