"""POSIX IPC: shm_open objects and named semaphores live in the pod's /dev/shm
and message queues in its IPC namespace, so all are shared by the pod's
containers and by no other pod. Broken in the wild by per-container /dev/shm
(dockerd private IPC, Kata) and /dev/shm permissions under gVisor."""
import pytest

from podshare.evidence import could_not, describe, failed_with, stranger_sees

pytestmark = pytest.mark.posix


def test_shm_open_object_written_in_alpha_is_read_in_beta(alpha, beta, stranger, ipc_name, evidence):
    """A POSIX shared memory object written in alpha (as a non-root user) is read
    byte-exact in beta; it does not exist for the stranger pod."""
    written = alpha.run("posix-shm-write", name=ipc_name, size=1 << 20, seed=ipc_name)
    read = beta.run("posix-shm-read", name=ipc_name)
    foreign = stranger.run("posix-shm-read", name=ipc_name)
    who = beta.run("identity")
    evidence.update(alpha=written, beta=read, stranger=foreign, uid=who["uid"])
    assert who["uid"] != 0, "the probe runs as root; the claim is about non-root containers"
    assert written["ok"], f"alpha could not write a POSIX shared memory object: {describe(written)}"
    assert read["ok"], could_not("beta", "alpha's shared memory object", read)
    assert (read["size"], read["sha256"]) == (written["size"], written["sha256"]), (
        "beta read other bytes from alpha's shared memory object than alpha wrote")
    assert failed_with(foreign, "ENOENT"), (
        stranger_sees("the stranger pod opens alpha's shared memory object", foreign))


def test_named_semaphore_created_in_alpha_is_visible_in_beta(alpha, beta, stranger, ipc_name, evidence):
    """A POSIX named semaphore created in alpha opens in beta with its value; not in the stranger pod."""
    created = alpha.run("posix-sem-create", name=ipc_name, value=5)
    seen = beta.run("posix-sem-info", name=ipc_name)
    foreign = stranger.run("posix-sem-info", name=ipc_name)
    evidence.update(alpha=created, beta=seen, stranger=foreign)
    assert created["ok"], f"alpha could not create a POSIX named semaphore: {describe(created)}"
    assert seen["ok"], could_not("beta", "alpha's named semaphore", seen)
    assert seen["value"] == 5, f"beta sees alpha's semaphore with the value {seen['value']}, not 5"
    assert failed_with(foreign, "ENOENT"), (
        stranger_sees("the stranger pod opens alpha's named semaphore", foreign))


def test_message_queue_opened_in_alpha_delivers_to_beta(alpha, beta, stranger, ipc_name, evidence):
    """A POSIX message queue (mq_open) made in alpha delivers alpha's message to beta;
    the queue does not exist for the stranger pod."""
    text = f"posix hello {ipc_name}"
    sent = alpha.run("posix-mq-send", name=ipc_name, text=text)
    received = beta.run("posix-mq-receive", name=ipc_name)
    foreign = stranger.run("posix-mq-receive", name=ipc_name)  # after beta: see the System V twin
    evidence.update(alpha=sent, beta=received, stranger=foreign)
    assert sent["ok"], f"alpha could not send on a POSIX message queue: {describe(sent)}"
    assert received["ok"] and received["text"] == text, f"beta did not receive alpha's message: {describe(received)}"
    assert failed_with(foreign, "ENOENT"), (
        stranger_sees("the stranger pod opens alpha's message queue", foreign))


def test_dev_shm_is_one_tmpfs_for_the_pod(alpha, beta, stranger, ipc_name, evidence):
    """/dev/shm is a tmpfs and one file system for the pod: a file alpha makes
    there is read byte-exact in beta and does not exist in the stranger pod. Its
    size is reported (64 MiB is the common default); the devices are evidence
    (they identify a file system only within one kernel, and sandboxed runtimes
    run one per pod)."""
    fs = {c.name: c.run("filesystem", path="/dev/shm") for c in (alpha, beta, stranger)}
    path = f"/dev/shm/{ipc_name}.marker"
    written = alpha.run("write", path=path, size=4096, seed=ipc_name)
    read = beta.run("read", path=path)
    foreign = stranger.run("read", path=path)
    alpha.run("delete", path=path)
    evidence.update(dev_shm=fs, size_mib=fs["alpha"].get("size_bytes", 0) / 2**20, alpha=written, beta=read,
                    stranger=foreign)
    for name in ("alpha", "beta"):
        assert fs[name]["ok"] and fs[name]["fstype"] == "tmpfs", (
            f"/dev/shm in {name} is not a tmpfs: {fs[name].get('fstype') or describe(fs[name])}")
    assert written["ok"], f"alpha cannot write a file in /dev/shm: {describe(written)}"
    assert read["ok"] and read["sha256"] == written["sha256"], (
        f"beta does not read the file alpha made in /dev/shm: {describe(read)}; not one /dev/shm for the pod")
    assert failed_with(foreign, "ENOENT"), (
        stranger_sees("the stranger pod reads alpha's file in its /dev/shm", foreign))
