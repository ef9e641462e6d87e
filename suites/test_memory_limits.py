"""ENOSPC or OOM: what a writer meets when it fills a Memory emptyDir past its own
memory limit. The files a container writes into a Memory emptyDir count against
its memory limit (the emptyDir documentation), so in a volume larger than that
limit the kernel's OOM killer stops the writer, not ENOSPC; users meet it as a
process killed for no memory it seems to use.

Not claimed: what a restart beside the pages left inherits (kubernetes#128339).
With a limit on each container the pages left always fit beside a fresh
container under the pod's limit, so such a claim would pass everywhere this
pattern runs and no variant of it could make it fail; docs/findings.md."""
from __future__ import annotations

import pytest
from kubernetes.utils import parse_quantity

from podshare.channel import ProbeKilled
from podshare.errors import KubeError
from podshare.evidence import could_not, describe

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
    on to answer); what alpha's cgroup, the volume and the API said before and after."""
    path = f"/data/shared/fill-{limit_pod.uid[:8]}"
    alpha, beta = limit_pod.container("alpha"), limit_pod.container("beta")
    with podshare_session.harness_errors(fatal=False):
        before = {"charge": alpha.run("memory-charge"), "volume": beta.run("filesystem", path="/data/shared")}
        restarts = limit_pod.allow_one_restart("alpha")  # should the OOM killer end the container after all
        try:
            met = alpha.run("fill", path=path, size=FILL, keep=True, oom_first=True)
        except ProbeKilled as killed:
            met = {"ok": False, "killed_by": killed.signal, "said": str(killed)}
        except KubeError as died:  # the channel ended with the container: the restart says why
            met = {"ok": False, "channel_ended": str(died)}
            limit_pod.ready_again("alpha", restarts)
        after = {"charge": alpha.run("memory-charge"), "left": beta.run("size", path=path),
                 "last_state": limit_pod.last_termination("alpha")}
        after["cleaned"] = beta.run("delete", path=path)  # the pages stay charged to alpha until the file goes
    return {"path": path, "limit": _spec_limit(limit_pod, "alpha"), "before": before, "met": met, "after": after}


def _spec_limit(pod, container: str) -> int | None:
    """The container's memory limit as the API has it, in bytes."""
    spec = next(c for c in pod.read().spec.containers if c.name == container)
    limit = ((spec.resources and spec.resources.limits) or {}).get("memory")
    return int(parse_quantity(limit)) if limit else None


def test_a_writer_past_its_memory_limit_meets_the_oom_killer_not_enospc(filled, evidence):
    """alpha (limit 64Mi) writes 128 MiB into a Memory emptyDir of 192 MiB (no
    sizeLimit: the pod's limit): the volume has room, alpha's limit has not, so
    alpha's memory cgroup OOM-kills the writer (its oom_kill count grows, or the
    container ends OOMKilled) before 64 MiB are in; it never meets ENOSPC."""
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
    ended = after["last_state"] or {}
    # the cgroup's count where the container can read it (gVisor's sandbox shows no memory cgroup files)
    oom_kills = (before["charge"].get("oom_kills"), after["charge"].get("oom_kills"))
    counted = None not in oom_kills and oom_kills[1] > oom_kills[0]
    said = met.get("said") or met.get("channel_ended")
    assert counted or ended.get("reason") == "OOMKilled", (
        f"alpha's write ended ({said}) after {_mib(written)}, but its memory cgroup counted no OOM kill "
        f"(oom_kill {oom_kills[0]} before, {oom_kills[1]} after) and the container did not end OOMKilled "
        f"({ended or 'it did not end'}): something other than its memory limit stopped it")
    if not after["left"]["ok"]:
        pytest.fail(f"alpha's write ended ({said}), and then beta found no file where alpha wrote: "
                    f"{describe(after['left'])}; the Memory emptyDir lost what alpha wrote before the kill, so how "
                    "much went in cannot be told")
    assert written <= limit, (
        f"{_mib(written)} went into the volume before the OOM killer stopped alpha, more than its "
        f"{_mib(limit)} limit: those pages were not all charged to alpha")
