"""The local cluster's processes: started detached with their logs in files,
recorded by PID, and stopped only if the recorded PID is still ours. Shared by
localcluster.py (the control plane and the first node), workers.py and the
modules beside them."""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

STATE = Path(os.environ.get("PODSHARE_CLUSTER_DIR", "/var/lib/podshare/cluster"))
LOGS = STATE.parent / "logs"


class ClusterError(Exception):
    pass


def sh(*cmd, check=True, capture=False, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], check=check, text=True,
                          stdout=subprocess.PIPE if capture else None,
                          stderr=subprocess.PIPE if capture else None, **kw)


def wait_for(what: str, probe, timeout: float, watch: tuple[str, ...] = ()) -> None:
    """Retry `probe` (raising or returning False) until it holds; fail fast when
    a watched component has exited, with its log tail."""
    def attempt():
        for name in watch:
            if not alive(name):
                code = _children[name].returncode if name in _children else "?"
                raise ClusterError(f"{name} exited (status {code}) while waiting for {what}\n{log_tail(name)}")
        if not probe():
            raise TimeoutError(what)
    try:
        for a in Retrying(stop=stop_after_delay(timeout), retry=retry_if_exception_type((OSError, TimeoutError, ValueError)),
                          wait=wait_exponential(multiplier=0.05, max=1.0)):
            with a:
                attempt()
    except RetryError as exc:
        tails = "\n".join(log_tail(n) for n in watch)
        raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}: "
                           f"{exc.last_attempt.exception()}\n{tails}") from None


def log_tail(name: str, lines: int = 25) -> str:
    path = LOGS / f"{name}.log"
    if not path.exists():
        return f"--- {name}: no log"
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return f"--- last {len(text)} lines of {path}\n" + "\n".join(text)


# ---------------------------------------------------------------- processes

def pidfile(name: str) -> Path:
    return STATE / "pids" / f"{name}.pid"


def recorded_pid(name: str) -> int | None:
    try:
        return int(pidfile(name).read_text())
    except (OSError, ValueError):
        return None


_children: dict[str, subprocess.Popen] = {}  # started by this invocation


def alive(name: str) -> bool:
    if name in _children:
        return _children[name].poll() is None
    pid = recorded_pid(name)
    if pid is None:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    # A recycled PID is not ours: every component's command line names STATE.
    return str(STATE).encode() in cmdline and state != "Z"


def start(name: str, argv: list[str], env: dict | None = None, append: bool = False) -> None:
    LOGS.mkdir(parents=True, exist_ok=True)
    pidfile(name).parent.mkdir(parents=True, exist_ok=True)
    with open(LOGS / f"{name}.log", "ab" if append else "wb") as log:
        proc = subprocess.Popen([str(a) for a in argv], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                env={**os.environ, **(env or {})})
    pidfile(name).write_text(str(proc.pid))
    _children[name] = proc


def stop(name: str, grace: float = 10.0) -> None:
    """SIGTERM, wait up to `grace`, then SIGKILL; only ever our own recorded PID."""
    pid = recorded_pid(name)
    if pid is None or not alive(name):
        return
    os.kill(pid, signal.SIGTERM)
    try:
        for attempt in Retrying(stop=stop_after_delay(grace), wait=wait_exponential(multiplier=0.02, max=0.5),
                                retry=retry_if_exception_type(TimeoutError), reraise=True):
            with attempt:
                if alive(name):
                    raise TimeoutError(name)
    except TimeoutError:
        os.kill(pid, signal.SIGKILL)
    if name in _children:
        _children.pop(name).wait()
