"""Network verbs: loopback reachability, the shared port space, unix sockets."""
from __future__ import annotations

import json
import os
import socket

from .holding import Holder
from .netutil import listen_tcp, read_json_line
from .output import failure, ok, step


def _me() -> dict:
    return {"container": os.environ.get("PODSHARE_CONTAINER", ""), "pid": os.getpid()}


def connect(args) -> dict:
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(args.timeout)
            with step("connect", host=args.host, port=args.port):
                s.connect((args.host, args.port))
            with step("receive", host=args.host, port=args.port):
                return ok(peer=read_json_line(s), host=args.host, port=args.port)
    except OSError as exc:
        return failure(exc, host=args.host, port=args.port)


def bind(args) -> dict:
    """Try to take a port the way a server would: SO_REUSEADDR (so TIME_WAIT
    leftovers do not count), and still EADDRINUSE while anyone listens on it."""
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            with step("bind", host=args.host, port=args.port):
                s.bind((args.host, args.port))
            with step("listen", host=args.host, port=args.port):
                s.listen(1)
            return ok(host=args.host, port=args.port)
    except OSError as exc:
        return failure(exc, host=args.host, port=args.port)


def hold_port(args) -> dict:
    holder = Holder(args.seconds)
    try:
        listener = listen_tcp(args.port)
    except OSError as exc:
        return failure(exc, port=args.port)
    with listener:
        served = holder.serve(listener, (json.dumps(_me()) + "\n").encode(), port=args.port)
    return ok(port=args.port, served=served, **holder.summary())


def _unix_address(args) -> str | bytes:
    # An abstract address lives in the network namespace, not the file system.
    return b"\0" + args.abstract.encode() if args.abstract else args.path


def hold_unix(args) -> dict:
    holder = Holder(args.seconds)
    address = _unix_address(args)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with step("bind"):
            listener.bind(address)
        with step("listen"):
            listener.listen(4)
    except OSError as exc:
        listener.close()
        return failure(exc)
    with listener:
        served = holder.serve(listener, (json.dumps(_me()) + "\n").encode())
    if args.path:
        os.unlink(args.path)
    return ok(served=served, **holder.summary())


def connect_unix(args) -> dict:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(args.timeout)
            with step("connect"):
                s.connect(_unix_address(args))
            with step("receive"):
                return ok(peer=read_json_line(s))
    except OSError as exc:
        return failure(exc)


def loopback_addresses(_args) -> dict:
    """Which loopback families this network namespace has (::1 needs IPv6)."""
    ipv6 = False
    try:
        with open("/proc/net/if_inet6") as f:
            ipv6 = any(line.split()[0] == "0" * 31 + "1" for line in f)
    except OSError:
        pass
    return ok(ipv4=True, ipv6=ipv6)


def http_get(args) -> dict:
    """GET a URL; the answer's status and JSON body (the web app's self-description)."""
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(args.url, timeout=args.timeout) as r:
            body = r.read()
            status = r.status
    except urllib.error.HTTPError as exc:
        return ok(url=args.url, status=exc.code, body=None)
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(getattr(exc, "reason", None), OSError) else exc
        return failure(reason if isinstance(reason, OSError) else OSError(0, str(reason)), url=args.url)
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = body[:200].decode(errors="replace")
    return ok(url=args.url, status=status, body=parsed)
