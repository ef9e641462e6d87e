"""Main processes and verbs for the multi-container patterns: a web app behind
a reverse proxy, a log writer that rotates, and a log follower (inotify)."""
from __future__ import annotations

import json
import os
import select
import signal
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

from .files import _EVENT, _inotify
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
    """tail -F with inotify: reads appended lines, and across a rename keeps
    reading the old file to its end before switching to the new one."""

    IN_MODIFY, IN_MOVED_FROM, IN_CREATE = 0x2, 0x40, 0x100  # the create wakes us for a new file

    def __init__(self, directory: str, name: str) -> None:
        self.directory, self.name = directory, name
        self.path = os.path.join(directory, name)
        self.lines: list[str] = []
        self.rotations = 0
        self._partial = b""
        self._file = None
        self.inotify = _inotify(directory, self.IN_MODIFY | self.IN_MOVED_FROM | self.IN_CREATE)
        self._open()

    def _open(self) -> None:
        try:
            self._file = open(self.path, "rb")
        except FileNotFoundError:
            self._file = None

    def _drain(self) -> None:
        if self._file is None:
            return
        data = self._partial + self._file.read()
        *complete, self._partial = data.split(b"\n")
        self.lines += [line.decode(errors="replace") for line in complete]

    def on_events(self) -> None:
        buf = os.read(self.inotify, 65536)
        offset = 0
        while offset < len(buf):
            _wd, mask, _cookie, length = _EVENT.unpack_from(buf, offset)
            name = buf[offset + _EVENT.size: offset + _EVENT.size + length].rstrip(b"\0").decode()
            offset += _EVENT.size + length
            if name != self.name:
                continue
            self._drain()
            if mask & self.IN_MOVED_FROM:  # rotated away: the open fd still reads the old file
                self._drain()
                if self._file:
                    self._file.close()
                self._file, self._partial = None, b""
                self.rotations += 1
            if self._file is None:  # after a rotation, or the file appears for the first time
                self._open()
                self._drain()


def follow(args) -> None:
    """Follow a log file in a shared volume and serve the lines seen so far,
    one JSON line per TCP connection."""
    _exit_on_sigterm()
    follower = _Follower(args.path, args.name)
    follower._drain()
    listener = listen_tcp(args.port)
    container = os.environ.get("PODSHARE_CONTAINER", "")
    print(json.dumps({"follow": args.name, "port": args.port}), flush=True)
    while True:
        readable, _, _ = select.select([follower.inotify, listener], [], [])
        if follower.inotify in readable:
            follower.on_events()
        if listener in readable:
            conn, _ = listener.accept()
            with conn:
                conn.sendall((json.dumps({"container": container, "lines": follower.lines,
                                          "rotations": follower.rotations}) + "\n").encode())


