"""Socket helpers shared by the agent and the network verbs."""
from __future__ import annotations

import json
import socket


def listen_tcp(port: int, host: str | None = None) -> socket.socket:
    """Listen on every address: dual-stack [::] where the pod has IPv6."""
    if host is None and socket.has_ipv6:
        try:
            s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("::", port))
            s.listen(16)
            return s
        except OSError as exc:
            s.close()
            if exc.errno not in (97, 99):  # EAFNOSUPPORT, EADDRNOTAVAIL: no IPv6 here
                raise
    family = socket.AF_INET6 if host and ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host or "0.0.0.0", port))
    s.listen(16)
    return s


def read_json_line(sock: socket.socket, limit: int = 1 << 20) -> dict:
    buf = b""
    while not buf.endswith(b"\n") and len(buf) < limit:
        chunk = sock.recv(4096)
        if not chunk:
            break
        buf += chunk
    return json.loads(buf.decode() or "null")
