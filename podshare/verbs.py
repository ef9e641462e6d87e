"""Probe verbs: what a test runs in a probe container over its channel, a
one-shot verb's answer or a verb that keeps running (a holder, a waiter), each
recorded as evidence of the running test.
"""
from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Any

from .channel import ProbeKilled, VerbRun
from .errors import KubeError
from .waits import READY_TIMEOUT

# A round trip over a live channel takes milliseconds: one slower than this was
# held up by the channel (a frozen containerd or API server), not by the probe.
STALLED = 1.0


def _size(count: int) -> str:
    """Bytes as the pod spec would say them: 512 KiB, 64 MiB."""
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= factor and count % factor == 0:
            return f"{count // factor} {unit}"
    return f"{count} bytes"


class ProbeContainer:
    """One container of a probe pod: runs probe verbs through exec."""

    def __init__(self, pod: Any, name: str) -> None:
        self.pod, self.name = pod, name

    def __repr__(self) -> str:
        return f"<{self.pod.name}/{self.name}>"

    @property
    def port(self) -> int:
        """The agent's port, from the container's PODSHARE_PORT."""
        spec = self.pod.body["spec"]
        for c in spec["containers"] + spec.get("initContainers", []):  # a native sidecar's too
            if c["name"] == self.name:
                return int(next(e["value"] for e in c.get("env", []) if e["name"] == "PODSHARE_PORT"))
        raise KeyError(self.name)

    @staticmethod
    def argv(verb: str, flags: dict[str, Any]) -> list[str]:
        args = [verb]
        for key, value in flags.items():
            if value is None or value is False:
                continue
            flag = "--" + key.replace("_", "-")
            if isinstance(value, (list, tuple)):  # a repeated flag
                args += [part for one in value for part in (flag, str(one))]
                continue
            args.append(flag)
            if value is not True:
                args.append(str(value))
        return args

    def run(self, verb: str, **flags: Any) -> dict:
        """Run a one-shot verb; returns its JSON answer and records it as evidence."""
        argv = self.argv(verb, flags)
        start = time.monotonic()
        try:
            result = self.pod.channel(self.name).send(argv).answer().json()
        except ProbeKilled as killed:
            raise self.explained(killed, argv, start) from None
        self._record(argv, result, start)
        return result

    def explained(self, killed: ProbeKilled, argv: list[str], start: float) -> ProbeKilled:
        """A verb killed by a signal, with what the file system under its last step
        says about why: a mapped write past the end of a full tmpfs is a SIGBUS
        ("... while writing the mapped /dev/shm object (the tmpfs is full: 512 KiB)")."""
        path = killed.step.get("path")
        fs: dict = {}
        if path:
            try:
                fs = self.pod.channel(self.name).send(self.argv("filesystem", {"path": str(Path(path).parent)})) \
                    .answer().json()
            except KubeError:
                fs = {}
        if fs.get("ok") and fs.get("fstype") == "tmpfs":
            size, free = fs["size_bytes"], fs["free_bytes"]
            killed.args = (killed.sentence(f" (the tmpfs is full: {_size(size)})" if free == 0 else
                                           f" (its tmpfs of {_size(size)} has {_size(free)} free)"),)
        self._record(argv, {"ok": False, "killed_by": killed.signal, "step": killed.step, "filesystem": fs or None,
                            "said": str(killed)}, start)
        return killed

    def start(self, verb: str, answer_within: float = 60.0, **flags: Any) -> "Background":
        """Start a verb that keeps running (a holder, a waiter) while the test goes on;
        its answer is waited for `answer_within` seconds."""
        argv = self.argv(verb, flags)
        return Background(self, argv, self.pod.channel(self.name).send(argv, timeout=answer_within))

    def _record(self, argv: list[str], result: dict, start: float) -> None:
        ev = self.pod.evidence
        if ev is not None:
            ev.record_exec(self.pod, self.name, shlex.join(argv), result, (time.monotonic() - start) * 1000)


class Background:
    """A verb running in a container. As a context manager: waits until the
    probe says it holds its resource, and releases it on the way out."""

    def __init__(self, container: ProbeContainer, argv: list[str], running: VerbRun) -> None:
        self.container, self.argv, self.running = container, argv, running
        self.started = time.monotonic()
        self._result: dict | None = None

    def wait_ready(self) -> "Background":
        """Wait until the probe says it holds its resource: READY_TIMEOUT of the
        probe's own time. When that runs out, a round trip over the same channel
        tells a probe that is not ready (the round trip is quick: fail) from a
        channel that stalled, which holds up every frame, that one too (a frozen
        containerd or API server: wait again, up to the verb's answer timeout)."""
        deadline = time.monotonic() + self.running.timeout
        while True:
            try:
                self.running.wait_ready(READY_TIMEOUT)
                return self
            except KubeError:
                if self.running.finished or time.monotonic() > deadline:
                    raise
                start = time.monotonic()
                self.container.pod.channel(self.container.name).send(["loopback"]).answer()
                if time.monotonic() - start < STALLED:
                    raise

    def result(self) -> dict:
        if self._result is None:
            try:
                self._result = self.running.answer().json()
            except ProbeKilled as killed:
                raise self.container.explained(killed, self.argv, self.started) from None
            self.container._record(self.argv, self._result, self.started)
        return self._result

    def result_within(self, seconds: float) -> dict:
        """Its answer if it comes within `seconds`, else released: a watcher whose
        events came by now if they were to come."""
        if self._result is None and not self.running.finished:
            try:
                self.running.answer(seconds)
            except KubeError:
                if not self.running.finished:
                    return self.release()
        return self.result()

    def release(self) -> dict:
        """Ask the holder to let go (SIGUSR1 via `probes release`) and return its answer."""
        if self._result is None:
            self.container.run("release")
        return self.result()

    def __enter__(self) -> "Background":
        return self.wait_ready()

    def __exit__(self, *exc) -> None:
        try:
            self.release()
        except Exception:
            if exc[0] is None:
                raise
