"""The container's main process: a TCP listener that names its container.

Each connection gets one JSON line with the container name and a boot id that
is new for every start, so a restart is visible from outside.
"""
from __future__ import annotations

import json
import os
import selectors
import signal
import time
import uuid

from . import payload
from .netutil import listen_tcp
from .output import failure, ok


def _read_at_start(path: str) -> dict:
    """What a data-consuming app does first: read its input and checksum it."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        return failure(exc, path=path)
    return ok(path=path, size=len(data), sha256=payload.digest(data), at=time.time())

RULE_EXIT_CODE = 42  # what manifests/patterns/restart-all.yaml's restartPolicyRules match


CRASH_EXIT_CODE = 1  # a crash, as the kubelet sees one: exit code 1 (stop-agent --exit-code 1)
# Where every agent of a pod notes its SIGTERM and its exit (one JSON line each, on the
# kernel's boot clock: one clock for the pod), and how long it keeps serving after
# its SIGTERM, so the last container to stop can still be asked what came first.
TERM_LOG_ENV, TERM_LINGER_ENV = "PODSHARE_TERM_LOG", "PODSHARE_TERM_LINGER_S"


def signal_for_exit(exit_code: int) -> int:
    """The signal that ends an agent with this exit code (stop-agent --exit-code)."""
    codes = {0: signal.SIGTERM, CRASH_EXIT_CODE: signal.SIGUSR1, RULE_EXIT_CODE: signal.SIGUSR2}
    if exit_code not in codes:
        raise ValueError(f"an agent exits with {sorted(codes)} only, not {exit_code}")
    return codes[exit_code]


def _note(path: str, identity: dict, event: str) -> None:
    """One line in the pod's term log: who, what, when (appended whole, synced)."""
    line = json.dumps({"container": identity["container"], "boot_id": identity["boot_id"], "event": event,
                       "boottime_ns": time.clock_gettime_ns(time.CLOCK_BOOTTIME)}) + "\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:  # the exit goes on; the missing line is the evidence
        print(json.dumps({"agent": "term-log", "error": str(exc)}), flush=True)


def run(args) -> None:
    # First thing: when this container's process began, on the kernel's boot clock
    # (one clock for the whole pod), so start order is known below one second.
    started_boottime_ns = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    port = args.port or int(os.environ.get("PODSHARE_PORT", "7001"))
    identity = {
        "started_boottime_ns": started_boottime_ns,
        "container": os.environ.get("PODSHARE_CONTAINER", ""),
        "boot_id": uuid.uuid4().hex,
        "pid": os.getpid(),
        "port": port,
    }
    # PID 1 gets no default signal action: exit at once on SIGTERM so pod
    # deletion never waits out the grace period (or, with a term log, after noting
    # it and lingering as long as asked).
    term_log = os.environ.get(TERM_LOG_ENV)
    linger_s = float(os.environ.get(TERM_LINGER_ENV) or 0)
    exit_at: list[float] = []
    if term_log:
        def on_sigterm(*_):
            _note(term_log, identity, "sigterm")
            if linger_s <= 0:
                _note(term_log, identity, "exit")
                os._exit(0)
            exit_at.append(time.monotonic() + linger_s)
        signal.signal(signal.SIGTERM, on_sigterm)
    else:
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGINT, lambda *_: os._exit(0))
    # The exits stop-agent --exit-code asks for: SIGUSR1 a crash (1), SIGUSR2 what a restart rule names.
    signal.signal(signal.SIGUSR1, lambda *_: os._exit(CRASH_EXIT_CODE))
    signal.signal(signal.SIGUSR2, lambda *_: os._exit(RULE_EXIT_CODE))
    if args.startup_read:
        identity["startup_read"] = _read_at_start(args.startup_read)
    listener = listen_tcp(port)
    print(json.dumps({"agent": "listening", **identity}), flush=True)
    line = (json.dumps(identity) + "\n").encode()
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    while True:
        if exit_at and time.monotonic() >= exit_at[0]:
            _note(term_log, identity, "exit")
            os._exit(0)
        # a select the SIGTERM handler cannot end (PEP 475 resumes it) wakes to see the linger end
        for _ in sel.select(timeout=0.2 if term_log else None):
            try:
                conn, _addr = listener.accept()
            except OSError:
                continue
            with conn:
                try:
                    conn.sendall(line)
                except OSError:
                    pass


def hold_term_note(args) -> dict:
    """A process beside the container's main one (started by exec): it notes in
    the term log, as the agents do, whether a SIGTERM reaches it, then ends;
    else it holds until released or its deadline. Who gets the pod's SIGTERM
    with shareProcessNamespace is its evidence."""
    from .holding import Holder
    identity = {"container": f"{os.environ.get('PODSHARE_CONTAINER', '')}-helper", "boot_id": uuid.uuid4().hex}

    def on_sigterm(*_):
        _note(args.path, identity, "sigterm")
        os._exit(0)
    signal.signal(signal.SIGTERM, on_sigterm)
    holder = Holder(args.seconds)
    holder.wait(path=args.path)
    return ok(pid=os.getpid(), released=holder.released)
