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
    """A probe's failed answer in words for a claim's message: the step that
    failed, its errno and the system's words for it ("open failed with EACCES
    (Permission denied)"); never the answer's dict."""
    if answer.get("ok"):
        return "it succeeded"
    errno, detail = answer.get("errno"), answer.get("detail")
    said = f"{errno} ({detail})" if errno and detail and detail != errno else errno or detail or "no reason given"
    return f"{answer['step']} failed with {said}" if answer.get("step") else said


def stranger_sees(sentence: str, answer: dict, due: str = "ENOENT") -> str:
    """A negative control that did not hold, as far as the stranger's answer shows:
    its success is the leak ("the stranger pod opens alpha's queue too, so it is
    not the pod's alone"); another errno is only that, not a leak."""
    if answer.get("ok"):
        return f"{sentence} too, so it is not the pod's alone"
    return f"the stranger pod's check did not end as its absence would: {describe(answer)}, not {due}"


def could_not(who: str, what: str, answer: dict) -> str:
    """What happened at the step that failed, as a sentence about it (and no more):
    "beta could not open alpha's lock file: EACCES (Permission denied)"."""
    errno, detail = answer.get("errno"), answer.get("detail")
    said = f"{errno} ({detail})" if errno and detail and detail != errno else errno or detail or "no reason given"
    if answer.get("step"):
        return f"{who} could not {answer['step']} {what}: {said}"
    return f"{who} failed on {what}: {said}"


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
