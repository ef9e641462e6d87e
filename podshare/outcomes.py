"""What a claim's reports come to: one Check, with its outcome in the run's
words (records.OUTCOMES), its message in one sentence, and its dimensions. A
claim listed as a known divergence is classified here too: its failure is that
(strict both ways: its passing fails the run)."""
from __future__ import annotations

import json
import re
from typing import Any

import pytest

from . import dimensions, signatures
from .disruption import Disruption
from .evidence import Evidence
from .recovery import RERUN, rerun_message
from .records import COULD_NOT_CHECK, ERROR, FAILED, INTERRUPTED, KNOWN_DIVERGENCE, PASSED, SKIPPED, Check
from .session import DIAGNOSTICS, DISRUPTED, EVIDENCE, KNOWN, MESSAGE, RUNTIME_CLASS, PodshareSession

# A harness error's message is a sentence already; its class (as pytest prefixes it) is not for the reader.
_HARNESS_CLASS = re.compile(r"^(?:[\w.]+\.)?(?:KubeError|AccessDenied|PodNotReady|Disrupted|GaveUp|ProbeKilled): ")
# A claim's assertion: its own sentence is the message; pytest's class prefix and its
# introspection after it ("assert False", "+  where False = failed_with({...})") are not.
_CLAIM_CLASS = re.compile(r"^(?:AssertionError|Failed): ")
_INTROSPECTION = re.compile(r"\n(?:assert |\s*\+\s+where |where |AssertionError$).*", re.S)


def short_message(report: pytest.TestReport | pytest.CollectReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        message = _HARNESS_CLASS.sub("", crash.message)
        if _CLAIM_CLASS.match(message):
            message = _INTROSPECTION.sub("", _CLAIM_CLASS.sub("", message))
        return message
    return _HARNESS_CLASS.sub("", str(report.longrepr).strip().splitlines()[-1]) if report.longrepr else ""


def as_json_text(value: Any) -> str:
    """Evidence and diagnostics as junit properties carry them."""
    return json.dumps(value, default=str)


def claim_of(item: pytest.Item) -> str:
    """The claim's sentence: the first paragraph of its docstring."""
    doc = getattr(getattr(item, "function", None), "__doc__", None) or ""
    first = doc.strip().split("\n\n")[0]
    return " ".join(first.split()) or item.name


def could_not_check_message(disruption: Disruption, seen: str | None) -> str:
    """One sentence: the disruption and its source, then what the claim itself saw."""
    said = f"could not check: {disruption.cause}"
    return f"{said}; the claim saw: {seen}" if seen and seen not in disruption.cause else said


def apply_known_divergence(ps: PodshareSession, item: pytest.Item, report: pytest.TestReport,
                           runtime_class: str | None) -> None:
    """A claim the operator listed as a known divergence of where it ran: its
    failure, where it looks as listed (`seen`), is reported as that (an expected
    failure, with the reason and what was seen); a failure that looks otherwise is
    a failure saying so; its passing fails the run (strict: the list is out of date),
    except for an entry marked `intermittent: true` (a race the runtime loses only
    sometimes), whose passing is a pass that names the entry."""
    if not ps.known_divergences:
        return
    where = dimensions.of_item(item)
    node = where.node or ps.settings.node  # a node dimension, or the one --node pinned every pod to
    known_node = ps.cluster.facts_of(node) if node else None
    listed = ps.known_divergences.entry(dimensions.claim_id(item), runtime_class,
                                        known_node.all_labels if known_node else None, where.user_namespaces,
                                        where.volume)
    if listed is None:
        return
    place = " on ".join(w for w in ("", runtime_class, f"node {node}" if node else None) if w is not None)
    place += " in a user namespace" if where.user_namespaces else ""
    place += f" on {where.volume}" if where.volume and where.volume.startswith("pvc:") else ""
    if report.failed:
        message = short_message(report)
        ev: Evidence = item.stash.get(EVIDENCE, None) or Evidence()
        if signatures.any_matches(listed["seen"], ev, ev.transcript, message):
            report.outcome, report.wasxfail = "skipped", f"known divergence{place}: {listed['reason']}"
            item.stash[KNOWN] = (KNOWN_DIVERGENCE, f"{listed['reason']} (seen: {message})")
        else:
            expected = listed["seen"] if isinstance(listed["seen"], str) else " or ".join(listed["seen"])
            failure = (f"listed as a known divergence{place} for {expected}, but saw "
                       f"{signatures.seen(ev.transcript, message)}: {message}")
            report.longrepr = failure
            item.stash[KNOWN] = (FAILED, failure)
    elif report.passed and listed.get("intermittent"):
        # a race the runtime loses only sometimes: holding this time is the truth of this run, not a stale list
        item.stash[KNOWN] = (PASSED, f"held this time; listed as a known divergence{place} that comes and goes: "
                                     f"{listed['reason']}")
    elif report.passed:
        message = (f"listed as a known divergence{place} ({listed['reason']}), but the claim now holds: "
                   "update the known-divergences file (or mark the entry intermittent: true, with evidence of both)")
        report.outcome, report.longrepr = "failed", message
        item.stash[KNOWN] = (FAILED, message)


def _outcome(ps: PodshareSession, reports: list[pytest.TestReport]) -> tuple[str, str]:
    """A claim passes only on a passed call report: one the run stopped in the middle
    of (Ctrl-C, SIGTERM, a session stop) is interrupted."""
    outcome = None
    message = ""
    for r in reports:
        if r.failed:
            return (FAILED if r.when == "call" else ERROR), short_message(r)
        if r.skipped:
            outcome = SKIPPED
            message = r.longrepr[2] if isinstance(r.longrepr, tuple) else str(r.longrepr)
    if outcome is not None:
        return outcome, message
    if any(r.when == "call" and r.passed for r in reports):
        return PASSED, ""
    return INTERRUPTED, f"the run stopped before this claim finished ({ps.interrupted or ps.fatal or 'no result'})"


def check_of(ps: PodshareSession, item: pytest.Item, reports: list[pytest.TestReport], markers) -> Check:
    """One check per claim, from its reports and what the run kept of it."""
    outcome, message = _outcome(ps, reports)
    if outcome in (FAILED, ERROR) and MESSAGE in item.stash:  # its traceback gave way to a block on the terminal
        message = item.stash[MESSAGE]
    ev: Evidence | None = item.stash.get(EVIDENCE, None)
    if KNOWN in item.stash:
        outcome, message = item.stash[KNOWN]
    if DISRUPTED in item.stash and outcome in (FAILED, ERROR):
        disruption, seen = item.stash[DISRUPTED]
        outcome, message = COULD_NOT_CHECK, could_not_check_message(disruption, seen)
        if ev is not None:
            ev["disruption"] = {"cause": disruption.cause, "claim_saw": seen}
    cause = item.stash[DISRUPTED][0].cause if outcome == COULD_NOT_CHECK else ""
    if RERUN in item.stash:  # its first attempt was disrupted: the message says so, the cause names it
        message, cause = rerun_message(item, outcome, message), cause or item.stash[RERUN][0].cause
    where = dimensions.of_item(item)
    ran_on = where.node or next((p.node for p in (ev.pods if ev is not None else []) if p.node), ps.cluster.facts.node)
    return Check(
        id=dimensions.check_id(item), claim=claim_of(item), outcome=outcome, claim_id=dimensions.claim_id(item),
        **{**where.values(), "runtime_class": item.stash.get(RUNTIME_CLASS, None), "node": ran_on},
        per_node=where.node is not None, duration_s=round(sum(r.duration for r in reports), 3),
        evidence=ev.as_json() if ev is not None else {}, message=message,
        figures=dict(ev.figures) if ev is not None else {},
        markers=sorted(m.name for m in item.iter_markers() if m.name in markers),
        diagnostics=item.stash.get(DIAGNOSTICS, []), cause=cause)
