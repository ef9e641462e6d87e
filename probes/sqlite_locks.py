"""The locks SQLite's WAL mode takes, as another container sees them.

SQLite's unix VFS locks bytes with POSIX fcntl locks: on the -shm file, bytes
120-127 (WAL_WRITE, WAL_CKPT, WAL_RECOVER, WAL_READ0-4) and 128 (DMS, held
shared by every open connection); on the database file, the PENDING, RESERVED
and SHARED bytes at 1 GiB. A second writer's BEGIN IMMEDIATE is its
F_SETLK F_WRLCK on byte 120 of the -shm. `sqlite-locks` asks the kernel what it
sees there (F_GETLK) and makes that very call, so a finding names the lock
call and what it returned, not only SQLite's "database is locked" or its absence.
"""
from __future__ import annotations

import errno
import fcntl
import json
import mmap
import os
import sqlite3
import struct
import time

from .holding import Holder
from .output import failure, ok, step
from .sqlite_db import answered, connect, refused

FLOCK = struct.Struct("hhqqi4x")  # struct flock on Linux (x86_64, aarch64)
SHM_BYTES = {"WAL_WRITE": 120, "WAL_CKPT": 121, "WAL_RECOVER": 122, **{f"WAL_READ{i}": 123 + i for i in range(5)},
             "DMS": 128}
PENDING = 0x40000000
DB_BYTES = {"PENDING": (PENDING, 1), "RESERVED": (PENDING + 1, 1), "SHARED": (PENDING + 2, 510)}
WRITER = ("-shm", "WAL_WRITE", SHM_BYTES["WAL_WRITE"])  # what a second writer's BEGIN IMMEDIATE locks
WAL_INDEX_HEADER = struct.Struct("=IIIBBHII")  # iVersion, unused, iChange, isInit, bigEndCksum, szPage, mxFrame, nPage


def lock_seen(fd: int, start: int, length: int) -> dict:
    """F_GETLK for an exclusive lock on the range: the conflicting lock the kernel
    knows of (shared or exclusive, its owner's pid as this container sees it: 0
    for a process of another pid namespace), or none."""
    answer = fcntl.fcntl(fd, fcntl.F_GETLK, FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, start, length, 0))
    kind, _, _, _, pid = FLOCK.unpack(answer)
    if kind == fcntl.F_UNLCK:
        return {"held": None}
    return {"held": "exclusive" if kind == fcntl.F_WRLCK else "shared", "pid": pid}


def write_lock_seen(path: str) -> dict:
    """What this container sees on the -shm's WAL_WRITE byte (F_GETLK), as a
    second writer's SQLite would meet it. Asked from a child process: closing a
    descriptor of the -shm here would drop the locks this process's own SQLite
    connection holds on it (POSIX locks belong to the process, not the descriptor)."""
    readable, writable = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            fd = os.open(path + "-shm", os.O_RDONLY)
            seen = lock_seen(fd, WRITER[2], 1)
        except OSError as exc:
            seen = {"held": None, "shm": errno.errorcode.get(exc.errno, str(exc.errno))}
        os.write(writable, json.dumps(seen).encode())
        os._exit(0)  # nothing of the parent's (its SQLite connection) is closed or flushed here
    os.close(writable)
    with os.fdopen(readable) as pipe:
        answer = pipe.read()
    os.waitpid(child, 0)
    return json.loads(answer)


def _take_and_drop(fd: int, start: int) -> str:
    """The second writer's lock call, F_SETLK F_WRLCK on one byte: EAGAIN when
    another process holds it; taken (and dropped at once) when none is seen."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETLK, FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, start, 1, 0))
    except OSError as exc:  # POSIX allows EACCES for a lock held elsewhere: one word for both
        return "EAGAIN" if exc.errno in (errno.EAGAIN, errno.EACCES) else errno.errorcode.get(exc.errno, str(exc.errno))
    fcntl.fcntl(fd, fcntl.F_SETLK, FLOCK.pack(fcntl.F_UNLCK, os.SEEK_SET, start, 1, 0))
    return "taken"


def _wal_index(fd: int) -> dict | None:
    """The wal-index header as a MAP_SHARED mapping of the -shm shows it (as SQLite reads it)."""
    if os.fstat(fd).st_size < WAL_INDEX_HEADER.size:
        return None
    with mmap.mmap(fd, WAL_INDEX_HEADER.size, mmap.MAP_SHARED, mmap.PROT_READ) as m:
        version, _, change, init, _, _, max_frame, pages = WAL_INDEX_HEADER.unpack(m[:WAL_INDEX_HEADER.size])
    return {"version": version, "change": change, "initialized": bool(init), "max_frame": max_frame, "pages": pages}


def locks(args) -> dict:
    """What this container sees of the locks on the database, its -wal and -shm."""
    files: dict[str, dict] = {}
    for suffix, ranges in (("", DB_BYTES), ("-wal", {"whole file": (0, 0)}),
                           ("-shm", {name: (b, 1) for name, b in SHM_BYTES.items()})):
        path = args.path + suffix
        try:
            with step("open", path=path):
                fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            files[suffix or "db"] = {"exists": False}
            continue
        except OSError as exc:
            return failure(exc, path=path)
        try:
            with step("lock", path=path, call="F_GETLK"):
                seen = {name: lock_seen(fd, start, length) for name, (start, length) in ranges.items()}
            files[suffix or "db"] = {"exists": True, "locks": seen}
            if suffix == WRITER[0]:
                with step("lock", path=path, call="F_SETLK"):
                    files[suffix]["writer_lock_call"] = {
                        "call": f"fcntl(F_SETLK, F_WRLCK) on byte {WRITER[2]} ({WRITER[1]})",
                        "returned": _take_and_drop(fd, WRITER[2])}
                with step("map", path=path):
                    files[suffix]["wal_index"] = _wal_index(fd)
        except OSError as exc:
            return failure(exc, path=path)
        finally:
            os.close(fd)
    shm = files.get("-shm", {})
    held = {name: s["held"] for name, s in shm.get("locks", {}).items() if s["held"]}
    return ok(path=args.path, files=files, shm_locks_seen=held,
              writer_lock_call=shm.get("writer_lock_call", {}).get("returned"))


@answered
def hold_write(args) -> dict:
    """An app in the middle of a write transaction: BEGIN IMMEDIATE and one
    insert, held until released (then committed)."""
    holder = Holder(args.seconds)
    db, mode = connect(args.path, args.busy_ms, create=True)
    with step("begin", path=args.path):
        db.execute("BEGIN IMMEDIATE")
    with step("insert", path=args.path):
        db.execute("INSERT INTO backups(rows_copied, checksum) VALUES (0, 'held')")
    holder.wait(path=args.path, journal_mode=mode)
    with step("commit", path=args.path):
        db.execute("COMMIT")
    db.close()
    return ok(path=args.path, journal_mode=mode, committed=True, **holder.summary())


@answered
def try_write(args) -> dict:
    """A second writer: BEGIN IMMEDIATE under the busy timeout, then one insert
    and COMMIT. SQLITE_BUSY at the begin, after the busy timeout, while another
    container's transaction is open, is the lock holding."""
    db, mode = connect(args.path, args.busy_ms)
    since = time.monotonic()
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        db.close()
        return refused(exc, "begin", path=args.path, waited_ms=round((time.monotonic() - since) * 1000, 1))
    waited = round((time.monotonic() - since) * 1000, 1)
    with step("insert", path=args.path):
        db.execute("INSERT INTO backups(rows_copied, checksum) VALUES (0, 'second writer')")
    with step("commit", path=args.path):
        db.execute("COMMIT")
    db.close()
    return ok(path=args.path, journal_mode=mode, waited_ms=waited)
