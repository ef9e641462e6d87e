"""What a test saw: explicit fields plus a transcript of every probe verb.

A fixture makes one Evidence per test and puts it in the run's EvidenceSlot
while the test runs; the pod layer writes each verb into what the slot holds, so a report reader sees the commands and
their JSON answers without re-running anything.
"""
from __future__ import annotations

import math
import statistics
from typing import Any

class Evidence(dict):
    """A dict of named facts, plus the exec transcript and the pods involved."""

    def __init__(self) -> None:
        super().__init__()
        self.transcript: list[dict[str, Any]] = []
        self.pods: list[Any] = []  # pod handles, for diagnostics when the test fails
        self.figures: dict[str, dict[str, Any]] = {}  # measurements, summarised (the perf suite)

    def record_exec(self, pod: Any, container: str, command: str, result: dict, ms: float) -> None:
        self.transcript.append({"pod": pod.name, "container": container, "command": command,
                                "result": result, "ms": round(ms, 1)})
        self.touch(pod)

    def touch(self, pod: Any) -> None:
        if all(p is not pod for p in self.pods):
            self.pods.append(pod)

    def figure(self, name: str, unit: str, samples: list[float]) -> dict[str, Any]:
        """Record a measurement: its raw samples stay in the transcript, the summary
        goes into the report's figures (median, p95, extremes, sample count)."""
        self.figures[name] = summarize(unit, samples)
        return self.figures[name]

    def as_json(self) -> dict[str, Any]:
        return {**self, "transcript": self.transcript} if self.transcript else dict(self)


def failed_with(answer: dict, errno: str) -> bool:
    """The probe's step failed, and with exactly this errno: how a negative
    control holds (ENOENT for an object the stranger must not see, EADDRINUSE
    for a port another container holds...)."""
    return not answer.get("ok") and answer.get("errno") == errno


def describe(answer: dict) -> str:
    """A probe's failed answer in words for a claim's message: errno and detail."""
    if answer.get("ok"):
        return "ok"
    return " ".join(str(answer[k]) for k in ("errno", "detail") if answer.get(k)) or str(answer)


def summarize(unit: str, samples: list[float]) -> dict[str, Any]:
    """Median and p95 (nearest rank) of a measurement's samples; no judgement."""
    ordered = sorted(samples)
    if not ordered:
        return {"unit": unit, "samples": 0}

    p95 = ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]
    return {"unit": unit, "samples": len(ordered), "median": round(statistics.median(ordered), 3),
            "p95": round(p95, 3), "min": round(ordered[0], 3), "max": round(ordered[-1], 3)}


class EvidenceSlot:
    """The running test's Evidence, where the pods (made once per session) find
    it: the autouse fixture fills it for each test and empties it afterwards."""

    def __init__(self) -> None:
        self.current: Evidence | None = None
