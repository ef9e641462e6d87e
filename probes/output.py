"""One JSON object per verb on stdout; kernel errors become errno names."""
from __future__ import annotations

import errno
import json
import sys
from typing import Any

import posix_ipc
import sysv_ipc

# The IPC libraries raise their own classes; map them to the errno the
# underlying syscall returned so suites assert on one vocabulary.
_LIBRARY_ERRNOS: tuple[tuple[type[BaseException], str], ...] = (
    (sysv_ipc.ExistentialError, "ENOENT"),
    (sysv_ipc.PermissionsError, "EACCES"),
    (sysv_ipc.BusyError, "EAGAIN"),
    (posix_ipc.ExistentialError, "ENOENT"),
    (posix_ipc.PermissionsError, "EACCES"),
    (posix_ipc.BusyError, "EAGAIN"),
)


def ok(**fields: Any) -> dict[str, Any]:
    return {"ok": True, **fields}


def failure(exc: BaseException, **fields: Any) -> dict[str, Any]:
    if isinstance(exc, OSError) and exc.errno is not None:
        name = errno.errorcode.get(exc.errno, str(exc.errno))
    else:
        name = next((n for cls, n in _LIBRARY_ERRNOS if isinstance(exc, cls)), type(exc).__name__)
    if name == "EWOULDBLOCK":
        name = "EAGAIN"
    return {"ok": False, "errno": name, "detail": str(exc), **fields}


def emit(result: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
    sys.stdout.flush()


def signal_ready(**fields: Any) -> None:
    """Tell the harness a holding verb holds its resource (one line on stderr)."""
    sys.stderr.write(json.dumps({"ready": True, **fields}, sort_keys=True) + "\n")
    sys.stderr.flush()
