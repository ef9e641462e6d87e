"""POSIX IPC verbs: shm_open, named semaphores, mq_open, and /dev/shm itself."""
from __future__ import annotations

import ctypes
import errno
import mmap
import os

import posix_ipc

from . import payload
from .output import answered, failure, ok, step

TMPFS_MAGIC = 0x01021994


def _name(args) -> str:
    return args.name if args.name.startswith("/") else "/" + args.name


# a verb's failure is its answer, naming the object
_answered = answered((posix_ipc.Error, OSError), lambda args: {"name": _name(args)})


def _object(args) -> dict:
    """A shm_open object's name and its file (glibc keeps them in /dev/shm)."""
    return {"name": _name(args), "path": "/dev/shm" + _name(args)}


@_answered
def shm_write(args) -> dict:
    data = payload.generate(args.size, args.seed)
    where = _object(args)
    with step("open", **where):
        shm = posix_ipc.SharedMemory(_name(args), posix_ipc.O_CREX, mode=0o600, size=args.size)
    with step("map", **where):
        m = mmap.mmap(shm.fd, args.size)
    with m, step("write", mapped=True, **where):  # past a full /dev/shm: SIGBUS
        m.write(data)
    shm.close_fd()
    return ok(name=_name(args), size=args.size, sha256=payload.digest(data))


@_answered
def shm_read(args) -> dict:
    where = _object(args)
    with step("open", **where):
        shm = posix_ipc.SharedMemory(_name(args))
    with step("map", **where):
        m = mmap.mmap(shm.fd, shm.size, prot=mmap.PROT_READ)
    with m, step("read", mapped=True, **where):
        data = m[: shm.size]
    shm.close_fd()
    return ok(name=_name(args), size=len(data), sha256=payload.digest(data))


@_answered
def sem_create(args) -> dict:
    with step("open", name=_name(args)):
        sem = posix_ipc.Semaphore(_name(args), posix_ipc.O_CREX, mode=0o600, initial_value=args.value)
    value = sem.value
    sem.close()
    return ok(name=_name(args), value=value)


@_answered
def sem_info(args) -> dict:
    with step("open", name=_name(args)):
        sem = posix_ipc.Semaphore(_name(args))
    value = sem.value
    sem.close()
    return ok(name=_name(args), value=value)


def mq_send(args) -> dict:
    try:
        # small: the kernel charges a queue's full size (10 x 8 KiB by default) to the
        # uid's RLIMIT_MSGQUEUE (800 KiB), shared by every pod of that uid on the node
        with step("open", name=_name(args)):
            mq = posix_ipc.MessageQueue(_name(args), posix_ipc.O_CREAT, mode=0o600, max_messages=2,
                                        max_message_size=1024)
        with step("send", name=_name(args)):
            mq.send(args.text.encode(), timeout=0)
        queued = mq.current_messages
        mq.close()
    except (posix_ipc.Error, OSError) as exc:
        result = failure(exc, name=_name(args))
        if type(exc) is posix_ipc.Error:  # the library's catch-all: ask the syscalls themselves
            result["syscalls"] = _mq_syscalls(_name(args), args.text.encode())
            failed = next(((call, e) for call, e in result["syscalls"].items() if e != "ok"), None)
            if failed and hasattr(errno, failed[1]):  # the syscall's own errno and words, its step
                result.update(errno=failed[1], detail=os.strerror(getattr(errno, failed[1])),
                              step=failed[0].removeprefix("mq_"))
        return result
    return ok(name=_name(args), queued=queued)


def _mq_syscalls(name: str, message: bytes) -> dict[str, str]:
    """mq_open, mq_send and mq_getattr one by one, each with its errno name, for
    the evidence when posix_ipc only says "Unable to initialize object"."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mq_open.restype = ctypes.c_int
    libc.mq_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p]

    def outcome(rc: int) -> str:
        return "ok" if rc != -1 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
    seen = {}
    mqd = libc.mq_open(name.encode(), os.O_CREAT | os.O_RDWR | os.O_NONBLOCK, 0o600, None)
    seen["mq_open"] = outcome(mqd)
    if mqd != -1:
        seen["mq_send"] = outcome(libc.mq_send(mqd, message, len(message), 0))
        attr = ctypes.create_string_buffer(64)
        seen["mq_getattr"] = outcome(libc.mq_getattr(mqd, attr))
        libc.mq_close(mqd)
        libc.mq_unlink(name.encode())
    return seen


@_answered
def mq_receive(args) -> dict:
    with step("open", name=_name(args)):
        mq = posix_ipc.MessageQueue(_name(args))
    with step("receive", name=_name(args)):
        message, priority = mq.receive(timeout=0)
    mq.close()
    return ok(name=_name(args), text=message.decode(), priority=priority)


def unlink(args) -> dict:
    try:
        {"shm": posix_ipc.unlink_shared_memory, "sem": posix_ipc.unlink_semaphore,
         "mq": posix_ipc.unlink_message_queue}[args.kind](_name(args))
    except (posix_ipc.Error, OSError) as exc:
        return failure(exc, name=_name(args), kind=args.kind)
    return ok(name=_name(args), kind=args.kind)


def mount_of(path: str) -> dict:
    """The mountinfo entry for `path`: file system type, source and options."""
    best: dict = {}
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            fields = left.split()
            mountpoint = fields[4]
            if real == mountpoint or real.startswith(mountpoint.rstrip("/") + "/"):
                if len(mountpoint) >= len(best.get("mountpoint", "")):
                    fstype, source, super_opts = right.split()[:3]
                    best = {"mountpoint": mountpoint, "fstype": fstype, "source": source,
                            "options": fields[5] + "," + super_opts}
    return best


def filesystem(args) -> dict:
    """statfs and mountinfo of a path: /dev/shm's tmpfs, a volume's medium."""
    try:
        st = os.statvfs(args.path)
        device = os.stat(args.path).st_dev  # one file system instance <=> one device number
        mount = mount_of(args.path)
    except OSError as exc:
        return failure(exc, path=args.path)
    return ok(path=args.path, device=f"{os.major(device)}:{os.minor(device)}", size_bytes=st.f_blocks * st.f_frsize,
              free_bytes=st.f_bavail * st.f_frsize, **mount)
