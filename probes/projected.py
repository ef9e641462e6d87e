"""Verbs for a directory its writer replaces whole (the kubelet's ConfigMap,
Secret and projected volumes): the keys are symlinks through `..data`, itself
a symlink to a timestamped directory; an update writes a new directory and
renames a new `..data` over the old one, so a reader that resolves `..data`
once and reads every key through that resolution sees one version, whole.
"""
from __future__ import annotations

import errno
import os
import select
import time

from .files import inotify_events, inotify_watches
from .holding import Holder, Released
from .output import failure, ok, signal_ready, step

DATA = "..data"
POLL_S = 0.01  # how often `follow-keys` reads: a swap is seen within this, plus the read itself


def _taken(name: str, fn, *args):
    """fn(*args), its OSError named by the step; unlike output.step, nothing is
    announced: follow-keys takes these steps a hundred times a second."""
    try:
        return fn(*args)
    except OSError as exc:
        exc.podshare_step = name
        raise


def _read(path: str) -> str:
    with open(path, "rb") as f:
        return f.read().decode(errors="replace")


def _snapshot(directory: str) -> dict:
    """Every key's text, read through one resolution of ..data: which version
    (the timestamped directory) and what each key holds in it."""
    version = _taken("readlink", os.readlink, os.path.join(directory, DATA))
    resolved = os.path.join(directory, version)
    names = sorted(n for n in _taken("list", os.listdir, resolved) if not n.startswith("."))
    return {"version": version, "keys": {n: _taken("read", _read, os.path.join(resolved, n)) for n in names}}


def read_keys(args) -> dict:
    """One snapshot of the directory's keys (see _snapshot)."""
    try:
        return ok(path=args.path, **_snapshot(args.path))
    except OSError as exc:
        return failure(exc, path=args.path)


def follow_keys(args) -> dict:
    """Read every key through one resolution of ..data, over and over, until a
    snapshot has `until` in every key or `timeout` passes. Answers each distinct
    snapshot with when it was first seen (seconds after the ready line), the
    reads made, and those that lost a race with the writer (the old directory
    removed between the readlink and a read: ENOENT, a retry for any reader)."""
    try:
        first = _snapshot(args.path)
    except OSError as exc:
        return failure(exc, path=args.path)
    signal_ready(path=args.path, version=first["version"])
    started = time.monotonic()
    seen, reads, races = [{**first, "first_seen_s": 0.0}], 1, []
    # an empty snapshot has `until` in every key too: only one with keys ends the wait
    while not (seen[-1]["keys"] and all(args.until in text for text in seen[-1]["keys"].values())):
        if time.monotonic() - started > args.timeout:
            return failure(OSError(errno.ETIMEDOUT, f"no snapshot with {args.until!r} in every key"),
                           path=args.path, step="wait-update", waited_s=round(args.timeout, 1), snapshots=seen,
                           reads=reads, races=races)
        select.select([], [], [], POLL_S)
        at = round(time.monotonic() - started, 3)
        reads += 1
        try:
            snap = _snapshot(args.path)
        except FileNotFoundError as exc:
            races.append({"at_s": at, "step": getattr(exc, "podshare_step", None), "path": exc.filename})
            continue
        except OSError as exc:
            return failure(exc, path=args.path, snapshots=seen, reads=reads)
        if not snap["keys"]:  # the old directory emptied between the readlink and the list: a race, as ENOENT
            races.append({"at_s": at, "step": "list", "path": os.path.join(args.path, snap["version"])})
            continue
        if (snap["version"], snap["keys"]) != (seen[-1]["version"], seen[-1]["keys"]):
            seen.append({**snap, "first_seen_s": at})
    return ok(path=args.path, snapshots=seen, reads=reads, races=races,
              read_s=round(time.monotonic() - started, 3))


# Everything a reloader could be woken by, on the directory and on a key's file.
_SWAP_EVENTS = 0x2 | 0x4 | 0x8 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x800


def watch_swap(args) -> dict:
    """inotify on the directory, on each `--file` (a key's symlink: the file it
    names is watched, as an app watching its config file does) and on each
    `--quiet` path, until the directory has an event naming ..data and every
    file's watch has ended (IN_IGNORED), or `timeout`, or `probes release`. Answers the events per
    path in the order they came. One inotify instance per path: two paths to
    one inode (a subPath mount of a key's file) would share a watch in one."""
    paths = [args.path, *args.file, *args.quiet]
    watches: dict[int, str] = {}
    try:
        for path in paths:
            with step("watch", path=path):
                watches[inotify_watches([path], _SWAP_EVENTS)[0]] = path
    except OSError as exc:
        _close(watches)
        return failure(exc, path=args.path)
    holder = Holder(args.timeout)  # released by the harness once the update is known to be there
    events: dict[str, list] = {p: [] for p in paths}

    def done() -> bool:
        return (any(e["name"] == DATA for e in events[args.path])
                and all(any("IN_IGNORED" in e["mask"] for e in events[f]) for f in args.file))
    try:
        holder.ready(path=args.path)  # inside: a release may come as soon as the line is read
        while not done():
            readable = select.select(list(watches), [], [], holder.remaining())[0] if holder.remaining() else []
            if not readable:
                break
            at = round(time.monotonic() - holder.started, 3)
            for fd in readable:
                events[watches[fd]] += [{"name": name, "mask": names, "at_s": at}
                                        for _wd, name, names in inotify_events(fd)]
    except Released:
        holder.released = True
    finally:
        _close(watches)
    if not done():
        return failure(OSError(errno.ETIMEDOUT, "no ..data event, or a file's watch did not end"),
                       path=args.path, step="wait-events", events=events, **holder.summary())
    return ok(path=args.path, events=events, **holder.summary())


def _close(fds) -> None:
    for fd in fds:
        os.close(fd)
