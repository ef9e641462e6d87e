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


def signal_for_exit(exit_code: int) -> int:
    """The signal that ends an agent with this exit code (stop-agent --exit-code)."""
    codes = {0: signal.SIGTERM, RULE_EXIT_CODE: signal.SIGUSR2}
    if exit_code not in codes:
        raise ValueError(f"an agent exits with {sorted(codes)} only, not {exit_code}")
    return codes[exit_code]


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
    # deletion never waits out the grace period.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGINT, lambda *_: os._exit(0))
    # The exit a container restart rule names (stop-agent --exit-code): SIGUSR2 ends the agent with it.
    signal.signal(signal.SIGUSR2, lambda *_: os._exit(RULE_EXIT_CODE))
    if args.startup_read:
        identity["startup_read"] = _read_at_start(args.startup_read)
    listener = listen_tcp(port)
    print(json.dumps({"agent": "listening", **identity}), flush=True)
    line = (json.dumps(identity) + "\n").encode()
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    while True:
        for _ in sel.select():
            try:
                conn, _addr = listener.accept()
            except OSError:
                continue
            with conn:
                try:
                    conn.sendall(line)
                except OSError:
                    pass
