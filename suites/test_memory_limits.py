"""ENOSPC or OOM: what a writer meets when it fills a Memory emptyDir past its own
memory limit. The files a container writes into a Memory emptyDir count against
its memory limit (the emptyDir documentation), so in a volume larger than that
limit the kernel's OOM killer stops the writer, not ENOSPC; users meet it as a
process killed for no memory it seems to use.

A restart beside the pages left (kubernetes#128339) is suites/test_memory_restart.py's:
with a limit on each container here, the pages always fit beside a fresh alpha
under the pod's limit (the sum); the loop needs a container alone in its pod."""
from __future__ import annotations

import pytest
from kubernetes.utils import parse_quantity

from podshare.channel import ProbeKilled
from podshare.errors import KubeError
from podshare.evidence import could_not, describe
from podshare.retry import GaveUp, NotYet, wait_until

pytestmark = [pytest.mark.memory, pytest.mark.manifest("patterns/memory-limit.yaml")]

MIB = 1 << 20
FILL = 128 * MIB  # twice alpha's 64Mi limit, two thirds of the 192 MiB volume


def _mib(n: int | None) -> str:
    return "unknown" if n is None else f"{n / MIB:.0f} MiB"


@pytest.fixture(scope="module")
def limit_pod(pattern_pods):
    return pattern_pods["Pod/podshare-memlimit"]


@pytest.fixture(scope="module")
def filled(limit_pod, podshare_session) -> dict:
    """alpha writes FILL bytes into the shared Memory emptyDir, the writing process
    the one its cgroup's OOM killer picks (--oom-first: the container's agent lives
    on to answer); what alpha's cgroup, the volume, beta and the API said before and
    after. Whatever the write ends (the writer, its container, beta, the whole
    sandbox) is the claim's doing and its evidence, not a disruption."""
    path = f"/data/shared/fill-{limit_pod.uid[:8]}"
    alpha, beta = limit_pod.container("alpha"), limit_pod.container("beta")
    with podshare_session.harness_errors(fatal=False):
        before = {"charge": alpha.run("memory-charge"), "volume": beta.run("filesystem", path="/data/shared")}
        restarts = limit_pod.allow_restarts("alpha", "beta")
        try:
            met = alpha.run("fill", path=path, size=FILL, keep=True, oom_first=True)
        except ProbeKilled as killed:
            met = {"ok": False, "killed_by": killed.signal, "said": str(killed)}
        except KubeError as died:  # the channel ended with the container: the restart says why
            met = {"ok": False, "channel_ended": str(died)}
            try:
                limit_pod.ready_again("alpha", restarts["alpha"])
            except KubeError as stuck:  # e.g. a sandbox gone with it: the states below say how
                met["not_ready_again"] = str(stuck)
        after = {"charge": _answer(alpha, "memory-charge"), "left": _answer(beta, "size", path=path),
                 "containers": _states_once_known(limit_pod, restarts)}
        after["cleaned"] = _answer(beta, "delete", path=path)  # the pages stay charged to alpha until the file goes
    return {"path": path, "limit": _spec_limit(limit_pod, "alpha"), "before": before, "restarts_before": restarts,
            "met": met, "after": after}


def _states_once_known(pod, restarts: dict[str, int], timeout: float = 30.0) -> dict:
    """Each container's state; where one restarted, once the API also says how its
    last run ended: on a loaded node the new restart count came first (CI on
    2026-12-04: alpha restarted, its last termination not yet there), and the old
    run's cgroup, with its OOM kill count, is gone with it. Past the timeout, the
    states as they are: the message then says the last end was not given."""
    seen: dict = {}

    def known() -> dict:
        seen["states"] = states = pod.container_states()
        unsaid = [name for name, s in states.items()
                  if s["restart_count"] > restarts.get(name, 0) and not s["last_termination"]]
        if unsaid:
            raise NotYet(f"{', '.join(unsaid)} restarted, the last end not yet given")
        return states

    try:
        return wait_until(known, timeout=timeout, what="each restarted container's last termination")
    except GaveUp:
        return seen["states"]


def _answer(container, verb: str, **args) -> dict:
    """The verb's answer, or what ended its channel (the container may be gone)."""
    try:
        return container.run(verb, **args)
    except KubeError as exc:
        return {"ok": False, "channel_ended": str(exc)}


def _ended_beside(filled: dict, name: str) -> str | None:
    """How the write ended a container other than the writer's, in words, or None
    if it runs on as it did: restarted, not running, or no longer answering."""
    state = filled["after"]["containers"].get(name, {})
    said = []
    if state.get("restart_count", 0) > filled["restarts_before"][name]:
        said.append(f"restarted {state['restart_count'] - filled['restarts_before'][name]} time(s), its last run "
                    f"{state.get('last_termination')}")
    if state.get("state", "running") != "running":
        said.append(f"now {state['state']}")
    for verb in ("left", "cleaned"):
        if "channel_ended" in filled["after"][verb]:
            said.append(f"it could not answer: {filled['after'][verb]['channel_ended']}")
            break
    return "; ".join(said) or None


def _spec_limit(pod, container: str) -> int | None:
    """The container's memory limit as the API has it, in bytes."""
    spec = next(c for c in pod.read().spec.containers if c.name == container)
    limit = ((spec.resources and spec.resources.limits) or {}).get("memory")
    return int(parse_quantity(limit)) if limit else None


def test_a_writer_past_its_memory_limit_meets_the_oom_killer_not_enospc(filled, evidence):
    """alpha (limit 64Mi) writes 128 MiB into a Memory emptyDir of 192 MiB (no
    sizeLimit: the pod's limit): the volume has room, alpha's limit has not, so
    alpha's memory cgroup OOM-kills the writer (its oom_kill count grows, or the
    container ends OOMKilled) before 64 MiB are in; it never meets ENOSPC, and beta,
    which wrote nothing, runs on."""
    before, met, after = filled["before"], filled["met"], filled["after"]
    evidence.update(filled)
    assert before["volume"]["ok"], could_not("beta", "the shared Memory emptyDir", before["volume"])
    limit, volume = filled["limit"], before["volume"]["size_bytes"]
    written = after["left"]["size"] if after["left"]["ok"] else met.get("written")
    setting = f"alpha's memory limit ({_mib(limit)}) and the volume ({_mib(volume)}, {before['volume']['fstype']})"
    evidence.update(limit_bytes=limit, volume_bytes=volume, written_bytes=written)
    assert limit, "alpha's spec sets no memory limit, so there is no limit to meet"
    if met.get("ok"):
        pytest.fail(f"alpha wrote {_mib(met['written'])} into the Memory emptyDir past {setting} and nothing "
                    "stopped it: the files it writes do not count against its memory limit"
                    + (f" (its cgroup after: usage {_mib(after['charge']['usage'])}, shmem "
                       f"{_mib(after['charge']['shmem'])})" if after["charge"].get("ok") else ""))
    if met.get("errno") == "ENOSPC":
        pytest.fail(f"alpha met ENOSPC after {_mib(met.get('written'))}: the volume ({_mib(volume)}, "
                    f"{before['volume']['fstype']}) was full before alpha reached its memory limit ({_mib(limit)}), "
                    "so a writer here meets ENOSPC, not the OOM killer")
    assert "errno" not in met, (
        f"alpha's write failed after {_mib(met.get('written'))} with {describe(met)}: neither the OOM killer "
        f"nor ENOSPC, given {setting}")
    said = met.get("said") or met.get("channel_ended")
    beta_ended = _ended_beside(filled, "beta")
    if beta_ended:
        left = (f"{_mib(after['left']['size'])} of it in the volume after" if after["left"]["ok"]
                else f"the volume's file after: {describe(after['left'])}")
        pytest.fail(f"the OOM kill did not stay in alpha: its write past its {_mib(limit)} limit ended beta too, "
                    f"which wrote nothing ({beta_ended}); alpha's write ended ({said}), {left}")
    alpha_now = after["containers"]["alpha"]
    # the cgroup's count where the container can read it (gVisor's sandbox shows no memory cgroup files)
    oom_kills = (before["charge"].get("oom_kills"), after["charge"].get("oom_kills"))
    counted = None not in oom_kills and oom_kills[1] > oom_kills[0]
    assert counted or "OOMKilled" in (alpha_now.get("last_termination") or ""), (
        f"alpha's write ended ({said}) after {_mib(written)}, but its memory cgroup counted no OOM kill "
        f"(oom_kill {oom_kills[0]} before, {oom_kills[1]} after) and the container did not end OOMKilled "
        f"(its last run: {alpha_now.get('last_termination') or 'it did not end'}): something other than its "
        "memory limit stopped it")
    if not after["left"]["ok"]:  # beta answers (above): the file is not there
        pytest.fail(f"alpha's write ended ({said}), and then beta found no file where alpha wrote: "
                    f"{describe(after['left'])}; the Memory emptyDir lost what alpha wrote before the kill, so how "
                    "much went in cannot be told")
    assert written <= limit, (
        f"{_mib(written)} went into the volume before the OOM killer stopped alpha, more than its "
        f"{_mib(limit)} limit: those pages were not all charged to alpha")
