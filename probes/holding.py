"""Verbs that hold a resource (a port, a lock, a mapping) across other execs.

A holder installs its release handler, takes the resource, prints one ready
line on stderr, then serves or waits until `probes release` sends it SIGUSR1
or its deadline passes, so nothing outlives a failed test.
"""
from __future__ import annotations

import os
import select
import signal
import socket
import time

from .output import ok, signal_ready

HOLDER_PREFIXES = (b"hold-", b"perf-serve-", b"watch-swap", b"sqlite-sidecar")  # verbs that `release` stops
DEFAULT_HOLD_SECONDS = 60.0


class Released(Exception):
    pass


def _raise_released(*_):
    raise Released


class Holder:
    """Context for one holding verb: arm the release signal, announce, wait."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.started = time.monotonic()
        self.released = False
        signal.signal(signal.SIGUSR1, _raise_released)

    def ready(self, **fields) -> None:
        signal_ready(pid=os.getpid(), **fields)

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def wait(self, **ready) -> None:
        """Announce (the ready line, with `ready`'s fields), then block until released
        or the deadline. The line goes out inside the try: the release may come as soon
        as it is read, before this process runs again (on a loaded node it did, and the
        Released raised between the two ended the verb with no answer)."""
        try:
            self.ready(**ready)
            while self.remaining() > 0:
                select.select([], [], [], self.remaining())
        except Released:
            self.released = True
        finally:
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # the answer is not cut short by a late one

    def serve(self, listener: socket.socket, reply: bytes, **ready) -> int:
        """Announce as wait() does, then answer each connection with `reply` until
        released; returns the count."""
        served = 0
        try:
            self.ready(**ready)
            while self.remaining() > 0:
                readable, _, _ = select.select([listener], [], [], self.remaining())
                if readable:
                    conn, _ = listener.accept()
                    with conn:
                        conn.sendall(reply)
                    served += 1
        except Released:
            self.released = True
        finally:
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        return served

    def summary(self) -> dict:
        return {"released": self.released, "held_s": round(time.monotonic() - self.started, 3)}


def _stable_namespace(ns: str) -> bool:
    """Whether this namespace's file identifies it here. gVisor shows no ns/mnt,
    and gives ns/pid a new inode at every look; there /proc is already this
    container's own view, and no filter is needed."""
    try:
        return os.stat(f"/proc/self/ns/{ns}").st_ino == os.stat(f"/proc/{os.getpid()}/ns/{ns}").st_ino
    except OSError:
        return False


def same_container_processes(match) -> list[int]:
    """PIDs of processes in this container (same pid and mount namespace as
    us) whose argv (plus their comm, last) satisfies `match`; on a node, other
    pods' probes are not ours."""
    mine = {ns: os.stat(f"/proc/self/ns/{ns}").st_ino for ns in ("pid", "mnt") if _stable_namespace(ns)}
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        if int(entry) == os.getpid():
            continue
        try:
            if any(os.stat(f"/proc/{entry}/ns/{ns}").st_ino != ino for ns, ino in mine.items()):
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{entry}/comm", "rb") as f:
                argv.append(f.read().strip())  # a verb forked by `serve` is named by its comm
        except OSError:
            continue
        if b"probes" in argv and match(argv):
            found.append(int(entry))
    return found


def signal_processes(pids: list[int], signum: int) -> list[int]:
    done = []
    for pid in pids:
        try:
            os.kill(pid, signum)
            done.append(pid)
        except ProcessLookupError:
            pass
    return done


def release(_args) -> dict:
    """Send SIGUSR1 to every holding verb running in this container."""
    holders = same_container_processes(lambda argv: any(a.startswith(HOLDER_PREFIXES) for a in argv))
    return ok(released=signal_processes(holders, signal.SIGUSR1))
