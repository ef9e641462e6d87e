"""Across pods: what one PersistentVolumeClaim shares between two pods that
mount it, on one node (any class) and on two nodes (a class that provisions
ReadWriteMany: network storage, where each node is its own client). Apps rely
on it as on a volume shared within a pod (a web server and a content syncer in
pods of their own, a backup job beside its database), and network file systems
keep less of it: a file may take its attribute cache's time to appear, locks
and inotify may not cross clients. A pod with a claim of its own of the same
class is the negative control. Runs once per --storage-class
(podshare/across_pods.py); without one, not at all."""
import pytest

from podshare.evidence import could_not, describe, failed_with, stranger_sees

pytestmark = pytest.mark.volume

APPEAR_WITHIN = 30.0  # s; a network file system's attribute cache may hide a new file this long (sshfs: 20 s)


@pytest.fixture(params=["one-node", "two-nodes"])
def placement(request) -> str:
    return request.param


def test_a_file_written_in_one_pod_is_read_byte_exact_in_the_other(across, volume, ipc_name, evidence):
    """A 1 MiB file the first pod writes into the claim is read byte-exact by the
    second pod, which had already looked for it (as a poller does: a cached
    "absent" is what a network file system may keep), within 30 s, with the time
    it took to appear; the pod with a claim of its own does not have it."""
    path = f"{volume}/{ipc_name}.bin"
    before = across["second"].run("read", path=path)
    written = across["first"].run("write", path=path, size=1 << 20, seed=ipc_name)
    seen = across["second"].run("await-file", path=path, size=written.get("size", 0),
                                sha256=written.get("sha256", ""), timeout=APPEAR_WITHIN) if written["ok"] else {}
    foreign = across["own"].run("read", path=path)
    evidence.update(second_before=before, first=written, second=seen, own=foreign)
    assert written["ok"], f"the first pod could not write a file in the claim: {describe(written)}"
    if seen.get("ok"):
        evidence.figure("file write → whole in the other pod", "ms", [seen["took_ms"]])
    assert seen["ok"], (f"the second pod does not read the first pod's file whole within {APPEAR_WITHIN:g}s "
                        f"(it saw {seen.get('looks')}): {describe(seen)}")
    assert failed_with(foreign, "ENOENT"), (
        stranger_sees("the pod with a claim of its own has the first pod's file", foreign))


@pytest.mark.parametrize("kind", ["flock", "fcntl"])
def test_a_lock_held_in_one_pod_blocks_the_other(across, volume, ipc_name, kind, evidence):
    """An exclusive lock (flock or fcntl) the first pod holds on a file of the
    claim makes the second pod's non-blocking attempt fail with EAGAIN; once the
    first releases it, the second gets it."""
    path = f"{volume}/{ipc_name}.lock"
    with across["first"].start("hold-lock", path=path, kind=kind) as hold:
        contended = across["second"].run("try-lock", path=path, kind=kind)
    after = across["second"].run("try-lock", path=path, kind=kind)
    evidence.update(first=hold.result(), second_while_held=contended, second_after_release=after)
    if contended["ok"]:
        pytest.fail(f"the second pod took the {kind} lock the first pod holds on their shared file: "
                    "locks do not cross the pods")
    assert failed_with(contended, "EAGAIN"), (
        could_not("the second pod", "the first pod's lock file", contended) if contended.get("step") != "lock"
        else f"the second pod's {kind} attempt on the lock the first pod holds failed with {describe(contended)}, "
             "not EAGAIN (held elsewhere)")
    assert after["ok"], f"the second pod could not take the {kind} lock after the first released it: {describe(after)}"


def test_inotify_in_one_pod_sees_the_other_pods_write(across, volume, ipc_name, evidence):
    """The second pod watches the claim's directory with inotify and sees the
    first pod's file written and closed, before a file it writes itself after
    it (its own event coming first settles it at once)."""
    name, marker = f"{ipc_name}.log", f"{ipc_name}.after"
    watcher = across["second"].start("watch", path=volume, name=name, after=marker, timeout=5).wait_ready()
    written = across["first"].run("write", path=f"{volume}/{name}", size=4096, seed=name)
    across["second"].run("write", path=f"{volume}/{marker}", size=1, seed=marker)
    events = watcher.result()
    evidence.update(first=written, second=events)
    assert written["ok"], f"the first pod could not write a file in the claim: {describe(written)}"
    assert events["ok"], f"the second pod's inotify saw no close-write of the first pod's file: {describe(events)}"
    assert any(e["name"] == name and "IN_CLOSE_WRITE" in e["mask"] for e in events["events"]), (
        f"the second pod's inotify saw events, but not the first pod's close-write of {name}: {events['events']}")
