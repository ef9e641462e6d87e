"""Claims over past runs: a store of results.json files (one per run), read back
as a timeline per claim and RuntimeClass, with what changed since the previous
run and what flips back and forth. A regression stands out on the day it happens.

The store is a directory: --history-dir adds each run to it and puts the
timeline into that run's reports; `podshare history DIR` renders the newest
run of a store (e.g. one fetched from the nightly Job) with its timeline."""
from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .records import COULD_NOT_CHECK, FLAKY, NEWLY_FAILING, PASSED, RECOVERED, SKIPPED, Check, RunInfo

WINDOW = 14  # runs per timeline
HELD = PASSED


@dataclass(frozen=True)
class Point:
    run_id: str
    started_at: str
    outcome: str
    duration_s: float


RUN_ID = re.compile(r"[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?")  # --run-id's characters


def store_name(results: Any) -> str:
    """A run's file name in a store: its start (UTC, from the parsed time, not the
    text) and its id (as --run-id allows: lowercase letters, digits and '-').
    ValueError for anything else."""
    run = results.get("run") if isinstance(results, dict) else None
    if not isinstance(run, dict):
        raise ValueError("not a run: no run section")
    run_id, started = run.get("id"), run.get("started_at")
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
        raise ValueError(f"not a run: its id {str(run_id)[:80]!r} is not a run id")
    try:
        when = dt.datetime.fromisoformat(started) if isinstance(started, str) and len(started) <= 40 else None
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise ValueError(f"not a run: its start {str(started)[:80]!r} is not a time with a zone")
    return f"{when.astimezone(dt.timezone.utc):%Y-%m-%dT%H%M%SZ}-{run_id}.json"


def claim_key(check: Check) -> str:
    """A claim where it ran (Dimensions.history_key): one row of the history."""
    return check.dimensions.history_key(check.claim_id or check.id)


# Outcomes that say nothing about the promise: they are not points of a trend
# (a claim the cluster moved under is neither newly failing, nor recovered, nor flaky).
NOT_A_VERDICT = frozenset({SKIPPED, COULD_NOT_CHECK})


def _held(outcome: str) -> bool:
    return outcome == HELD


class History:
    def __init__(self, runs: list[dict[str, Any]], window: int = WINDOW) -> None:
        self.runs = sorted(runs, key=lambda r: r["run"].get("started_at") or "")[-window:]
        self.timelines: dict[str, list[Point]] = {}
        for i, results in enumerate(self.runs):
            run = RunInfo.from_json({"id": f"run-{i}", **results["run"]})  # any results.json version
            for check in map(Check.from_json, results.get("checks", [])):
                points = self.timelines.setdefault(claim_key(check), [])
                points.append(Point(run.id, run.started_at, check.outcome, check.duration_s))

    @classmethod
    def load(cls, directory: str | Path, window: int = WINDOW) -> "History":
        runs = []
        for path in sorted(Path(directory).glob("*.json")):
            try:
                results = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # a torn or foreign file is not a run
            if isinstance(results, dict) and "run" in results and "checks" in results:
                runs.append(results)
        return cls(runs, window)

    @staticmethod
    def record(directory: str | Path, results: dict[str, Any]) -> Path:
        """Add a run's results to the store, named by its start and id (sortable).
        The name is built only from validated parts (store_name), so a forged report
        (the nightly's ConfigMaps are writable by its runner) cannot write elsewhere."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / store_name(results)
        if path.resolve().parent != directory.resolve():  # cannot happen with a valid name: belt and braces
            raise ValueError(f"not a run: its file name {path.name!r} leaves {directory}")
        path.write_text(json.dumps(results, default=str) + "\n")
        return path

    def timeline(self, key: str) -> list[Point]:
        return self.timelines.get(key, [])

    def first_seen(self, checks: list[Check]) -> str | None:
        """When the oldest of these claims' current unbroken run of not holding began
        (the start of that run, as far back as the window goes)."""
        starts = []
        for check in checks:
            points = [p for p in self.timeline(claim_key(check)) if p.outcome not in NOT_A_VERDICT]
            since = None
            for p in reversed(points):
                if _held(p.outcome):
                    break
                since = p.started_at
            if since:
                starts.append(since)
        return min(starts) if starts else None

    def verdict(self, key: str) -> str | None:
        """"newly failing" (held in the previous run, not in the last), "recovered"
        (the reverse), "flaky" (it went back and forth more than once in the window:
        three changes or more; a regression and its fix are two, and the fix is
        news), or None. Flaky wins: a claim that keeps flipping is not news each day."""
        points = self.timeline(key)
        held = [_held(p.outcome) for p in points if p.outcome not in NOT_A_VERDICT]
        if len(held) < 2:
            return None
        changes = sum(a != b for a, b in zip(held, held[1:]))
        if changes >= 3:
            return FLAKY
        if held[-2] and not held[-1]:
            return NEWLY_FAILING
        if not held[-2] and held[-1]:
            return RECOVERED
        return None

    def changes(self) -> dict[str, str]:
        """Every claim with a verdict, for the summaries."""
        return {key: v for key in self.timelines if (v := self.verdict(key))}
