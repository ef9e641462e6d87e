"""File verbs for the pod's volumes: content, metadata, locks, inotify, mmap."""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import mmap
import os
import select
import struct
import time

from . import payload
from .holding import Holder
from .output import failure, ok, signal_ready, step


def write(args) -> dict:
    data = payload.generate(args.size, args.seed)
    try:
        with step("open", path=args.path):
            f = open(args.path, "wb")
        with f, step("write", path=args.path):
            f.write(data)
            if args.fsync:
                os.fsync(f.fileno())
    except OSError as exc:
        return failure(exc, path=args.path)
    # The kernel's boot clock, for ordering against other containers of the pod
    # finer than the API's one-second timestamps (a data loader's finish, say).
    return ok(path=args.path, size=len(data), sha256=payload.digest(data),
              boottime_ns=time.clock_gettime_ns(time.CLOCK_BOOTTIME))


def await_file(args) -> dict:
    """Poll for a file another pod writes, as a poller does, until it is there
    whole (its size and digest as written) or the timeout: how long it took to
    appear, and how it looked on the way (absent, short, other bytes), which a
    network file system's attribute and page caches decide."""
    started = time.monotonic()
    seen: dict[str, int] = {}
    last: dict = {}
    while True:
        try:
            with open(args.path, "rb") as f:
                data = f.read()
            look = "whole" if (len(data), payload.digest(data)) == (args.size, args.sha256) else "other bytes"
            last = {"size": len(data), "sha256": payload.digest(data)}
        except OSError as exc:
            look = errno.errorcode.get(exc.errno, str(exc.errno))
        seen[look] = seen.get(look, 0) + 1
        took = time.monotonic() - started
        if look == "whole":
            return ok(path=args.path, took_ms=round(took * 1000, 1), looks=seen, **last)
        if took > args.timeout:
            return failure(TimeoutError(errno.ETIMEDOUT, f"not whole after {args.timeout:g}s"), path=args.path,
                           looks=seen, **last)
        time.sleep(0.005)


def append(args) -> dict:
    try:
        with step("open", path=args.path):
            f = open(args.path, "ab")
        with f, step("write", path=args.path):
            f.write(args.text.encode())
        size = os.path.getsize(args.path)
    except OSError as exc:
        return failure(exc, path=args.path)
    return ok(path=args.path, size=size)


def read(args) -> dict:
    try:
        with step("open", path=args.path):
            f = open(args.path, "rb")
        with f, step("read", path=args.path):
            data = f.read()
    except OSError as exc:
        return failure(exc, path=args.path)
    fields = {"path": args.path, "size": len(data), "sha256": payload.digest(data)}
    if args.text:
        fields["text"] = data.decode(errors="replace")
    return ok(**fields)


def rename(args) -> dict:
    try:
        os.rename(args.path, args.to)
    except OSError as exc:
        return failure(exc, path=args.path, to=args.to)
    return ok(path=args.path, to=args.to)


def delete(args) -> dict:
    try:
        os.unlink(args.path)
    except OSError as exc:
        return failure(exc, path=args.path)
    return ok(path=args.path)


def listdir(args) -> dict:
    try:
        entries = sorted(os.listdir(args.path))
    except OSError as exc:
        return failure(exc, path=args.path)
    return ok(path=args.path, entries=entries)


def owner(args) -> dict:
    """Who owns a path as this container sees it (uid, gid, mode), and its size:
    a stat, never a read (a reader that read a tmpfs file would be charged for it)."""
    try:
        st = os.stat(args.path)
    except OSError as exc:
        return failure(exc, path=args.path)
    return ok(path=args.path, uid=st.st_uid, gid=st.st_gid, mode=oct(st.st_mode & 0o7777), size=st.st_size)


def take_lock(fd: int, kind: str, blocking: bool) -> None:
    if kind == "flock":
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    else:  # fcntl: POSIX record lock on the whole file
        fcntl.lockf(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))


def hold_lock(args) -> dict:
    holder = Holder(args.seconds)
    try:
        with step("open", path=args.path):
            fd = os.open(args.path, os.O_RDWR | os.O_CREAT, 0o644)
        with step("lock", path=args.path, kind=args.kind):
            take_lock(fd, args.kind, blocking=True)
    except OSError as exc:
        return failure(exc, path=args.path, kind=args.kind)
    holder.wait(path=args.path, kind=args.kind)
    os.close(fd)
    return ok(path=args.path, kind=args.kind, **holder.summary())


def try_lock(args) -> dict:
    """A non-blocking attempt; EAGAIN means another process holds the lock."""
    try:
        with step("open", path=args.path):
            fd = os.open(args.path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        return failure(exc, path=args.path, kind=args.kind)
    try:
        with step("lock", path=args.path, kind=args.kind):
            take_lock(fd, args.kind, blocking=False)
    except OSError as exc:
        if exc.errno == errno.EACCES:  # fcntl may say EACCES for a conflicting lock
            exc.errno = errno.EAGAIN
        return failure(exc, path=args.path, kind=args.kind)
    finally:
        os.close(fd)
    return ok(path=args.path, kind=args.kind)


IN_FLAGS = {0x2: "IN_MODIFY", 0x4: "IN_ATTRIB", 0x8: "IN_CLOSE_WRITE", 0x40: "IN_MOVED_FROM",
            0x80: "IN_MOVED_TO", 0x100: "IN_CREATE", 0x200: "IN_DELETE", 0x400: "IN_DELETE_SELF",
            0x800: "IN_MOVE_SELF", 0x8000: "IN_IGNORED"}
_WRITES = 0x2 | 0x8 | 0x40 | 0x80 | 0x100 | 0x200  # what `watch` asks for: a file written in a directory
_EVENT = struct.Struct("iIII")


def inotify_watches(paths: list[str], mask: int) -> tuple[int, dict[int, str]]:
    """An inotify descriptor watching each path (libc; the stdlib has no binding),
    and the watch descriptor of each. A symlink is followed: the file it names is watched."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fd = libc.inotify_init1(os.O_CLOEXEC)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "inotify_init1")
    watches = {}
    for path in paths:
        wd = libc.inotify_add_watch(fd, path.encode(), mask)
        if wd < 0:
            number = ctypes.get_errno()
            os.close(fd)
            raise OSError(number, os.strerror(number), path)
        watches[wd] = path
    return fd, watches


def _inotify(directory: str, mask: int) -> int:
    return inotify_watches([directory], mask)[0]


def inotify_events(fd: int) -> list[tuple[int, str, list[str]]]:
    """The events one read of the descriptor returns: (watch, name, flag names)."""
    buf, offset, events = os.read(fd, 65536), 0, []
    while offset < len(buf):
        wd, mask, _cookie, length = _EVENT.unpack_from(buf, offset)
        name = buf[offset + _EVENT.size: offset + _EVENT.size + length].rstrip(b"\0").decode()
        offset += _EVENT.size + length
        events.append((wd, name, [n for bit, n in IN_FLAGS.items() if mask & bit]))
    return events


def watch(args) -> dict:
    """Report inotify events in a directory until `name` is closed after writing.
    With `after`, a file the caller writes there once `name`'s writer is done: one
    directory's events queue in the order they happen, and a close-write's event is
    queued before the close returns, so `after`'s close-write arriving first means
    `name`'s will never come (ENOMSG), decided without waiting out the timeout."""
    try:
        fd = _inotify(args.path, _WRITES)
    except OSError as exc:
        return failure(exc, path=args.path)
    signal_ready(path=args.path)
    events, deadline, done = [], time.monotonic() + args.timeout, False
    try:
        while not done:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return failure(OSError(errno.ETIMEDOUT, "no close-write event for the file"),
                               path=args.path, events=events)
            for _wd, name, names in inotify_events(fd):
                events.append({"name": name, "mask": names})
                done = done or (name == args.name and "IN_CLOSE_WRITE" in names)
                if not done and args.after and name == args.after and "IN_CLOSE_WRITE" in names:
                    return failure(OSError(errno.ENOMSG, "the later file's close-write came, the file's never did"),
                                   path=args.path, events=events, overtaken_by=args.after)
    finally:
        os.close(fd)
    return ok(path=args.path, events=events)


def hold_mmap(args) -> dict:
    """Map a file MAP_SHARED, write a pattern, and report what the mapping holds
    when released: another container's writes must show up here."""
    holder = Holder(args.seconds)
    data = payload.generate(args.size, args.seed)
    try:
        with step("open", path=args.path):
            fd = os.open(args.path, os.O_RDWR | os.O_CREAT, 0o644)
        with step("truncate", path=args.path, size=args.size):
            os.ftruncate(fd, args.size)
        with step("map", path=args.path):
            m = mmap.mmap(fd, args.size, mmap.MAP_SHARED)
    except OSError as exc:
        return failure(exc, path=args.path)
    with step("write", path=args.path, mapped=True):  # past a full tmpfs: SIGBUS
        m[:] = data
    holder.wait(path=args.path, sha256=payload.digest(data))
    seen = payload.digest(m[:])
    m.close()
    os.close(fd)
    return ok(path=args.path, written_sha256=payload.digest(data), mapped_sha256=seen, **holder.summary())


def mmap_write(args) -> dict:
    """Map the file MAP_SHARED, report what is mapped, then overwrite it."""
    data = payload.generate(args.size, args.seed)
    try:
        with step("open", path=args.path):
            fd = os.open(args.path, os.O_RDWR)
        with step("map", path=args.path):
            m = mmap.mmap(fd, args.size, mmap.MAP_SHARED)
    except (OSError, ValueError) as exc:  # ValueError: the file is shorter than the mapping
        return failure(exc if isinstance(exc, OSError) else OSError(errno.EINVAL, str(exc)), path=args.path,
                       step=getattr(exc, "podshare_step", "map"))
    before = payload.digest(m[:])
    with step("write", path=args.path, mapped=True):
        m[:] = data
    m.close()
    os.close(fd)
    return ok(path=args.path, mapped_before_sha256=before, written_sha256=payload.digest(data))


def fill(args) -> dict:
    """Write up to `size` bytes in 1 MiB chunks; a size-limited tmpfs stops us with
    ENOSPC. With --keep the file stays (a writer killed on the way leaves it anyway:
    what went in is the evidence of how far it got); with --oom-first, this process
    is the one its memory cgroup's OOM killer picks, not the container's agent."""
    chunk = b"\0" * (1 << 20)
    written = 0
    try:
        if args.oom_first:  # raising one's own score needs no privilege; the kernel then picks this process
            with step("write", path="/proc/self/oom_score_adj"), open("/proc/self/oom_score_adj", "w") as adj:
                adj.write("1000")
        with step("open", path=args.path):
            fd = os.open(args.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        # unbuffered: a short write near the end counts what went in, and the ENOSPC after it
        # is the write's (a buffered file would raise it again at close, outside the step)
        try:
            with step("write", path=args.path):
                while written < args.size:
                    written += os.write(fd, chunk[:min(len(chunk), args.size - written)])
        finally:
            os.close(fd)
    except OSError as exc:
        return failure(exc, path=args.path, written=written)
    finally:
        if not args.keep:
            try:
                os.unlink(args.path)
            except OSError:
                pass
    return ok(path=args.path, written=written)


def tree_digest(args) -> dict:
    """One digest of a directory tree as this container sees it: every entry's
    relative path, type, permission bits and size, a symlink's target and, with
    --content, a regular file's content, in sorted order. Two containers that see
    one tree get one digest; a directory this user may not read is named (and
    counted in), not skipped silently."""
    import hashlib
    whole = hashlib.sha256()
    files = size = 0
    unreadable: list[str] = []

    def walk(directory: str, rel: str) -> None:
        nonlocal files, size
        try:
            names = sorted(os.listdir(directory))
        except OSError as exc:
            unreadable.append(rel or ".")
            whole.update(f"{rel}\0unreadable:{errno.errorcode.get(exc.errno, exc.errno)}\n".encode())
            return
        for name in names:
            path, child = os.path.join(directory, name), f"{rel}/{name}" if rel else name
            st = os.lstat(path)
            head = f"{child}\0{st.st_mode:o}\0{st.st_size}"
            if os.path.islink(path):
                whole.update(f"{head}\0->{os.readlink(path)}\n".encode())
            elif os.path.isdir(path):
                whole.update(f"{head}\0dir\n".encode())
                walk(path, child)
            elif os.path.isfile(path) and not args.content:
                whole.update(f"{head}\0file\n".encode())
                files, size = files + 1, size + st.st_size
            elif os.path.isfile(path):
                try:
                    with open(path, "rb") as f:
                        content = hashlib.file_digest(f, "sha256").hexdigest()
                except OSError as exc:
                    unreadable.append(child)
                    content = f"unreadable:{errno.errorcode.get(exc.errno, exc.errno)}"
                whole.update(f"{head}\0{content}\n".encode())
                files, size = files + 1, size + st.st_size
            else:  # a device, a fifo, a socket: its kind and mode say it
                whole.update(f"{head}\0other\n".encode())

    try:
        with step("walk", path=args.path):
            os.stat(args.path)
            walk(args.path, "")
    except OSError as exc:
        return failure(exc, path=args.path)
    return ok(path=args.path, digest=whole.hexdigest(), files=files, bytes=size,
              unreadable=unreadable[:20], unreadable_count=len(unreadable))
