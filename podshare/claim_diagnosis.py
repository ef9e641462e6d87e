"""Why a claim did not get its answer, decided from the facts the API gives back:
the pods behind its fixtures, whether the cluster moved under them (then the
claim could not be checked, with that cause), and their state for the reports
when it failed."""
from __future__ import annotations

import json

import pytest

from .disruption import Disrupted, Disruption
from .errors import HARNESS_ERRORS, AccessDenied
from .pods import Pod, ProbeSet
from .retry import GaveUp, NotYet, wait_until
from .verbs import ProbeContainer
from .session import DIAGNOSTICS, DISRUPTED, EVIDENCE, PodshareSession

# A channel that ended under a claim: its container may have just been killed, which
# the API says a moment later (the kubelet's relist, then its status update).
CHANNEL_ENDED = ("the exec stream ended", "the exec stream failed")
SAID_WITHIN = 15.0  # s: a killed container's end reaches the API in 1-3 s on a loaded node


def pods_behind(item: pytest.Item) -> list[Pod]:
    """The pod handles behind a claim's fixtures (containers, probe sets, pods,
    a pattern's objects), in order, once each."""
    found: list[Pod] = []

    def add(value) -> None:
        if isinstance(value, dict):
            for v in value.values():
                add(v)
        elif isinstance(value, tuple):
            for v in value:
                add(v)
        elif isinstance(value, ProbeContainer):
            add(value.pod)
        elif isinstance(value, ProbeSet):
            for p in value.pods:
                add(p)
        elif isinstance(value, Pod) and all(p is not value for p in found):
            found.append(value)
    for value in (getattr(item, "funcargs", None) or {}).values():  # None after teardown
        add(value)
    return found


def pods_runtime_class(item: pytest.Item, parameter: str | None) -> str | None:
    """The claim's RuntimeClass: --runtime-class's parameter, else the one its pods
    ran under as read back from the API (a manifest may set runtimeClassName itself)."""
    return parameter or next((p.runtime_class for p in pods_behind(item) if p.runtime_class), None)


def before_the_claim(ps: PodshareSession, item: pytest.Item) -> str | None:
    """Why the claim cannot run at all, known before its body: a disruption the run
    already met for its pods, node or API ("could not check: ..."), or a pod that
    never became ready (its reason). None: run it."""
    pods = pods_behind(item)
    known = next((p.disruption for p in pods if p.disruption is not None), None)
    if known is not None:
        item.stash[DISRUPTED] = (known, None)
        return f"could not check: {known.cause}"
    not_ready = [p for p in pods if p.start_failure]
    if not_ready:
        found = ps.cluster.diagnose(not_ready)
        if found is not None:
            item.stash[DISRUPTED] = (found, not_ready[0].start_failure)
            return f"could not check: {found.cause}"
    outside = next((p for p in not_ready if p.start_outside), None)
    if outside is not None:  # no node takes it, or the node cannot get its image: not the promise's doing
        item.stash[DISRUPTED] = (Disruption(outside.start_failure, pods=frozenset({outside.uid or outside.name})),
                                 None)
        return f"could not check: {outside.start_failure}"
    for value in getattr(item, "funcargs", {}).values():
        for candidate in (value.values() if isinstance(value, dict) else value if isinstance(value, tuple) else [value]):
            held = candidate.pod if isinstance(candidate, ProbeContainer) else candidate  # a container: its pod's
            failure = getattr(held, "start_failure", None)
            if isinstance(failure, str):
                ev = item.stash.get(EVIDENCE, None)
                if ev is not None:
                    for pod in getattr(held, "pods", [held]):
                        ev.touch(pod)
                    ev["pod_not_ready"] = failure
                return (f"the pod this claim needs never became ready, so the promise it relies on "
                        f"does not hold here: {failure}")
    return None


def after_a_failure(ps: PodshareSession, item: pytest.Item, call: pytest.CallInfo) -> None:
    """A claim that failed with a harness error (never an assertion on a probe's
    answer): did the cluster move under it? Decided from the facts read back from
    the API now; the claim's pods first, else only the nodes and the API."""
    exc = call.excinfo.value if call.excinfo is not None else None
    if isinstance(exc, pytest.fail.Exception) and isinstance(exc.__cause__, HARNESS_ERRORS):
        exc = exc.__cause__
    if not isinstance(exc, HARNESS_ERRORS) or isinstance(exc, AccessDenied):
        return
    seen = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, Disrupted):
        item.stash[DISRUPTED] = (exc.disruption, None)
        return
    ev = item.stash.get(EVIDENCE, None)
    needed = list(dict.fromkeys([*pods_behind(item), *(ev.pods if ev is not None else [])]))
    try:
        found = (ps.cluster.diagnose(needed) if needed else
                 ps.cluster.diagnose(list(ps.cluster.pods), pod_level=False))
        if found is None and needed and any(said in str(exc) for said in CHANNEL_ENDED):
            found = _once_said(ps, needed)
    except Exception:  # diagnosing must never hide the failure itself
        return
    if found is not None:
        item.stash[DISRUPTED] = (found, seen)


def _once_said(ps: PodshareSession, pods: list[Pod]) -> Disruption | None:
    """After a channel ended: what the API says of the claim's pods once it has
    caught up, within SAID_WITHIN seconds (a container killed by the kubelet or the
    OOM killer: its restart, with why it ended); None if nothing moved."""
    def said() -> Disruption:
        found = ps.cluster.diagnose(pods)
        if found is None:
            raise NotYet("nothing said yet")
        return found
    try:
        return wait_until(said, timeout=SAID_WITHIN, what="the API to say what ended the channel")
    except GaveUp:
        return None


def keep_diagnostics(ps: PodshareSession, item: pytest.Item, report: pytest.TestReport,
                     on_terminal: bool = True) -> None:
    """The state of the pods a failed claim touched (every pod of the run when a
    fixture failed before any exec), once per claim; on the terminal only where
    asked and the run is not ending in one line anyway."""
    ev = item.stash.get(EVIDENCE, None)
    pods = (ev.pods if ev is not None and ev.pods else None) or ps.cluster.pods
    if not pods:
        return
    dumps = []
    for pod in pods:
        try:
            dumps.append(pod.diagnostics())
        except Exception as exc:  # diagnostics must never hide the failure itself
            dumps.append({"pod": pod.name, "error": str(exc)})
    item.stash[DIAGNOSTICS] = dumps
    if on_terminal and not ps.fatal:  # a run that could not start says one line; the dumps are in the reports
        report.sections.append(("podshare diagnostics", json.dumps(dumps, indent=2, default=str)))
