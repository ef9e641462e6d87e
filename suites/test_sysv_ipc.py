"""System V IPC: the pod's containers share one IPC namespace, so semaphores,
shared memory segments and message queues made in one are found by key in the
others, and in no other pod. Broken in the wild by dockerd's private IPC mode
and by runtimes that run each container in its own VM or sandbox kernel."""
import pytest

from podshare.evidence import describe, failed_with, stranger_sees
from podshare.retry import GaveUp, NotYet, wait_until

pytestmark = pytest.mark.ipc


def test_semaphore_created_in_alpha_is_visible_in_beta_with_its_value(alpha, beta, stranger, ipc_key, evidence):
    """A semaphore created in alpha is found by key in beta with the same id and
    value; the stranger pod gets ENOENT for the key."""
    created = alpha.run("sysv-sem-create", key=ipc_key, value=3)
    seen = beta.run("sysv-sem-info", key=ipc_key)
    foreign = stranger.run("sysv-sem-info", key=ipc_key)
    evidence.update(key=ipc_key, alpha=created, beta=seen, stranger=foreign)
    assert created["ok"], f"alpha could not create a System V semaphore: {describe(created)}"
    assert seen["ok"], f"beta does not see alpha's semaphore: {describe(seen)}"
    assert (seen["id"], seen["value"]) == (created["id"], 3), (
        f"beta found another semaphore under the key: id {seen['id']} value {seen['value']}, "
        f"alpha made id {created['id']} value 3")
    assert failed_with(foreign, "ENOENT"), (
        stranger_sees("the stranger pod finds alpha's semaphore key", foreign))


def test_semop_blocked_in_beta_is_released_by_alpha(alpha, beta, ipc_key, evidence):
    """Real cross-container synchronisation: beta blocks in semop on a semaphore at 0;
    alpha sees beta waiting (semncnt) and releases it, which wakes beta."""
    created = alpha.run("sysv-sem-create", key=ipc_key, value=0)
    assert created["ok"], f"alpha could not create a System V semaphore: {describe(created)}"
    waiter = beta.start("sysv-sem-acquire", key=ipc_key, timeout=30).wait_ready()

    def beta_is_waiting():
        info = alpha.run("sysv-sem-info", key=ipc_key)
        if info.get("waiting", 0) < 1:
            raise NotYet(f"no waiter seen from alpha: {info}")
        return info
    try:
        seen_waiting = wait_until(beta_is_waiting, timeout=15, what="alpha to see beta blocked in semop")
    except GaveUp as exc:
        waiter.release()
        pytest.fail(f"alpha never saw beta blocked on their shared semaphore: {exc}", pytrace=False)
    released = alpha.run("sysv-sem-release", key=ipc_key)
    woken = waiter.result()
    evidence.update(key=ipc_key, seen_from_alpha=seen_waiting, alpha_release=released, beta=woken)
    assert released["ok"], f"alpha could not release the semaphore: {describe(released)}"
    assert woken["ok"], f"beta was not woken by alpha's release: {woken}"


def test_shared_memory_written_in_alpha_is_read_byte_exact_in_beta(alpha, beta, stranger, ipc_key, evidence):
    """A shared memory segment's bytes written in alpha are read unchanged in beta;
    the key does not exist for the stranger pod."""
    size = 1 << 20
    written = alpha.run("sysv-shm-write", key=ipc_key, size=size, seed=ipc_key)
    read = beta.run("sysv-shm-read", key=ipc_key, size=size)
    foreign = stranger.run("sysv-shm-read", key=ipc_key, size=size)
    evidence.update(key=ipc_key, alpha=written, beta=read, stranger=foreign)
    assert written["ok"], f"alpha could not write a System V shared memory segment: {describe(written)}"
    assert read["ok"], f"beta cannot attach alpha's segment: {describe(read)}"
    assert (read["id"], read["size"], read["sha256"]) == (written["id"], size, written["sha256"]), (
        "beta read another segment or other bytes than alpha wrote")
    assert failed_with(foreign, "ENOENT"), (
        stranger_sees("the stranger pod attaches alpha's segment", foreign))


def test_message_queue_carries_a_message_from_alpha_to_beta(alpha, beta, stranger, ipc_key, evidence):
    """A message sent on a System V queue in alpha is received in beta; the stranger
    pod has no such queue."""
    text = f"hello from alpha {ipc_key}"
    sent = alpha.run("sysv-mq-send", key=ipc_key, text=text, type=7)
    received = beta.run("sysv-mq-receive", key=ipc_key)
    # After beta: a stranger sharing the queue would otherwise take the message,
    # and the failure would blame beta. An empty queue it can see is EAGAIN, not ENOENT.
    foreign = stranger.run("sysv-mq-receive", key=ipc_key)
    evidence.update(key=ipc_key, alpha=sent, beta=received, stranger=foreign)
    assert sent["ok"], f"alpha could not send on a System V message queue: {describe(sent)}"
    assert received["ok"], f"beta did not receive alpha's message: {describe(received)}"
    assert (received["text"], received["type"]) == (text, 7), f"beta received another message: {received}"
    assert failed_with(foreign, "ENOENT"), (
        stranger_sees("the stranger pod finds alpha's queue", foreign))
