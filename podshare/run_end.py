"""The end of a run: its exit status in the documented words, the run's record,
the metrics pushed, the history added to, every report written; and what the
terminal says of it (`Terminal`, a plugin object of its own, as xdist keeps its
terminal output apart)."""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from . import __version__, kube_calls
from .controller import Controller
from .history import History
from .metrics import exposition, push
from .records import COULD_NOT_CHECK, ERROR, FAILED, NEWLY_FAILING, RECOVERED, Check, ClusterFacts, RunInfo
from .report import RunReport
from .session import PodshareSession


def exit_status(ps: PodshareSession, status: int, leftovers: list[str]) -> int:
    """1: a promise did not hold, or the run left objects behind (that outranks
    could-not-check: whoever runs it must clean up); 2: podshare could not check
    (a fatal setup error, or claims the cluster moved under, no promise seen
    broken); else pytest's own."""
    outcomes = {c.outcome for c in ps.checks.values()}
    if ps.fatal:  # also when -x stopped the session first
        status = pytest.ExitCode.INTERRUPTED
    elif COULD_NOT_CHECK in outcomes and not outcomes & {FAILED, ERROR} \
            and status in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        status = pytest.ExitCode.INTERRUPTED
    if leftovers and status in (pytest.ExitCode.OK, pytest.ExitCode.INTERRUPTED):
        return pytest.ExitCode.TESTS_FAILED
    return status


def api_cost(cost: Counter[str], checks) -> dict[str, float]:
    """What the run asked of the API server, in all and per node checked (docs/nodes.md,
    "Large clusters", scales it to 500 nodes)."""
    nodes = len({c.node for c in checks if c.node}) or 1
    total = {k: cost[k] for k in ("api_calls", "execs", "pods_created", "configmaps_created", "services_created")}
    return {**total, "nodes": nodes, **{f"{k}_per_node": round(v / nodes, 1) for k, v in total.items()}}


def finish(ps: PodshareSession, session: pytest.Session, controller: Controller | None) -> "Ending":
    """Every run rewrites every report, also when no claim ran or collection failed,
    so a report on disk is never an earlier run's."""
    if controller is not None:
        controller.remove_what_workers_left()
        controller.ordered_checks()
    if ps.collection_errors and not ps.fatal:
        ps.fatal = f"could not collect the claims: {'; '.join(ps.collection_errors)}"
    if controller is not None and controller.problems:
        # a worker that ended without its results is could-not-check: known before
        # the exit status is worked out, so leftovers still outrank it (1, not 2)
        ps.fatal = ps.fatal or "; ".join(controller.problems)
    leftovers = ps.cluster.leftovers
    session.exitstatus = exit_status(ps, session.exitstatus, leftovers)
    workers = controller.namespaces if controller is not None else None
    run = RunInfo(id=ps.run_id, started_at=ps.started_at, started_epoch=round(ps.started, 3),
                  fatal=ps.fatal, interrupted=ps.interrupted, exit_status=int(session.exitstatus),
                  duration_s=round(time.time() - ps.started, 2), podshare_version=__version__,
                  pytest_args=list(session.config.invocation_params.args),
                  namespace=ps.cluster.namespace if workers is None else ", ".join(workers),
                  leftovers=leftovers, checks_run=len(ps.checks),
                  api_warnings=ps.cluster.warnings + (controller.warnings if controller else []),
                  workers=len(workers) if workers is not None else None,
                  api_cost=api_cost(kube_calls.COST + (controller.cost if controller else Counter()), ps.checks.values()),
                  confinement=ps.cluster.confinement)
    report = RunReport(run=run, cluster=ps.cluster.facts, checks=list(ps.checks.values()))
    ending = Ending()
    if ps.settings.pushgateway:
        run.pushgateway = ending.pushed = _push_metrics(report, ps.settings.pushgateway, ps.cluster.facts)
    if ps.settings.history_dir and ps.checks:  # a run that checked nothing is no point in a trend
        History.record(ps.settings.history_dir, report.to_json())
        report.history = History.load(ps.settings.history_dir)
        ending.changes = report.history.changes()
    ending.paths = report.write(Path(ps.settings.reports_dir))
    ending.causes = [f"{cause.headline}: {cause.why}" for cause in report.findings().attention.causes]
    return ending


class Ending:
    """What the run's end made: report paths, the push, the history's verdicts."""

    def __init__(self) -> None:
        self.paths: list[Path] = []
        self.pushed: str | None = None
        self.changes: dict[str, str] = {}  # claim @ class -> verdict, with --history-dir
        self.causes: list[str] = []  # several failures of one errno for one container, once each


def _push_metrics(report: RunReport, url: str, facts: ClusterFacts) -> str:
    """Push the run's metrics, grouped by cluster context and node so each
    cluster's latest run replaces its previous one; returns what happened."""
    body = exposition(report.run, report.cluster, report.checks)
    try:
        return "pushed to " + push(url, body, {"context": str(facts.context or "none"),
                                               "node": str(facts.node or "none")})
    except OSError as exc:
        return f"NOT pushed: {exc}"


class Terminal:
    """The run's last lines on the terminal: where the reports are, what was left,
    what changed, what could not be checked and why (one line per cause)."""

    def __init__(self, ps: PodshareSession) -> None:
        self.ps = ps
        self.ending: Ending | None = None

    def pytest_terminal_summary(self, terminalreporter, exitstatus: int, config: pytest.Config) -> None:
        ps, write = self.ps, terminalreporter.write_line
        session = getattr(terminalreporter, "_session", None)
        if ps.fatal and session is not None and session.shouldfail:
            # -x / --maxfail ended the session first and said "stopping after 1 failures":
            # the one line with the cause, as without them
            terminalreporter.write_sep("!", f"Interrupted: podshare: {ps.fatal}", red=True)
        if self.ending is None or not self.ending.paths:
            return
        terminalreporter.section("podshare")
        c = ps.cluster.facts
        if c.node:
            write(f"node {c.node}: {c.os_image or '?'}, kernel {c.kernel or '?'}, runtime {c.container_runtime or '?'}")
        for p in self.ending.paths:
            write(f"report: {p}")
        if ps.cluster.leftovers:
            write(f"NOT CLEANED UP: {', '.join(ps.cluster.leftovers)}", red=True)
        if self.ending.pushed:
            write(f"metrics {self.ending.pushed}", red=self.ending.pushed.startswith("NOT"))
        for cause in self.ending.causes:
            write(cause, red=True)
        for key, verdict in self.ending.changes.items():
            write(f"{verdict}: {key}", red=verdict == NEWLY_FAILING, green=verdict == RECOVERED)
        for warning in ps.cluster.warnings:
            write(f"API warning: {warning}", yellow=True)
        unchecked: list[Check] = [c for c in ps.checks.values() if c.outcome == COULD_NOT_CHECK]
        for cause, count in Counter(c.cause for c in unchecked).items():
            write(f"could not check {count} claim{'s' * (count != 1)}: {cause}", yellow=True)
