"""The reports of stored runs, byte for byte: summary.md, report.html,
metrics.prom and results.json as they are expected in tests/data/golden/ (first
written by podshare 92c39c1, before the report was split by role), for a
realistic run alone (three nodes with pools, three RuntimeClasses, user
namespaces both ways, figures, a known divergence, could-not-check, a re-run, a
common cause, leftovers), the same run with a trend of two runs (the history
keys too: stored histories must keep matching), and a results.json of version 1.

A change that alters what the reports say on purpose rewrites the expected files
with PODSHARE_UPDATE_GOLDEN=1, and the diff shows what changed."""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest

from podshare.history import History
from podshare.records import FAILED, PASSED
from podshare.report import RunReport

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "golden"
REPORTS = ("results.json", "summary.md", "report.html", "metrics.prom")


def _results(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def _previous(results: dict) -> dict:
    """The run before: every claim held, but the one re-run on a fresh pod, which did not."""
    before = copy.deepcopy(results)
    before["run"].update(id="20261130-031700-beef01", started_at="2026-11-30T03:17:00+00:00")
    for check in before["checks"]:
        check["outcome"] = FAILED if check["cause"] and check["outcome"] == PASSED else PASSED
    return before


def _report(case: str) -> tuple[RunReport, History | None]:
    if case == "v1":
        return RunReport.from_json(_results("results-v1.json")), None
    results = _results("results-golden.json")
    history = History([_previous(results), results]) if case == "trend" else None
    return RunReport.from_json(results, history), history


def _same(path: Path, expected: Path) -> None:
    if os.environ.get("PODSHARE_UPDATE_GOLDEN"):
        expected.parent.mkdir(parents=True, exist_ok=True)
        expected.write_bytes(path.read_bytes())
    assert path.read_bytes() == expected.read_bytes(), f"{path.name} differs from {expected}"


@pytest.mark.parametrize("case", ["alone", "trend", "v1"])
def test_a_stored_run_renders_as_expected_byte_for_byte(case, tmp_path):
    report, history = _report(case)
    written = report.write(tmp_path)
    assert sorted(p.name for p in written) == sorted(REPORTS)
    for name in REPORTS:
        _same(tmp_path / name, GOLDEN / case / name)
    if history is not None:
        (tmp_path / "history-keys.txt").write_text("".join(f"{k}\n" for k in history.timelines))
        _same(tmp_path / "history-keys.txt", GOLDEN / case / "history-keys.txt")


def test_results_json_round_trips_with_its_content_unchanged(tmp_path):
    """What is read is written back: the same run, cluster, checks and summary."""
    results = _results("results-golden.json")
    RunReport.from_json(results).write(tmp_path)
    assert json.loads((tmp_path / "results.json").read_text()) == results
