"""System V IPC verbs: semaphores, shared memory segments, message queues."""
from __future__ import annotations

import errno
import signal
import time

import sysv_ipc

from . import payload
from .output import answered, failure, ok, signal_ready, step

# a verb's failure is its answer, naming the object's key
_answered = answered((sysv_ipc.Error, OSError), lambda args: {"key": args.key})


@_answered
def sem_create(args) -> dict:
    sem = sysv_ipc.Semaphore(args.key, sysv_ipc.IPC_CREX, mode=0o600, initial_value=args.value)
    return ok(key=args.key, id=sem.id, value=sem.value)


@_answered
def sem_info(args) -> dict:
    with step("open", key=args.key):
        sem = sysv_ipc.Semaphore(args.key)
    return ok(key=args.key, id=sem.id, value=sem.value, waiting=sem.waiting_for_nonzero)


def sem_acquire(args) -> dict:
    """Block in semop until another process releases the semaphore (or timeout)."""
    try:
        with step("open", key=args.key):
            sem = sysv_ipc.Semaphore(args.key)
    except (sysv_ipc.Error, OSError) as exc:
        return failure(exc, key=args.key)
    # The PyPI wheel is built without semtimedop: bound the wait with an
    # interval timer whose signal interrupts semop instead.
    expired: list[bool] = []
    signal.signal(signal.SIGALRM, lambda *_: expired.append(True))
    signal_ready(key=args.key)
    start = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, args.timeout)
    try:
        sem.acquire()
    except (sysv_ipc.Error, OSError) as exc:
        waited = round(time.monotonic() - start, 3)
        if expired:
            return failure(OSError(errno.EAGAIN, f"not released within {args.timeout:g}s"),
                           key=args.key, waited_s=waited)
        return failure(exc, key=args.key, waited_s=waited)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return ok(key=args.key, waited_s=round(time.monotonic() - start, 3))


@_answered
def sem_release(args) -> dict:
    sem = sysv_ipc.Semaphore(args.key)
    sem.release()
    return ok(key=args.key, value=sem.value)


@_answered
def shm_write(args) -> dict:
    data = payload.generate(args.size, args.seed)
    with step("open", key=args.key):
        seg = sysv_ipc.SharedMemory(args.key, sysv_ipc.IPC_CREX, mode=0o600, size=args.size)
    with step("write", key=args.key):
        seg.write(data)
    seg.detach()
    return ok(key=args.key, id=seg.id, size=args.size, sha256=payload.digest(data))


@_answered
def shm_read(args) -> dict:
    with step("open", key=args.key):
        seg = sysv_ipc.SharedMemory(args.key)
    with step("read", key=args.key):
        data = seg.read(args.size)
    seg.detach()
    return ok(key=args.key, id=seg.id, size=len(data), sha256=payload.digest(data))


@_answered
def mq_send(args) -> dict:
    with step("open", key=args.key):
        mq = sysv_ipc.MessageQueue(args.key, sysv_ipc.IPC_CREAT, mode=0o600)
    with step("send", key=args.key):
        mq.send(args.text.encode(), block=False, type=args.type)
    return ok(key=args.key, id=mq.id, queued=mq.current_messages)


@_answered
def mq_receive(args) -> dict:
    with step("open", key=args.key):
        mq = sysv_ipc.MessageQueue(args.key)
    with step("receive", key=args.key):
        message, mtype = mq.receive(block=False)
    return ok(key=args.key, id=mq.id, text=message.decode(), type=mtype)


_KINDS = {"sem": sysv_ipc.Semaphore, "shm": sysv_ipc.SharedMemory, "mq": sysv_ipc.MessageQueue}


def remove(args) -> dict:
    try:
        obj = _KINDS[args.kind](args.key)
        obj.remove()
        return ok(key=args.key, kind=args.kind)
    except (sysv_ipc.Error, OSError) as exc:
        return failure(exc, key=args.key, kind=args.kind)
