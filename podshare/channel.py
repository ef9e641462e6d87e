"""The probe channel: one long-lived exec per container, many verbs over it.

`python -m probes serve` runs in the container (probes/serve.py); verbs go
down as JSON lines on stdin and come back as frames on stdout, so a verb
costs a frame round trip instead of a new API stream and a Python start.
No port and no RBAC beyond the exec a one-shot verb needs.

All websocket I/O happens in one pump thread (an SSL socket must not be read
and written from two threads); callers queue requests and wake it by a pipe.
"""
from __future__ import annotations

import itertools
import json
import os
import queue
import select
import ssl
import threading
from typing import Any

from .errors import KubeError
from .kube import Kube

SERVE = ["python3", "-m", "probes", "serve"]
OPEN_TIMEOUT = 30.0


class ProbeKilled(KubeError):
    """A probe verb's process died (a signal) before it answered: `step` is the
    last step it announced (probes.output.step: {"step": "write", "path": ...,
    "mapped": true}), the harness's best knowledge of what it was doing."""

    def __init__(self, container: str, signal: str, step: dict | None, verb: str) -> None:
        self.container, self.signal, self.step, self.verb = container, signal, step or {}, verb
        super().__init__(self.sentence())

    def doing(self) -> str:
        """The last step in words: "writing the mapped /dev/shm object"."""
        step, path = self.step.get("step"), self.step.get("path") or self.step.get("name")
        if not step:
            return f"running {self.verb}"
        gerund = {"open": "opening", "lock": "locking", "map": "mapping", "write": "writing", "read": "reading",
                  "connect": "connecting to", "receive": "receiving from", "send": "sending to",
                  "truncate": "sizing", "bind": "binding", "listen": "listening on"}.get(step, f"at step {step} of")
        if path and str(path).startswith("/dev/shm/"):
            what = "the mapped /dev/shm object" if self.step.get("mapped") else "the /dev/shm object"
        elif path:
            what = f"the mapped file {path}" if self.step.get("mapped") else str(path)
        else:
            what = "its object"
        return f"{gerund} {what}"

    def sentence(self, why: str = "") -> str:
        return f"{self.container}'s probe was killed by {self.signal} while {self.doing()}{why}"


def last_json_with(text: str, key: str) -> dict | None:
    """The last line of `text` that is a JSON object holding `key`, or None: a
    probe's output interleaves its steps ("step") and its answer ("ok")."""
    for line in reversed(text.splitlines()):
        try:
            said = json.loads(line)
        except ValueError:
            continue
        if isinstance(said, dict) and key in said:
            return said
    return None


def last_step(stderr: str) -> dict | None:
    """The last step a probe verb announced on its stderr, or None."""
    return last_json_with(stderr, "step")


class ProbeAnswer:
    """What one verb printed. The probe protocol: exactly one JSON object on stdout.
    `ending` is how its process ended ({"exit": code} or {"signal": "SIGBUS"}), where known."""

    def __init__(self, stdout: str, stderr: str, verb: str = "", where: str = "",
                 ending: dict | None = None) -> None:
        self.stdout, self.stderr = stdout, stderr
        self.verb, self.where, self.ending = verb, where, ending or {}

    def json(self) -> dict:
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        if len(lines) != 1 and self.ending.get("signal"):
            raise ProbeKilled(self.where.rpartition("/")[2] or self.where, self.ending["signal"],
                              last_step(self.stderr), self.verb)
        if len(lines) != 1:
            ended = (f"it exited with code {self.ending['exit']}" if "exit" in self.ending else "it ended")
            last = [line for line in self.stderr.strip().splitlines() if '"step"' not in line][-1:]
            said = f"; its last words: {last[0][-200:]}" if last else ""
            raise KubeError(f"the probe verb {self.verb} in {self.where} gave no answer ({len(lines)} lines "
                            f"where one was due): {ended}{said}")
        return json.loads(lines[0])


def refused(container: str, verb: str, answer: dict) -> str:
    """A holding verb's failure before it was ready, as a sentence: "alpha could
    not open /data/disk/x.lock: EACCES (Permission denied)"."""
    what = answer.get("path") or answer.get("name") or next(
        (f"{label} {answer[k]}" for k, label in (("key", "the System V object of key"), ("port", "port")) if answer.get(k)),
        "its object")
    errno = answer.get("errno") or "an error"
    detail = f" ({answer['detail']})" if answer.get("detail") and answer.get("detail") != errno else ""
    if answer.get("step"):
        return f"{container} could not {answer['step']} {what}: {errno}{detail}".replace("  ", " ")
    return f"{container}'s {verb} failed before it was ready{f' on {what}' if what else ''}: {errno}{detail}"


class VerbRun:
    """One verb in flight: its stderr as it comes (a holder's ready line), then its answer."""

    def __init__(self, argv: list[str], timeout: float, where: str = "") -> None:
        self.argv, self.timeout, self.where = argv, timeout, where
        self.ending: dict = {}  # how the verb's process ended, from its answer frame
        self._err: list[str] = []
        self._out = ""
        self._ready = threading.Event()
        self._done = threading.Event()
        self._error: str | None = None

    def feed_err(self, text: str) -> None:
        self._err.append(text)
        if self._said_ready:
            self._ready.set()

    @property
    def _said_ready(self) -> bool:
        """The ready line is on stderr: read whole, as one line may come in several frames."""
        return any('"ready": true' in line for line in self.stderr.splitlines())

    def finish(self, out: str = "", error: str | None = None, ending: dict | None = None) -> None:
        self._out, self._error, self.ending = out, error, ending or {}
        self._done.set()
        self._ready.set()

    @property
    def stderr(self) -> str:
        return "".join(self._err)

    @property
    def finished(self) -> bool:
        """The verb answered or its channel closed."""
        return self._done.is_set()

    def wait_ready(self, timeout: float) -> None:
        if not self._ready.wait(timeout):
            step = last_step(self.stderr)
            at = f" (its last step: {step['step']} {step.get('path') or step.get('name') or ''})".replace(" )", ")") \
                if step else ""
            raise KubeError(f"the probe verb {self.argv[0]} in {self.where} did not report ready within "
                            f"{timeout:g}s{at}")
        if self._done.is_set() and not self._said_ready:
            if self._error:
                raise KubeError(self._error)
            # the verb's own answer, in words: a death by signal, or the errno of the step that failed
            answer = ProbeAnswer(self._out, self.stderr, self.argv[0], self.where, self.ending).json()
            if answer.get("ok"):
                raise KubeError(f"the probe verb {self.argv[0]} in {self.where} answered without reporting ready")
            raise KubeError(refused(self.where.rpartition("/")[2] or self.where, self.argv[0], answer))

    def answer(self, timeout: float | None = None) -> ProbeAnswer:
        if not self._done.wait(self.timeout if timeout is None else timeout):
            raise KubeError(f"probe verb {self.argv[0]} did not answer within {self.timeout:g}s")
        if self._error:
            raise KubeError(self._error)
        return ProbeAnswer(self._out, self.stderr, self.argv[0], self.where, self.ending)


class Channel:
    """The serve process in one container, and the runs in flight over it."""

    def __init__(self, kube: Kube, namespace: str, pod: str, container: str) -> None:
        self.where = f"{pod}/{container}"
        self._ids = itertools.count(1)
        self._runs: dict[int, VerbRun] = {}
        self._outbox: queue.Queue[str] = queue.Queue()
        self._wake_r, self._wake_w = os.pipe()
        self._serving = threading.Event()
        self._stdout = ""
        self._stderr = ""
        self.closed: str | None = None  # why, once it is
        self._lock = threading.Lock()
        self.ws = kube.exec_stream(namespace, pod, container, SERVE)
        threading.Thread(target=self._pump, daemon=True, name=f"podshare-channel-{self.where}").start()
        if not self._serving.wait(OPEN_TIMEOUT) or self.closed:
            self.close()
            # the hint only where the container said something: a stream cut by a dead kubelet says nothing
            raise KubeError(f"could not open the probe channel to {self.where}: "
                            f"{self.closed or f'no answer within {OPEN_TIMEOUT:g}s'}"
                            f"{'; stderr=' + repr(self._stderr[-300:]) if self._stderr else ''}"
                            + (" (is the container's image a podshare probe image with `python3 -m probes serve`?)"
                               if self._stderr.strip() else ""))

    def __repr__(self) -> str:
        return f"<channel {self.where}{' closed' if self.closed else ''}>"

    def send(self, argv: list[str], timeout: float = 60.0) -> VerbRun:
        run = VerbRun(argv, timeout, self.where)
        with self._lock:  # the pump closes the wake pipe only once `closed` is set, under this lock
            if self.closed:
                raise KubeError(f"the probe channel to {self.where} is closed: {self.closed}")
            request_id = next(self._ids)
            self._runs[request_id] = run
            self._outbox.put(json.dumps({"id": request_id, "argv": argv}) + "\n")
            os.write(self._wake_w, b"x")
        return run

    def close(self) -> None:
        with self._lock:
            if self.closed is None:  # else the pump has ended and its pipe may be another file now
                os.write(self._wake_w, b"q")
        self._end("closed by the harness")

    # ------------------------------------------------------------ pump thread
    def _pump(self) -> None:
        reason = "the exec stream ended"
        try:
            sock = self.ws.sock.sock
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            poller.register(self._wake_r, select.POLLIN)
            while self.ws.is_open() and not self.closed:
                buffered = isinstance(sock, ssl.SSLSocket) and sock.pending()
                events = [] if buffered else poller.poll(1000)
                if buffered or any(fd == sock.fileno() for fd, _ in events):
                    self.ws.update(timeout=0)
                    self._take_output()
                if any(fd == self._wake_r for fd, _ in events):
                    if b"q" in os.read(self._wake_r, 4096):
                        break
                    while not self._outbox.empty():
                        self.ws.write_stdin(self._outbox.get_nowait())
        except Exception as exc:  # the connection broke: say how
            reason = f"the exec stream failed: {exc}"
        if self._stderr.strip():
            reason += f"; the server said {self._stderr.strip()[-300:]!r}"
        self._end(reason)
        try:
            self.ws.close()
        except Exception:
            pass
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def _take_output(self) -> None:
        if self.ws.peek_stderr():
            self._stderr += self.ws.read_stderr()
        if not self.ws.peek_stdout():
            return
        self._stdout += self.ws.read_stdout()
        *lines, self._stdout = self._stdout.split("\n")
        for line in filter(str.strip, lines):
            try:
                frame: dict[str, Any] = json.loads(line)
            except ValueError:
                self._stderr += f"(not a frame: {line[:200]!r})\n"
                continue
            if frame.get("serving"):
                self._serving.set()
                continue
            run = self._runs.get(frame.get("id"))
            if run is None:
                continue
            if "out" in frame:
                if frame.get("err"):
                    run.feed_err(frame["err"])
                with self._lock:
                    self._runs.pop(frame["id"], None)
                run.finish(frame["out"], ending={k: frame[k] for k in ("exit", "signal") if k in frame})
            elif frame.get("err"):
                run.feed_err(frame["err"])

    def _end(self, reason: str) -> None:
        with self._lock:
            if self.closed is None:
                self.closed = reason
            runs, self._runs = list(self._runs.values()), {}
        self._serving.set()
        for run in runs:
            run.finish(error=f"the probe channel to {self.where} closed before {run.argv[0]} answered: {reason}")
