"""`python -m probes VERB --flags`: one JSON object on stdout per verb."""
from __future__ import annotations

import argparse
import functools
import signal
import sys

from . import agent, files, identity, net, patterns, perf, posix, serve, sysv
from .holding import DEFAULT_HOLD_SECONDS, release, same_container_processes, signal_processes
from .output import emit, ok


def agent_processes() -> list[int]:
    return same_container_processes(lambda argv: b"agent" in argv)


def stop_agent(_args) -> dict:
    """SIGTERM the agent in this container: kubelet then restarts the container.

    The answer is printed before the signal is sent: when the agent is the
    container's PID 1, its exit kills this process too."""
    agents = agent_processes()
    emit(ok(stopping=agents))
    signal_processes(agents, signal.SIGTERM)
    return {}


# Verbs that are a container's main process: they run until SIGTERM.
MAIN_PROCESSES = {"agent": agent.run, "web": patterns.web, "follow": patterns.follow, 
                  "serve": lambda _args: serve.run(main, agent_processes)}


@functools.cache  # built once: the serve channel's forked children reuse it
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="probes", description=__doc__)
    verbs = p.add_subparsers(dest="verb", required=True)

    def verb(name, func, help_):
        sp = verbs.add_parser(name, help=help_)
        sp.set_defaults(func=func)
        return sp

    def holding(sp):
        sp.add_argument("--seconds", type=float, default=DEFAULT_HOLD_SECONDS)
        return sp

    sp = verb("agent", None, "the container's main process")
    sp.add_argument("--port", type=int)
    sp.add_argument("--startup-read", help="read and checksum this file at start (data-loader pattern)")
    sp = verb("web", None, "HTTP app main process: answers with its container name")
    sp.add_argument("--host", default="127.0.0.1")
    sp.add_argument("--port", type=int, default=5000)
    sp = verb("follow", None, "main process: follow a log file with inotify, serve the lines seen")
    sp.add_argument("--path", required=True, help="directory")
    sp.add_argument("--name", required=True, help="file name in it")
    sp.add_argument("--port", type=int, required=True)
    sp = verb("write-log", patterns.write_log, "append numbered lines, rotating once")
    sp.add_argument("--path", required=True)
    sp.add_argument("--lines", type=int, default=200)
    sp.add_argument("--rotate-at", type=int, default=0)
    sp.add_argument("--prefix", default="line")
    sp.add_argument("--interval", type=float, default=0.0)
    verb("serve", None, "serve verbs as JSON lines on stdin (the harness's probe channel)")
    verb("identity", identity.identity, "hostname, namespace inodes, uid")
    verb("release", release, "release every holding verb in this container")
    verb("stop-agent", stop_agent, "SIGTERM this container's agent")
    verb("loopback", net.loopback_addresses, "loopback address families present")

    sp = verb("connect", net.connect, "TCP connect, read the peer's JSON line")
    sp.add_argument("--host", default="127.0.0.1")
    sp.add_argument("--port", type=int, required=True)
    sp.add_argument("--timeout", type=float, default=3.0)
    sp = verb("http-get", net.http_get, "HTTP GET a URL, report status and JSON body")
    sp.add_argument("--url", required=True)
    sp.add_argument("--timeout", type=float, default=5.0)
    sp = verb("bind", net.bind, "try to bind and listen on a TCP port")
    sp.add_argument("--host", default="0.0.0.0")
    sp.add_argument("--port", type=int, required=True)
    holding(verb("hold-port", net.hold_port, "listen on a port until released")).add_argument(
        "--port", type=int, required=True)
    for name, func, help_ in (("hold-unix", net.hold_unix, "listen on a unix socket until released"),
                              ("connect-unix", net.connect_unix, "connect to a unix socket")):
        sp = verb(name, func, help_)
        where = sp.add_mutually_exclusive_group(required=True)
        where.add_argument("--path")
        where.add_argument("--abstract")
        if name == "hold-unix":
            holding(sp)
        else:
            sp.add_argument("--timeout", type=float, default=3.0)

    for prefix, mod, key in (("sysv", sysv, ("--key", int)), ("posix", posix, ("--name", str))):
        def keyed(name, func, help_):
            sp = verb(f"{prefix}-{name}", func, help_)
            sp.add_argument(key[0], type=key[1], required=True)
            return sp
        keyed("sem-create", mod.sem_create, "create a semaphore").add_argument("--value", type=int, default=0)
        keyed("sem-info", mod.sem_info, "a semaphore's value")
        sp = keyed("shm-write", mod.shm_write, "create shared memory and write a payload")
        sp.add_argument("--size", type=int, default=4096)
        sp.add_argument("--seed", default="podshare")
        sp = keyed("shm-read", mod.shm_read, "read shared memory")
        if prefix == "sysv":
            sp.add_argument("--size", type=int, default=4096)
        keyed("mq-send", mod.mq_send, "send one message").add_argument("--text", required=True)
        keyed("mq-receive", mod.mq_receive, "receive one message without blocking")
        if prefix == "sysv":
            sp = keyed("sem-acquire", sysv.sem_acquire, "block until the semaphore is released")
            sp.add_argument("--timeout", type=float, default=10.0)
            keyed("sem-release", sysv.sem_release, "release (V) a semaphore")
            verbs.choices["sysv-mq-send"].add_argument("--type", type=int, default=1)
            keyed("remove", sysv.remove, "remove an object").add_argument(
                "--kind", choices=("sem", "shm", "mq"), required=True)
        else:
            keyed("unlink", posix.unlink, "unlink an object").add_argument(
                "--kind", choices=("sem", "shm", "mq"), required=True)
    verb("filesystem", posix.filesystem, "statfs and mount of a path").add_argument("--path", required=True)

    def pathed(name, func, help_):
        sp = verb(name, func, help_)
        sp.add_argument("--path", required=True)
        return sp
    sp = pathed("write", files.write, "write a seeded payload")
    sp.add_argument("--size", type=int, default=65536)
    sp.add_argument("--seed", default="podshare")
    sp.add_argument("--fsync", action="store_true")
    pathed("read", files.read, "digest of a file").add_argument("--text", action="store_true")
    pathed("append", files.append, "append text").add_argument("--text", required=True)
    pathed("rename", files.rename, "rename a file").add_argument("--to", required=True)
    pathed("delete", files.delete, "unlink a file")
    pathed("list", files.listdir, "list a directory")
    for name, func in (("hold-lock", files.hold_lock), ("try-lock", files.try_lock)):
        sp = pathed(name, func, "an exclusive lock")
        sp.add_argument("--kind", choices=("flock", "fcntl"), default="flock")
        if name == "hold-lock":
            holding(sp)
    sp = pathed("watch", files.watch, "inotify events until NAME is written and closed")
    sp.add_argument("--name", required=True)
    sp.add_argument("--timeout", type=float, default=10.0)
    for name, func in (("hold-mmap", files.hold_mmap), ("mmap-write", files.mmap_write)):
        sp = pathed(name, func, "MAP_SHARED a file")
        sp.add_argument("--size", type=int, default=4096)
        sp.add_argument("--seed", default="podshare")
        if name == "hold-mmap":
            holding(sp)
    pathed("fill", files.fill, "write zeros until size or ENOSPC").add_argument("--size", type=int, required=True)
    _perf_verbs(verb)
    return p


def _perf_verbs(verb) -> None:
    """Server (perf-serve-*, stopped by `release`) and client pairs; the client answers samples."""
    def rounds(sp, default):
        sp.add_argument("--rounds", type=int, default=default)
        sp.add_argument("--seconds", type=float, default=30.0, help="give up after this long")
        return sp
    for name, func in (("perf-serve-sem", perf.serve_sem), ("perf-sem-ping", perf.sem_ping)):
        rounds(verb(name, func, "System V semaphore ping-pong"), 2000).add_argument("--key", type=int, required=True)
    for name, func in (("perf-serve-stream", perf.serve_stream), ("perf-stream-ping", perf.stream_ping)):
        sp = rounds(verb(name, func, "echo round trips over localhost TCP or a unix socket"), 1000)
        where = sp.add_mutually_exclusive_group(required=True)
        where.add_argument("--port", type=int)
        where.add_argument("--path")
        where.add_argument("--abstract")
        if name == "perf-stream-ping":
            sp.add_argument("--size", type=int, default=64)
    for name, func in (("perf-shm-fill", perf.shm_fill), ("perf-shm-copy", perf.shm_copy)):
        sp = rounds(verb(name, func, "POSIX shared memory write / copy-out bandwidth"), 8)
        sp.add_argument("--name", required=True)
        if name == "perf-shm-fill":
            sp.add_argument("--size", type=int, default=32 << 20)
            sp.add_argument("--seed", default="podshare")
    for name, func in (("perf-serve-volume", perf.serve_volume), ("perf-volume-ping", perf.volume_ping)):
        rounds(verb(name, func, "file write -> visible in the other container"), 300).add_argument(
            "--path", required=True)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.verb in MAIN_PROCESSES:
        MAIN_PROCESSES[args.verb](args)
        return 0
    result = args.func(args)
    if result:  # a verb that printed its own answer returns {}
        emit(result)
    return 0 if result.get("ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())
