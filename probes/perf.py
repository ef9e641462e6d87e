"""How fast the pod's shared mechanisms are between two containers.

Each measurement is a server verb in one container (`perf-serve-*`, started in
the background, a holder that `probes release` stops) and a client verb in the
other that answers with raw samples; the harness summarises them. Nothing is
judged against a threshold here: a verb fails only when the mechanism does.
The rounds run inside the containers, so no exec round trip is in a sample.
"""
from __future__ import annotations

import errno
import mmap
import os
import signal
import socket
import time

import posix_ipc
import sysv_ipc

from . import payload
from .holding import Holder, Released
from .output import failure, ok, signal_ready

WARMUP = 10  # first rounds pay for page faults and lazy set-up: not a sample
MIN_ROUNDS = WARMUP + 30  # the volume ping-pong's rounds before its time box may end it
ENOUGH = "enough"  # what the volume ping-pong's client writes to end the rounds early
# A client's --seconds bounds each wait for the other container's answer, not all its
# rounds together: a starved container (a BestEffort pod on a busy node) answers late,
# not never (CI on 2026-12-04: a volume ping-pong's first 40 rounds took more than 10 s).


def _us(start_ns: int) -> float:
    return (time.perf_counter_ns() - start_ns) / 1000


class Bounded:
    """Semaphore rounds end at a deadline (SIGALRM) or on `probes release`
    (SIGUSR1): either signal interrupts a blocking semop, so a lost peer costs a
    bounded wait and no process outlives its test (the PyPI sysv_ipc has no
    semtimedop). The handlers only set flags: semop's own error then ends the loop."""

    def __init__(self, seconds: float) -> None:
        self.stopped_by: str | None = None
        self.seconds = seconds
        signal.signal(signal.SIGALRM, lambda *_: self._stop("deadline"))
        signal.signal(signal.SIGUSR1, lambda *_: self._stop("release"))
        signal.setitimer(signal.ITIMER_REAL, seconds)

    def answered(self) -> None:
        """The other side answered: the deadline counts again from now."""
        signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def _stop(self, why: str) -> None:
        self.stopped_by = self.stopped_by or why

    def error(self, exc: BaseException) -> OSError:
        """What stopped the rounds, as an OSError the answer can name."""
        if self.stopped_by == "deadline":
            return TimeoutError(errno.ETIMEDOUT, "the other container did not answer in time")
        if self.stopped_by == "release":
            return OSError(errno.EINTR, "released before the rounds were done")
        return exc if isinstance(exc, OSError) else OSError(0, str(exc))

    def __enter__(self) -> "Bounded":
        return self

    def __exit__(self, *_) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _sems(key: int, create: bool) -> tuple[sysv_ipc.Semaphore, sysv_ipc.Semaphore]:
    flags = {"flags": sysv_ipc.IPC_CREX, "mode": 0o600, "initial_value": 0} if create else {}
    return sysv_ipc.Semaphore(key, **flags), sysv_ipc.Semaphore(key + 1, **flags)


def _remove(*sems: sysv_ipc.Semaphore) -> None:
    for sem in sems:
        try:
            sem.remove()
        except (sysv_ipc.Error, OSError):
            pass  # the other side removed it first


def serve_sem(args) -> dict:
    """Two semaphores at 0: wait on the first, post the second, `rounds` times.
    The client removes them when its last round is in: removing them here after
    the last post races with the client's last wait (seen on gVisor, where the
    client is slower to reach it: EIDRM)."""
    try:
        ping, pong = _sems(args.key, create=True)
    except (sysv_ipc.Error, OSError) as exc:
        return failure(exc, key=args.key)
    served = 0
    with Bounded(args.seconds) as bound:
        signal_ready(pid=os.getpid(), key=args.key)
        try:
            while served < args.rounds:
                ping.acquire()
                pong.release()
                served += 1
        except (Released, sysv_ipc.Error, OSError) as exc:
            _remove(ping, pong)  # the client may never come: nothing stays behind
            return failure(bound.error(exc), key=args.key, served=served)
    return ok(key=args.key, served=served)


def sem_ping(args) -> dict:
    """Post the server's semaphore and wait for its answer: one round trip a sample."""
    try:
        ping, pong = _sems(args.key, create=False)
    except (sysv_ipc.Error, OSError) as exc:
        return failure(exc, key=args.key)
    samples = []
    with Bounded(args.seconds) as bound:
        try:
            for i in range(args.rounds):
                start = time.perf_counter_ns()
                ping.release()
                pong.acquire()
                if i >= WARMUP:
                    samples.append(_us(start))
                bound.answered()
        except (sysv_ipc.Error, OSError) as exc:
            return failure(bound.error(exc), key=args.key, rounds_done=len(samples))
        finally:
            _remove(ping, pong)
    return ok(key=args.key, unit="us", samples=samples)


def _stream_address(args) -> tuple[int, object]:
    if args.port:
        return socket.AF_INET, ("127.0.0.1", args.port)
    if args.abstract:
        return socket.AF_UNIX, b"\0" + args.abstract.encode()
    return socket.AF_UNIX, args.path


def serve_stream(args) -> dict:
    """Echo every message of one connection (TCP on localhost or a unix socket)."""
    holder = Holder(args.seconds)
    family, address = _stream_address(args)
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        if family == socket.AF_INET:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(1)
    except OSError as exc:
        listener.close()
        return failure(exc)
    echoed = 0
    try:
        holder.ready()
        listener.settimeout(holder.remaining())
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(holder.remaining())
            while data := conn.recv(65536):
                conn.sendall(data)
                echoed += 1
    except Released:
        return failure(OSError(errno.EINTR, "released before the client was done"), echoed=echoed)
    except OSError as exc:
        return failure(exc, echoed=echoed)
    finally:
        listener.close()
        if family == socket.AF_UNIX and args.path:
            os.unlink(args.path)
    return ok(echoed=echoed)


def stream_ping(args) -> dict:
    """Send `size` bytes and read them back: one round trip a sample."""
    family, address = _stream_address(args)
    message = b"p" * args.size
    samples = []
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(args.seconds)
            s.connect(address)
            if family == socket.AF_INET:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for i in range(args.rounds):
                start = time.perf_counter_ns()
                s.sendall(message)
                got = 0
                while got < len(message):
                    chunk = s.recv(len(message) - got)
                    if not chunk:
                        raise ConnectionResetError(104, "the echo server closed the connection")
                    got += len(chunk)
                if i >= WARMUP:
                    samples.append(_us(start))
    except OSError as exc:
        return failure(exc, rounds_done=len(samples))
    return ok(unit="us", size=args.size, samples=samples)


def _pattern(size: int, seed: str) -> bytes:
    block = payload.generate(1 << 20, seed)
    return (block * (size // len(block) + 1))[:size]


def shm_fill(args) -> dict:
    """Create a POSIX shared memory object and write `size` bytes into it, `rounds`
    times: each sample is one full write in MiB/s."""
    data = _pattern(args.size, args.seed)
    try:
        shm = posix_ipc.SharedMemory("/" + args.name, posix_ipc.O_CREX, mode=0o600, size=args.size)
        with mmap.mmap(shm.fd, args.size) as mm:
            shm.close_fd()
            samples = []
            for _ in range(args.rounds):
                start = time.perf_counter_ns()
                mm[:] = data
                samples.append(args.size / (1 << 20) / (_us(start) / 1e6))
    except (posix_ipc.Error, OSError) as exc:
        return failure(exc, name=args.name)
    return ok(name=args.name, unit="MiB/s", size=args.size, sha256=payload.digest(data), samples=samples)


def shm_copy(args) -> dict:
    """Copy another container's POSIX shared memory object out, `rounds` times:
    each sample is one full read in MiB/s; the digest proves it was their bytes."""
    try:
        shm = posix_ipc.SharedMemory("/" + args.name)
        size = shm.size
        with mmap.mmap(shm.fd, size) as mm:
            shm.close_fd()
            samples, copy = [], b""
            for _ in range(args.rounds):
                start = time.perf_counter_ns()
                copy = mm[:]
                samples.append(size / (1 << 20) / (_us(start) / 1e6))
    except (posix_ipc.Error, OSError) as exc:
        return failure(exc, name=args.name)
    return ok(name=args.name, unit="MiB/s", size=size, sha256=payload.digest(copy), samples=samples)


def _wait_for(path: str, deadline: float) -> str:
    """Spin until `path` exists with content (renamed into place whole), as a
    poller does; the spin is the latency's resolution."""
    while True:
        try:
            with open(path) as f:
                return f.read()
        except FileNotFoundError:
            if time.monotonic() > deadline:
                raise TimeoutError(errno.ETIMEDOUT, f"{os.path.basename(path)} never appeared") from None


def _answer(path: str, seconds: float) -> str:
    """The other container's answer file, waited for at most `seconds` from now."""
    return _wait_for(path, time.monotonic() + seconds)


def _publish(directory: str, name: str, text: str) -> None:
    tmp = os.path.join(directory, f".{name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, os.path.join(directory, name))


def serve_volume(args) -> dict:
    """Answer each ping file in the shared directory with a pong file; each sample
    is how long after its write (CLOCK_BOOTTIME, one clock for the pod) a ping
    became visible here."""
    holder = Holder(args.seconds)
    samples = []
    try:
        holder.ready(path=args.path)  # inside: a release may come as soon as the line is read
        for i in range(args.rounds):
            written = _wait_for(os.path.join(args.path, f"ping-{i}"), holder.deadline)
            seen_ns = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
            _publish(args.path, f"pong-{i}", str(seen_ns) if written != ENOUGH else ENOUGH)
            if written == ENOUGH:  # the client's time box ended the rounds: what was measured stands
                break
            if i >= WARMUP:
                samples.append((seen_ns - int(written)) / 1000)
    except Released:
        return failure(OSError(errno.EINTR, "released before the rounds were done"), path=args.path,
                       rounds_done=len(samples))
    except (OSError, ValueError) as exc:
        return failure(exc if isinstance(exc, OSError) else OSError(0, str(exc)), path=args.path,
                       rounds_done=len(samples))
    return ok(path=args.path, unit="us", samples=samples)


def volume_ping(args) -> dict:
    """Write ping files and wait for the pong: one round trip through the volume a sample."""
    started = time.monotonic()
    samples, time_boxed = [], False
    try:
        for i in range(args.rounds):
            if i >= MIN_ROUNDS and time.monotonic() - started > args.seconds / 2:
                time_boxed = True
                # On a starved machine (two pollers spinning for two cores) the rounds
                # slow down, not the sharing: stop with what was measured, every file
                # having arrived (the last round, too, waits its own --seconds for the answer).
                _publish(args.path, f"ping-{i}", ENOUGH)
                _answer(os.path.join(args.path, f"pong-{i}"), args.seconds)
                break
            start = time.perf_counter_ns()
            _publish(args.path, f"ping-{i}", str(time.clock_gettime_ns(time.CLOCK_BOOTTIME)))
            _answer(os.path.join(args.path, f"pong-{i}"), args.seconds)
            if i >= WARMUP:
                samples.append(_us(start))
    except OSError as exc:
        return failure(exc, path=args.path, rounds_done=len(samples))
    finally:
        for name in os.listdir(args.path) if os.path.isdir(args.path) else []:
            if name.startswith(("ping-", "pong-")):
                os.unlink(os.path.join(args.path, name))
    return ok(path=args.path, unit="us", samples=samples, time_boxed=time_boxed)


LOCK_WARMUP = 3  # the lock hand-off's first rounds open files and fault pages in: not a sample
LOCK_SETTLE_S = 0.02  # after beta says it is about to block: time to be inside the blocking call
HELD_HERE = "held-here"  # beta's `waiting-i` when it took the lock alpha holds: no hand-off to measure


def _raise_timeout(*_):
    raise TimeoutError(errno.ETIMEDOUT, "the other container did not answer in time")


def serve_lock(args) -> dict:
    """The lock hand-off's waiter (beta): each round, once alpha holds the lock
    (its `held-i`), check that the lock is held here too (a lock that does not
    cross the containers ends the rounds: that is the claim's failure, not a
    figure), say `waiting-i`, block until alpha releases it, and write when it
    was taken (CLOCK_BOOTTIME, one clock for the pod) as `got-i`. A blocking lock
    call is only interrupted by a handler that raises: the deadline's SIGALRM and
    `release`'s SIGUSR1 both do."""
    from .files import take_lock
    holder = Holder(args.seconds)
    signal.signal(signal.SIGALRM, _raise_timeout)
    signal.setitimer(signal.ITIMER_REAL, args.seconds)
    lock, rounds = os.path.join(args.path, "handoff.lock"), 0
    try:
        holder.ready(path=args.path, kind=args.kind)
        for i in range(args.rounds):
            if _wait_for(os.path.join(args.path, f"held-{i}"), holder.deadline) == ENOUGH:
                _publish(args.path, f"got-{i}", ENOUGH)  # seen: alpha may clean up now
                break
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                try:
                    take_lock(fd, args.kind, blocking=False)
                    _publish(args.path, f"waiting-{i}", HELD_HERE)  # alpha stops at once, not at its deadline
                    return {"ok": False, "path": args.path, "kind": args.kind, "step": "lock", "rounds_done": rounds,
                            "beta_while_held": True, "detail": "beta took the lock while alpha held it"}
                except BlockingIOError:
                    pass
                except PermissionError:  # fcntl may say EACCES for a conflicting lock
                    pass
                _publish(args.path, f"waiting-{i}", "")
                take_lock(fd, args.kind, blocking=True)
                taken_ns = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
            finally:
                os.close(fd)  # and with it the lock
            _publish(args.path, f"got-{i}", str(taken_ns))
            rounds += 1
    except Released:
        return failure(OSError(errno.EINTR, "released before the rounds were done"), path=args.path,
                       kind=args.kind, rounds_done=rounds)
    except OSError as exc:
        return failure(exc, path=args.path, kind=args.kind, rounds_done=rounds)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    return ok(path=args.path, kind=args.kind, rounds_done=rounds)


def lock_ping(args) -> dict:
    """The lock hand-off's holder (alpha): each round, take the lock, say `held-i`,
    wait for beta's `waiting-i`, give beta LOCK_SETTLE_S to block, note the time
    and release; beta's `got-i` says when it had the lock. A sample is release to
    taken, in µs, on the pod's one boot clock: how long a waiter in the other
    container takes to get a lock let go. The files are the protocol's, polled;
    only the hand-off itself is measured."""
    from .files import take_lock
    lock = os.path.join(args.path, "handoff.lock")
    started = time.monotonic()
    samples, time_boxed = [], False
    try:
        for i in range(args.rounds):
            if i >= LOCK_WARMUP + 10 and time.monotonic() - started > args.seconds / 2:
                time_boxed = True  # a slow volume (a network file system's polling): what was measured stands
                _publish(args.path, f"held-{i}", ENOUGH)
                _answer(os.path.join(args.path, f"got-{i}"), args.seconds)  # beta saw it: the files may go
                break
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                take_lock(fd, args.kind, blocking=False)
                _publish(args.path, f"held-{i}", "")
                if _answer(os.path.join(args.path, f"waiting-{i}"), args.seconds) == HELD_HERE:
                    return {"ok": False, "path": args.path, "kind": args.kind, "step": "lock", "rounds_done": i,
                            "beta_while_held": True, "detail": "beta took the lock while alpha held it"}
                time.sleep(LOCK_SETTLE_S)
                released_ns = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
            finally:
                os.close(fd)
            taken_ns = int(_answer(os.path.join(args.path, f"got-{i}"), args.seconds))
            if i >= LOCK_WARMUP:
                samples.append((taken_ns - released_ns) / 1000)
    except (OSError, ValueError) as exc:
        return failure(exc if isinstance(exc, OSError) else OSError(0, str(exc)), path=args.path, kind=args.kind,
                       rounds_done=len(samples))
    finally:
        for name in os.listdir(args.path) if os.path.isdir(args.path) else []:
            if name.startswith(("held-", "waiting-", "got-", "handoff.lock")):
                os.unlink(os.path.join(args.path, name))
    return ok(path=args.path, kind=args.kind, unit="us", samples=samples, time_boxed=time_boxed)
