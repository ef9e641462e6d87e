"""Volumes: an emptyDir (or a PersistentVolumeClaim) is one directory for all
the pod's containers, on disk or in memory; what one container does to a file the others see at once, with
locks, inotify, unix sockets and shared mappings working across containers.
Stricter than upstream's "shared volumes between containers" Conformance test:
byte-exact, live, and with a stranger pod as the negative control. Broken in
the wild by gVisor (inotify across containers, mmap coherence on gofer
mounts) and by virtio-fs/9p shares in VM runtimes."""
import pytest
from kubernetes.utils import parse_quantity

from podshare.evidence import could_not, describe, failed_with, stranger_sees

pytestmark = pytest.mark.volume
# `volume` (podshare's fixture) is where the claim's containers share their
# volume: each claim runs once per volume kind, the disk and Memory emptyDirs and
# a PVC of each --storage-class.


def test_file_written_in_alpha_is_read_byte_exact_in_beta(alpha, beta, stranger, volume, ipc_name, evidence):
    """A 1 MiB file written in alpha is read byte-exact in beta; the stranger
    pod's volume of the same name does not have it."""
    path = f"{volume}/{ipc_name}.bin"
    written = alpha.run("write", path=path, size=1 << 20, seed=ipc_name)
    read = beta.run("read", path=path)
    foreign = stranger.run("read", path=path)
    evidence.update(alpha=written, beta=read, stranger=foreign)
    assert written["ok"], f"alpha could not write a file in the volume: {describe(written)}"
    assert read["ok"], could_not("beta", "alpha's file", read)
    assert (read["size"], read["sha256"]) == (written["size"], written["sha256"]), (
        f"beta read {read['size']} bytes that differ from the {written['size']} alpha wrote")
    assert failed_with(foreign, "ENOENT"), (
        stranger_sees("the stranger pod has alpha's file in its volume of the same name", foreign))


def test_rename_append_and_delete_are_seen_at_once(alpha, beta, volume, ipc_name, evidence):
    """Metadata changes made in one container are visible in the other at once:
    beta renames alpha's file, alpha appends to it, beta reads the appended text,
    alpha deletes it and beta no longer finds it."""
    first, second = f"{volume}/{ipc_name}.a", f"{volume}/{ipc_name}.b"
    steps = {
        "alpha_append": alpha.run("append", path=first, text="one\n"),
        "beta_rename": beta.run("rename", path=first, to=second),
        "alpha_old_name": alpha.run("read", path=first),
        "alpha_append_new": alpha.run("append", path=second, text="two\n"),
        "beta_read": beta.run("read", path=second, text=True),
        "alpha_delete": alpha.run("delete", path=second),
        "beta_after_delete": beta.run("read", path=second),
    }
    evidence.update(steps)
    assert steps["alpha_append"]["ok"], f"alpha could not create a file in the volume: {describe(steps['alpha_append'])}"
    assert steps["beta_rename"]["ok"], f"beta could not rename alpha's file: {describe(steps['beta_rename'])}"
    assert steps["alpha_old_name"].get("errno") == "ENOENT", "alpha still sees the name beta renamed away"
    assert steps["beta_read"].get("text") == "one\ntwo\n", (
        "beta does not read alpha's appended text: " + (
            f"it reads {len(steps['beta_read']['text'])} other characters" if steps["beta_read"].get("ok")
            else describe(steps["beta_read"])))
    assert steps["alpha_delete"]["ok"], f"alpha could not delete the file beta renamed: {describe(steps['alpha_delete'])}"
    assert failed_with(steps["beta_after_delete"], "ENOENT"), (
        "beta still reads the file alpha deleted")


@pytest.mark.parametrize("kind", ["flock", "fcntl"])
def test_lock_held_in_alpha_blocks_beta(alpha, beta, volume, ipc_name, kind, evidence):
    """An exclusive lock (flock or fcntl) held in alpha makes beta's non-blocking
    attempt fail with EAGAIN; after alpha releases it, beta gets the lock."""
    path = f"{volume}/{ipc_name}.lock"
    with alpha.start("hold-lock", path=path, kind=kind) as hold:
        contended = beta.run("try-lock", path=path, kind=kind)
    after = beta.run("try-lock", path=path, kind=kind)
    evidence.update(alpha=hold.result(), beta_while_held=contended, beta_after_release=after)
    assert failed_with(contended, "EAGAIN"), lock_not_contended(kind, contended)
    assert after["ok"], f"beta could not take the {kind} lock after alpha released it: {describe(after)}"


def lock_not_contended(kind: str, answer: dict) -> str:
    """What beta's attempt on the lock alpha holds showed, and no more: taking it
    is the broken promise; a failure at another step says only what happened there."""
    if answer["ok"]:
        return f"beta took the {kind} lock alpha holds on their shared file: locks do not cross the containers"
    if answer.get("step") == "lock":
        return f"beta's {kind} attempt on the lock alpha holds failed with {describe(answer).split(' with ', 1)[-1]}, " \
               "not EAGAIN (held elsewhere)"
    return could_not("beta", "alpha's lock file", answer)


def test_inotify_in_beta_sees_alpha_write(alpha, beta, volume, ipc_name, evidence):
    """The log-watcher pattern: beta watches the volume with inotify and sees
    alpha's file written and closed, before the file beta writes after it."""
    name, marker = f"{ipc_name}.log", f"{ipc_name}.after"
    # beta's own file, written once alpha's write has returned: its event coming first
    # settles it at once (one directory's events queue in order) instead of a timeout
    watcher = beta.start("watch", path=volume, name=name, after=marker, timeout=5).wait_ready()
    written = alpha.run("write", path=f"{volume}/{name}", size=4096, seed=name)
    beta.run("write", path=f"{volume}/{marker}", size=1, seed=marker)
    events = watcher.result()
    beta.run("delete", path=f"{volume}/{marker}")  # a page left in the Memory volume would shift its fill claim
    evidence.update(alpha=written, beta=events)
    assert events["ok"], f"beta's inotify saw no close-write of alpha's file in the shared volume: {describe(events)}"
    assert any(e["name"] == name and "IN_CLOSE_WRITE" in e["mask"] for e in events["events"]), (
        f"beta's inotify saw events, but not alpha's close-write of {name}: {events['events']}")


def test_unix_socket_file_in_the_volume_connects(alpha, beta, stranger, volume, ipc_name, evidence):
    """A unix socket bound in the volume by alpha accepts beta's connection; the
    stranger pod's volume has no such socket."""
    path = f"{volume}/{ipc_name}.sock"
    with alpha.start("hold-unix", path=path):
        seen = beta.run("connect-unix", path=path)
        foreign = stranger.run("connect-unix", path=path)
    evidence.update(beta=seen, stranger=foreign)
    assert seen["ok"] and seen["peer"]["container"] == "alpha", (
        f"beta cannot connect to the unix socket alpha bound in the volume: {describe(seen)}")
    assert failed_with(foreign, "ENOENT"), (
        stranger_sees("the stranger pod connects to alpha's socket file", foreign))


def test_shared_mappings_are_coherent(alpha, beta, volume, ipc_name, evidence):
    """MAP_SHARED mappings of one file are coherent across containers: beta's
    mapping shows what alpha wrote into its own, and alpha's mapping shows
    beta's overwrite, without re-reading the file."""
    path = f"{volume}/{ipc_name}.map"
    with alpha.start("hold-mmap", path=path, size=65536, seed="alpha") as hold:
        beta_write = beta.run("mmap-write", path=path, size=65536, seed="beta")
    alpha_view = hold.result()
    evidence.update(alpha=alpha_view, beta=beta_write)
    assert beta_write["ok"], could_not("beta", "alpha's mapped file", beta_write)
    assert beta_write["mapped_before_sha256"] == alpha_view["written_sha256"], "beta's mapping missed alpha's write"
    assert alpha_view["mapped_sha256"] == beta_write["written_sha256"], "alpha's mapping missed beta's write"


PAST = 16 << 20  # how far past a claim's capacity a write goes
FILLABLE = 1 << 30  # a volume bigger than this is not filled in a check: its size is not checked


@pytest.mark.pvc_only
def test_a_write_past_the_claims_capacity_fails_with_enospc(alpha, volume, ipc_name, kube, evidence):
    """A PersistentVolumeClaim's volume holds what its capacity says (64Mi asked;
    the bound volume's capacity as the API gives it): a write of 16 MiB past it
    fails with ENOSPC or EDQUOT before more than the capacity is in. Whether a
    class enforces it is the provisioner's doing (a directory on a node's disk
    does not): what an app that relies on the claim's size meets."""
    pod = alpha.pod
    claim = next(f"{pod.name}-{v['name']}" for v in pod.body["spec"]["volumes"]  # a generic ephemeral volume's
                 if v.get("ephemeral") and f"/data/{v['name']}" == volume)
    bound = kube.pvc(pod.namespace, claim)
    capacity = (bound.status.capacity or {}).get("storage")
    evidence.update(claim=claim, requested=bound.spec.resources.requests.get("storage"), capacity=capacity)
    assert capacity, f"PersistentVolumeClaim {claim} is bound to no capacity"
    size = int(parse_quantity(capacity))
    if size > FILLABLE:
        pytest.skip(f"not applicable: the volume's capacity {capacity} is too big to fill in a check")
    filled = alpha.run("fill", path=f"{volume}/{ipc_name}.fill", size=size + PAST)
    evidence.update(fill=filled)
    assert filled["ok"] or filled.get("step") == "write", could_not("alpha", "a file in the volume", filled)
    assert filled["ok"] is False and filled.get("errno") in ("ENOSPC", "EDQUOT"), (
        f"a write {PAST >> 20} MiB past the claim's capacity {capacity} succeeded: {filled['written']} bytes went in"
        if filled["ok"] else
        f"a write past the claim's capacity {capacity} failed with {describe(filled).split(' with ', 1)[-1]}, "
        "not ENOSPC or EDQUOT")
    assert filled["written"] <= size, f"{filled['written']} bytes went into a volume of {capacity}"


@pytest.mark.volume_kind("emptyDir:Memory")
def test_memory_volume_is_tmpfs_and_honours_its_size_limit(probe_set, alpha, beta, ipc_name, evidence):
    """The `medium: Memory` emptyDir is a tmpfs sized to its sizeLimit, and a write
    past the limit fails with ENOSPC."""
    # What the pod promises, from the pod as the API returns it (whatever the volume is called).
    volume = probe_set.volume_at("alpha", "/data/memory")
    empty_dir = (volume or {}).get("emptyDir") or {}
    evidence.update(volume=volume)
    assert empty_dir.get("medium") == "Memory", (
        f"the volume at /data/memory is not a medium: Memory emptyDir: it is {volume_in_words(volume)}")
    limit = empty_dir.get("sizeLimit")
    assert limit, "the Memory emptyDir at /data/memory declares no sizeLimit, so there is no size to honour"
    limit_bytes = int(parse_quantity(str(limit)))
    fs = alpha.run("filesystem", path="/data/memory")
    filled = beta.run("fill", path=f"/data/memory/{ipc_name}.fill", size=limit_bytes + (4 << 20))
    evidence.update(size_limit=limit, filesystem=fs, fill=filled)
    assert fs["ok"], f"alpha cannot stat the memory volume: {describe(fs)}"
    assert fs["fstype"] == "tmpfs", f"the memory volume is {fs.get('fstype')}, not tmpfs"
    assert fs["size_bytes"] == limit_bytes, f"the memory volume's tmpfs is {fs['size_bytes']} bytes, not its sizeLimit {limit}"
    assert filled["ok"] or filled.get("step") == "write", could_not("beta", "a file in the memory volume", filled)
    assert failed_with(filled, "ENOSPC"), (
        f"a write past the {limit} sizeLimit succeeded: {filled['written']} bytes went in" if filled["ok"] else
        f"a write past the {limit} sizeLimit failed with {describe(filled).split(' with ', 1)[-1]}, not ENOSPC")
    assert filled["written"] <= limit_bytes, f"{filled['written']} bytes went into a volume limited to {limit}"


def volume_in_words(volume: dict | None) -> str:
    """A pod volume (as the API returns it) as a reader would name it."""
    if not volume:
        return "no volume of the pod"
    kind = next((k for k in volume if k != "name"), "unknown")
    source = volume.get(kind) or {}
    if kind == "emptyDir":
        return (f"the emptyDir {volume['name']} with " + (f"medium {source['medium']}" if source.get("medium")
                                                           else "no medium (the node's disk)")
                + (f" and sizeLimit {source['sizeLimit']}" if source.get("sizeLimit") else ""))
    return f"the {kind} volume {volume['name']}" + (f" of {source['path']}" if source.get("path") else "")
