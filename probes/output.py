"""One JSON object per verb on stdout; kernel errors become errno names, with
the step that failed (open, lock, map, write, connect, receive...)."""
from __future__ import annotations

import contextlib
import functools
import errno
import json
import os
import sys
from typing import Any, Callable, Iterator

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
    """The failed answer: the errno's name, the system's words for it (never a
    library's own text, which may be unformatted: sysv_ipc's "Permission %o
    cannot be granted"; that stays in `library_said`), and the step, where the
    verb named it (see `step`)."""
    said: dict[str, Any] = {}
    if isinstance(exc, OSError) and exc.errno:
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        detail = exc.strerror or os.strerror(exc.errno)
    else:
        name = next((n for cls, n in _LIBRARY_ERRNOS if isinstance(exc, cls)), None)
        number = getattr(errno, name, None) if name else None
        detail = os.strerror(number) if number else str(exc)
        name = name or "EUNKNOWN"  # a library's catch-all: its text says what it knows
        said = {"library_said": str(exc)}
    if name == "EWOULDBLOCK":
        name = "EAGAIN"
    step_name = getattr(exc, "podshare_step", None)
    refused = {"object": owner_of(fields)} if name in ("EACCES", "EPERM", "EROFS") and owner_of(fields) else {}
    return {"ok": False, "errno": name, "detail": detail, **({"step": step_name} if step_name else {}),
            **said, **refused, **fields}


def owner_of(fields: dict[str, Any]) -> dict[str, Any] | None:
    """Whose the object a verb was refused is, and its mode: a file's stat, or a
    System V object's entry in /proc/sysvipc (readable without its permission)."""
    path, key = fields.get("path"), fields.get("key")
    if path:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return {"path": path, "mode": f"{st.st_mode & 0o7777:04o}", "uid": st.st_uid, "gid": st.st_gid}
    if key is not None:
        for kind in ("sem", "shm", "msg"):
            try:
                with open(f"/proc/sysvipc/{kind}") as f:
                    header, *rows = f.read().splitlines()
            except OSError:
                continue
            names = header.split()
            for row in rows:
                entry = dict(zip(names, row.split()))
                if entry.get("key") == str(key):
                    return {"key": key, "kind": kind, "mode": f"{int(entry['perms'], 8) & 0o777:04o}",
                            "uid": int(entry["uid"]), "gid": int(entry["gid"])}
    return None


@contextlib.contextmanager
def step(taken: str, /, **fields: Any) -> Iterator[None]:
    """One step of a verb (open, lock, map, write, connect, receive): announced on
    stderr before it is taken, so a verb killed by a signal is explained by its
    last step (the harness reads it), and named in the failed answer when it
    raises."""
    sys.stderr.write(json.dumps({"step": taken, **fields}, sort_keys=True) + "\n")
    sys.stderr.flush()
    try:
        yield
    except BaseException as exc:
        if getattr(exc, "podshare_step", None) is None:
            try:
                exc.podshare_step = taken
            except AttributeError:  # a built-in exception without a __dict__
                pass
        raise


def emit(result: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
    sys.stdout.flush()


def signal_ready(**fields: Any) -> None:
    """Tell the harness a holding verb holds its resource (one line on stderr)."""
    sys.stderr.write(json.dumps({"ready": True, **fields}, sort_keys=True) + "\n")
    sys.stderr.flush()


def answered(errors: tuple[type[BaseException], ...], where: Callable[[Any], dict[str, Any]]):
    """A verb whose library or OS error is its answer: the failed step, its errno
    and `where(args)` (the object's key or name), instead of a try in every verb."""
    def wrap(verb: Callable[[Any], dict[str, Any]]) -> Callable[[Any], dict[str, Any]]:
        @functools.wraps(verb)
        def run(args) -> dict[str, Any]:
            try:
                return verb(args)
            except errors as exc:
                return failure(exc, **where(args))
        return run
    return wrap
