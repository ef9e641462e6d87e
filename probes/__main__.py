"""`python -m probes VERB --flags`: one JSON object on stdout per verb."""
from __future__ import annotations

import argparse
import functools
import signal
import sys
from typing import Any, Callable

from . import agent, files, identity, memory, net, patterns, perf, posix, projected, serve, sqlite, sqlite_locks, sysv
from .holding import DEFAULT_HOLD_SECONDS, release, same_container_processes, signal_processes
from .output import emit, ok


def agent_processes() -> list[int]:
    return same_container_processes(lambda argv: b"agent" in argv)


def stop_agent(args) -> dict:
    """SIGTERM the agent in this container: kubelet then restarts the container;
    with --exit-code 1, SIGUSR1: the agent exits as a crash does; with
    --exit-code 42, SIGUSR2: the agent exits with the code a container restart
    rule names (agent.RULE_EXIT_CODE).

    The answer is printed before the signal is sent: when the agent is the
    container's PID 1, its exit kills this process too."""
    agents = agent_processes()
    how = agent.signal_for_exit(args.exit_code)
    emit(ok(stopping=agents, exit_code=args.exit_code))
    signal_processes(agents, how)
    return {}



# Verbs that are a container's main process: they run until SIGTERM.
MAIN_PROCESSES = {"agent": agent.run, "web": patterns.web, "follow": patterns.follow,
                  "serve": lambda _args: serve.run(main, agent_processes)}


# ------------------------------------------------------------------ the verb table
# verb -> (function, help, arguments). An argument is (flag, argparse keywords),
# or ONE_OF(...) for flags of which exactly one is given.

def arg(flag: str, **kw: Any) -> tuple[str, dict]:
    return flag, kw


def one_of(*flags: tuple[str, dict]) -> tuple[str, tuple]:
    return "ONE_OF", flags


HOLD = arg("--seconds", type=float, default=DEFAULT_HOLD_SECONDS)  # holding verbs end by release or this
PATH = arg("--path", required=True)
PORT = arg("--port", type=int, required=True)
SEED = arg("--seed", default="podshare")
UNIX = one_of(arg("--path"), arg("--abstract"))
OBJECT_KIND = arg("--kind", choices=("sem", "shm", "mq"), required=True)
LOCK_KIND = arg("--kind", choices=("flock", "fcntl"), default="flock")
MAPPED = [PATH, arg("--size", type=int, default=4096), SEED]


def rounds(default: int) -> list[tuple[str, dict]]:
    return [arg("--rounds", type=int, default=default),
            arg("--seconds", type=float, default=30.0,
                help="a server: give up after this long; a client: when the other side has not answered for this long")]


def ipc_verbs(prefix: str, mod, key: tuple[str, dict]) -> dict[str, tuple]:
    """The System V (by --key) and POSIX (by --name) families, alike where they can be."""
    table = {
        f"{prefix}-sem-create": (mod.sem_create, "create a semaphore", [key, arg("--value", type=int, default=0)]),
        f"{prefix}-sem-info": (mod.sem_info, "a semaphore's value", [key]),
        f"{prefix}-shm-write": (mod.shm_write, "create shared memory and write a payload",
                                [key, arg("--size", type=int, default=4096), SEED]),
        f"{prefix}-shm-read": (mod.shm_read, "read shared memory",
                               [key, arg("--size", type=int, default=4096)] if prefix == "sysv" else [key]),
        f"{prefix}-mq-send": (mod.mq_send, "send one message",
                              [key, arg("--text", required=True)] + ([arg("--type", type=int, default=1)]
                                                                     if prefix == "sysv" else [])),
        f"{prefix}-mq-receive": (mod.mq_receive, "receive one message without blocking", [key]),
    }
    if prefix == "sysv":
        table.update({
            "sysv-sem-acquire": (sysv.sem_acquire, "block until the semaphore is released",
                                 [key, arg("--timeout", type=float, default=10.0)]),
            "sysv-sem-release": (sysv.sem_release, "release (V) a semaphore", [key]),
            "sysv-remove": (sysv.remove, "remove an object", [key, OBJECT_KIND]),
        })
    else:
        table["posix-unlink"] = (posix.unlink, "unlink an object", [key, OBJECT_KIND])
    return table


def sqlite_verbs() -> dict[str, tuple]:
    busy = arg("--busy-ms", type=int, default=5000, help="SQLite's busy timeout")
    batch = arg("--batch", type=int, default=10, help="rows per transaction")
    budget = arg("--seconds", type=float, default=20.0, help="time box")
    return {
        "sqlite-write": (sqlite.write, "the app: rows in transactions, concurrently with the sidecar",
                         [PATH, arg("--rows", type=int, default=600), batch, busy, budget]),
        "sqlite-sidecar": (sqlite.sidecar, "the sidecar: read, check and back up in rounds until released",
                           [PATH, arg("--to", required=True, help="backup file"), batch, busy, budget]),
        "sqlite-check": (sqlite.check, "integrity_check and the rows as read", [PATH, batch, busy]),
        "sqlite-restore": (sqlite.restore, "restore a backup into a new database and check it",
                           [PATH, arg("--to", required=True, help="new database"), batch, busy]),
        "sqlite-locks": (sqlite_locks.locks, "fcntl locks seen on the database, -wal and -shm", [PATH]),
        "hold-sqlite-write": (sqlite_locks.hold_write, "an open write transaction until released", [PATH, busy, HOLD]),
        "sqlite-try-write": (sqlite_locks.try_write, "a second writer's transaction", [PATH, busy]),
    }


VERBS: dict[str, tuple[Callable | None, str, list]] = {
    # main processes (MAIN_PROCESSES runs them)
    "agent": (None, "the container's main process",
              [arg("--port", type=int), arg("--startup-read", help="read and checksum this file at start "
                                                                   "(data-loader pattern)")]),
    "web": (None, "HTTP app main process: answers with its container name",
            [arg("--host", default="127.0.0.1"), arg("--port", type=int, default=5000)]),
    "follow": (None, "main process: follow a log file with inotify, serve the lines seen",
               [arg("--path", required=True, help="directory"), arg("--name", required=True, help="file name in it"),
                PORT]),
    "serve": (None, "serve verbs as JSON lines on stdin (the harness's probe channel)", []),
    "write-log": (patterns.write_log, "append numbered lines, rotating once",
                  [PATH, arg("--lines", type=int, default=200), arg("--rotate-at", type=int, default=0),
                   arg("--prefix", default="line"), arg("--interval", type=float, default=0.0)]),
    # the sqlite pattern: one database in WAL mode, an app and its sidecar (probes/sqlite.py)
    **sqlite_verbs(),
    # the container itself
    "identity": (identity.identity, "hostname, namespace inodes, uid", []),
    "processes": (identity.processes, "the processes this container sees, and PID 1", []),
    "hold-term-note": (agent.hold_term_note, "a process beside the main one that notes a SIGTERM in the term log",
                       [PATH, HOLD]),
    "user-namespace": (identity.user_namespace, "uid and gid maps, the user namespace's identity", []),
    "release": (release, "release every holding verb in this container", []),
    "stop-agent": (stop_agent, "end this container's agent (SIGTERM: exit 0; --exit-code 1: SIGUSR1; 42: SIGUSR2)",
                   [arg("--exit-code", type=int, default=0)]),
    # network
    "loopback": (net.loopback_addresses, "loopback address families present", []),
    "connect": (net.connect, "TCP connect, read the peer's JSON line",
                [arg("--host", default="127.0.0.1"), PORT, arg("--timeout", type=float, default=3.0)]),
    "http-get": (net.http_get, "HTTP GET a URL, report status and JSON body",
                 [arg("--url", required=True), arg("--timeout", type=float, default=5.0)]),
    "bind": (net.bind, "try to bind and listen on a TCP port", [arg("--host", default="0.0.0.0"), PORT]),
    "hold-port": (net.hold_port, "listen on a port until released", [PORT, HOLD]),
    "hold-unix": (net.hold_unix, "listen on a unix socket until released", [UNIX, HOLD]),
    "connect-unix": (net.connect_unix, "connect to a unix socket", [UNIX, arg("--timeout", type=float, default=3.0)]),
    # IPC
    **ipc_verbs("sysv", sysv, arg("--key", type=int, required=True)),
    **ipc_verbs("posix", posix, arg("--name", required=True)),
    "memory-charge": (memory.charge, "shmem, usage, limit and OOM kills of this container's memory cgroup", []),
    "filesystem": (posix.filesystem, "statfs and mount of a path", [PATH]),
    # files on the shared volumes
    "write": (files.write, "write a seeded payload",
              [PATH, arg("--size", type=int, default=65536), SEED, arg("--fsync", action="store_true")]),
    "read": (files.read, "digest of a file", [PATH, arg("--text", action="store_true")]),
    "await-file": (files.await_file, "poll until a file is there whole (size and digest)",
                   [PATH, arg("--size", type=int, required=True), arg("--sha256", required=True),
                    arg("--timeout", type=float, default=30.0)]),
    "append": (files.append, "append text", [PATH, arg("--text", required=True)]),
    "rename": (files.rename, "rename a file", [PATH, arg("--to", required=True)]),
    "delete": (files.delete, "unlink a file", [PATH]),
    "list": (files.listdir, "list a directory", [PATH]),
    "tree-digest": (files.tree_digest, "one digest of a directory tree: paths, modes, sizes (contents)",
                    [PATH, arg("--content", action="store_true", help="each regular file's content too")]),
    "owner": (files.owner, "owner uid, gid and mode of a path", [PATH]),
    "hold-lock": (files.hold_lock, "an exclusive lock", [PATH, LOCK_KIND, HOLD]),
    "try-lock": (files.try_lock, "an exclusive lock", [PATH, LOCK_KIND]),
    "watch": (files.watch, "inotify events until NAME is written and closed (or AFTER, written later, is first)",
              [PATH, arg("--name", required=True), arg("--after"), arg("--timeout", type=float, default=10.0)]),
    # a directory its writer replaces whole (ConfigMap, Secret, projected volumes)
    "read-keys": (projected.read_keys, "every key read through one resolution of ..data", [PATH]),
    "follow-keys": (projected.follow_keys, "read every key through ..data until UNTIL is in all",
                    [PATH, arg("--until", required=True), arg("--timeout", type=float, default=45.0)]),
    "watch-swap": (projected.watch_swap, "inotify on the directory and its files until ..data is swapped",
                   [PATH, arg("--file", action="append", default=[]), arg("--quiet", action="append", default=[]),
                    arg("--timeout", type=float, default=45.0)]),
    "hold-mmap": (files.hold_mmap, "MAP_SHARED a file", [*MAPPED, HOLD]),
    "mmap-write": (files.mmap_write, "MAP_SHARED a file", MAPPED),
    "fill": (files.fill, "write zeros until size or ENOSPC",
             [PATH, arg("--size", type=int, required=True), arg("--keep", action="store_true"),
              arg("--oom-first", action="store_true")]),
    "size": (files.owner, "a file's size (stat: its owner and mode too)", [PATH]),
    # perf: servers (perf-serve-*, stopped by `release`) and clients, which answer samples
    "perf-serve-sem": (perf.serve_sem, "System V semaphore ping-pong",
                       [*rounds(2000), arg("--key", type=int, required=True)]),
    "perf-sem-ping": (perf.sem_ping, "System V semaphore ping-pong",
                      [*rounds(2000), arg("--key", type=int, required=True)]),
    "perf-serve-stream": (perf.serve_stream, "echo round trips over localhost TCP or a unix socket",
                          [*rounds(1000), one_of(arg("--port", type=int), arg("--path"), arg("--abstract"))]),
    "perf-stream-ping": (perf.stream_ping, "echo round trips over localhost TCP or a unix socket",
                         [*rounds(1000), one_of(arg("--port", type=int), arg("--path"), arg("--abstract")),
                          arg("--size", type=int, default=64)]),
    "perf-shm-fill": (perf.shm_fill, "POSIX shared memory write / copy-out bandwidth",
                      [*rounds(8), arg("--name", required=True), arg("--size", type=int, default=32 << 20), SEED]),
    "perf-shm-copy": (perf.shm_copy, "POSIX shared memory write / copy-out bandwidth",
                      [*rounds(8), arg("--name", required=True)]),
    "perf-serve-volume": (perf.serve_volume, "file write -> visible in the other container", [*rounds(300), PATH]),
    "perf-volume-ping": (perf.volume_ping, "file write -> visible in the other container", [*rounds(300), PATH]),
    "perf-serve-lock": (perf.serve_lock, "a lock let go in one container -> taken in the other",
                        [*rounds(60), PATH, LOCK_KIND]),
    "perf-lock-ping": (perf.lock_ping, "a lock let go in one container -> taken in the other",
                       [*rounds(60), PATH, LOCK_KIND]),
}


@functools.cache  # built once: the serve channel's forked children reuse it
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="probes", description=__doc__)
    verbs = p.add_subparsers(dest="verb", required=True)
    for name, (func, help_, arguments) in VERBS.items():
        sp = verbs.add_parser(name, help=help_)
        sp.set_defaults(func=func)
        for flag, kw in arguments:
            if flag == "ONE_OF":
                group = sp.add_mutually_exclusive_group(required=True)
                for one_flag, one_kw in kw:
                    group.add_argument(one_flag, **one_kw)
            else:
                sp.add_argument(flag, **kw)
    return p


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
