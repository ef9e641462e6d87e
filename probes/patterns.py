"""Main processes and verbs for the multi-container patterns: a web app behind
a reverse proxy, a log writer that rotates, and a log follower (inotify)."""
from __future__ import annotations

import json
import os
import select
import signal
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

from .files import _inotify, inotify_events
from .netutil import listen_tcp
from .output import failure, ok


def _exit_on_sigterm() -> None:
    # Main processes exit at once on SIGTERM, so pod deletion never waits.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGINT, lambda *_: os._exit(0))


def web(args) -> None:
    """An HTTP app that answers every GET with its container name and what it was sent."""
    _exit_on_sigterm()
    container = os.environ.get("PODSHARE_CONTAINER", "")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            body = json.dumps({"container": container, "path": self.path, "client": self.client_address[0],
                               "headers": dict(self.headers.items())}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_):
            pass

    server = HTTPServer((args.host, args.port), Handler)
    print(json.dumps({"web": "listening", "host": args.host, "port": args.port}), flush=True)
    server.serve_forever()


def write_log(args) -> dict:
    """Append numbered lines, flushing each; rename the file away once (rotation)
    after `rotate_at` lines and go on in a new file, as logrotate's create mode does."""
    rotated_to = None
    try:
        f = open(args.path, "a")
        for n in range(1, args.lines + 1):
            f.write(f"{args.prefix} {n:06d}\n")
            f.flush()
            if n == args.rotate_at:
                f.close()
                rotated_to = args.path + ".1"
                os.rename(args.path, rotated_to)
                f = open(args.path, "a")
            if args.interval:
                time.sleep(args.interval)  # pacing the writer, not polling
        f.close()
    except OSError as exc:
        return failure(exc, path=args.path)
    return ok(path=args.path, lines=args.lines, rotated_to=rotated_to)


class _Follower:
    """tail -F with inotify. Events only wake it; each wake-up reconciles by
    inode, so no line is lost or reordered however late it wakes: it finishes
    the file it holds open (a rename does not affect an open descriptor), or,
    if the file was rotated before it ever opened it, reads the rotated file
    (NAME.1) first, and only then moves on to the new NAME."""

    def __init__(self, directory: str, name: str) -> None:
        self.path = os.path.join(directory, name)
        self.lines: list[str] = []
        self.rotations = 0
        # Proof of the mechanism: how often inotify woke us, and how many lines
        # arrived with no wake-up (only those present at start may; a follower
        # that read on every connection instead would show them here).
        self.wakeups = 0
        self.other_wakeups = 0  # by events of other files only
        self.lines_without_wakeup = 0
        self.names = {name, name + ".1"}
        self._file = None
        self._inode: int | None = None
        self._done: set[int] = set()  # inodes read to the end
        self._partial = b""
        # create, modify, rename: every way the log can change
        self.inotify = _inotify(directory, 0x2 | 0x8 | 0x40 | 0x80 | 0x100)

    def _read(self, f) -> None:
        data = self._partial + f.read()
        *complete, self._partial = data.split(b"\n")
        self.lines += [line.decode(errors="replace") for line in complete]

    def _inode_of(self, path: str) -> int | None:
        try:
            return os.stat(path).st_ino
        except FileNotFoundError:
            return None

    def catch_up(self) -> None:
        """A wake-up. Only one by an event of the log (NAME, NAME.1) counts: lines read
        at another file's event (a marker written beside it) came without theirs."""
        names = {name for _wd, name, _flags in inotify_events(self.inotify)}
        before = len(self.lines)
        self.reconcile()
        if names & self.names:
            self.wakeups += 1
        else:
            self.other_wakeups += 1
            self.lines_without_wakeup += len(self.lines) - before

    def start(self) -> None:
        """What is there before the first event: read it, and count it as read without one."""
        self.reconcile()
        self.lines_without_wakeup = len(self.lines)

    def reconcile(self) -> None:
        while True:
            if self._file:
                self._read(self._file)
            current = self._inode_of(self.path)
            if current is None or current == self._inode:
                return
            if self._file:  # rotated away: the writer is done with it, our descriptor still reads it
                self._read(self._file)
                self._file.close()
                self._file = None
                self._done.add(self._inode)
                self.rotations += 1
            else:
                rotated = self.path + ".1"
                inode = self._inode_of(rotated)
                if inode is not None and inode not in self._done:  # rotated before we ever opened it
                    with open(rotated, "rb") as f:
                        self._read(f)
                    self._done.add(inode)
                    self.rotations += 1
            # The inode of what was opened, not of what was stat'ed: a rotation between
            # the two would have us hold the new file under the old one's inode (and read
            # it twice at the next wake-up), or skip the old file's lines. Then start over.
            try:
                f = open(self.path, "rb")
            except FileNotFoundError:  # rotated away since the stat, its successor not yet made: start over
                continue
            opened = os.fstat(f.fileno()).st_ino
            if opened != current:
                f.close()
                continue
            self._file, self._inode = f, opened
            self._read(self._file)
            return


def follow(args) -> None:
    """Follow a log file in a shared volume and serve the lines seen so far,
    one JSON line per TCP connection."""
    _exit_on_sigterm()
    follower = _Follower(args.path, args.name)
    follower.start()
    listener = listen_tcp(args.port)
    container = os.environ.get("PODSHARE_CONTAINER", "")
    print(json.dumps({"follow": args.name, "port": args.port}), flush=True)
    while True:
        readable, _, _ = select.select([follower.inotify, listener], [], [])
        if follower.inotify in readable:
            follower.catch_up()
        if listener in readable:
            conn, _ = listener.accept()
            with conn:
                conn.sendall((json.dumps({"container": container, "lines": follower.lines,
                                          "rotations": follower.rotations, "inotify_wakeups": follower.wakeups,
                                          "other_wakeups": follower.other_wakeups,
                                          "lines_without_wakeup": follower.lines_without_wakeup})
                              + "\n").encode())


