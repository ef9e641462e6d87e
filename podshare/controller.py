"""Side by side: several nodes or RuntimeClasses checked at once by pytest-xdist
workers, one worker per group (node, class, user-namespace setting), each
starting its group's pods once. `Controller` exists only in the controller
process (as xdist's DSession does): it schedules the groups, hands each worker
the run's id, and takes each worker's result (`WorkerResult`, typed) into the
run's checks and facts. A worker writes no report; the controller writes them once.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field

import pytest

from . import RUN_ID_LABEL, dimensions, failure_block, kube_calls
from .errors import KubeError
from .records import Check, ClusterFacts
from .session import PodshareSession

WORKER_OUTPUT = "podshare"  # the key of a worker's result in xdist's workeroutput


@dataclass
class WorkerResult:
    """What a worker hands the controller when it ends."""
    checks: dict[str, Check] = field(default_factory=dict)  # by pytest node id
    facts: ClusterFacts = field(default_factory=ClusterFacts)
    leftovers: list[str] = field(default_factory=list)
    fatal: str | None = None
    warnings: list[str] = field(default_factory=list)
    namespace: str | None = None
    api_cost: dict[str, int] = field(default_factory=dict)
    confinement: str | None = None

    @classmethod
    def of(cls, ps: PodshareSession) -> "WorkerResult":
        return cls(checks=dict(ps.checks), facts=ps.cluster.facts, leftovers=list(ps.cluster.leftovers),
                   fatal=ps.fatal, warnings=list(ps.cluster.warnings), namespace=ps.cluster.namespace,
                   api_cost=dict(kube_calls.COST), confinement=ps.cluster.confinement)

    def to_json(self) -> str:
        return json.dumps({**{k: v for k, v in self.__dict__.items() if k not in ("checks", "facts")},
                           "checks": {nodeid: asdict(c) for nodeid, c in self.checks.items()},
                           "facts": self.facts.to_json()}, default=str)

    @classmethod
    def from_json(cls, text: str) -> "WorkerResult":
        data = json.loads(text)
        return cls(**{**data, "checks": {k: Check.from_json(c) for k, c in data["checks"].items()},
                      "facts": ClusterFacts.from_json(data["facts"])})


class Controller:
    """The controller's hooks and what it gathers from the workers."""

    def __init__(self, ps: PodshareSession) -> None:
        self.ps = ps
        self.problems: list[str] = []  # workers that ended without their results
        self.warnings: list[str] = []
        self.namespaces: list[str] = []
        self.cost: Counter[str] = Counter()  # the API requests the workers made

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log):
        """One group per node, RuntimeClass and user-namespace setting, whole on one
        worker. The controller sees test ids only: the group is read from the id's
        dimension segments (xdist's own xdist_group suffix does not reach the
        controller with this pytest)."""
        from xdist.scheduler import LoadScopeScheduling
        segments = dimensions.segments_of_run(self.ps.settings, self.ps.target_nodes())

        class ByDimensions(LoadScopeScheduling):
            def _split_scope(self, nodeid: str) -> str:
                return dimensions.group_of(nodeid, segments)
        return ByDimensions(config, log)

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node) -> None:
        """Every worker runs under this run's id (labels, gc, the reports)."""
        node.workerinput["podshare_run_id"] = self.ps.run_id

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        failure_block.restore(report)  # before the terminal keeps it

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error) -> None:
        """A worker's checks, facts and problems join the run's."""
        done = node.workeroutput.get(WORKER_OUTPUT) if hasattr(node, "workeroutput") else None
        if error or not done:
            self.problems.append(f"worker {node.gateway.id} ended without its results: {error or 'no output'}")
            return
        result = WorkerResult.from_json(done)
        self.ps.checks.update(result.checks)
        self.ps.cluster.facts.merge(result.facts)
        self.ps.cluster.leftovers += result.leftovers
        self.ps.fatal = self.ps.fatal or result.fatal
        self.warnings += result.warnings
        self.namespaces += [result.namespace] if result.namespace else []
        self.cost.update(result.api_cost)
        self.ps.cluster.confinement = self.ps.cluster.confinement or result.confinement

    def remove_what_workers_left(self) -> None:
        """A worker that died cannot delete its namespace: any of this run's that no
        worker has deleted are deleted now and named as leftovers (a namespace
        already being deleted is its worker's, and its worker said what stayed)."""
        ps = self.ps
        if ps.settings.keep != "never" or ps.settings.namespace:
            return
        try:
            remaining = [n.metadata.name for n in ps.cluster.kube.list_namespaces(f"{RUN_ID_LABEL}={ps.run_id}")
                         if n.metadata.deletion_timestamp is None]
        except KubeError as exc:
            ps.cluster.leftovers.append(f"the run's namespaces could not be listed: {exc}")
            return
        for name in remaining:
            gone = ps.cluster.kube.delete_namespace(name, timeout=max(60.0, ps.settings.pod_timeout))
            ps.cluster.leftovers += gone or [f"namespace/{name} (its worker did not delete it; deleted after the run)"]

    def ordered_checks(self) -> None:
        """The workers' checks in the order of where they ran, then of collection."""
        order = {k: i for i, k in enumerate(self.ps.checks)}
        self.ps.checks = dict(sorted(self.ps.checks.items(), key=lambda kv: (
            kv[1].node or "", kv[1].runtime_class or "", order[kv[0]])))


def worker_output(config: pytest.Config, ps: PodshareSession) -> None:
    """Worker: what the controller needs to write the reports."""
    config.workeroutput[WORKER_OUTPUT] = WorkerResult.of(ps).to_json()


def wanted_workers(config: pytest.Config, ps_settings, groups: int) -> None:
    """`-n N --dist loadgroup` with N the groups of the run, at most --workers (xdist
    turns -n into tx in its own cmdline_main, which may have run before ours)."""
    if groups > 1 and ps_settings.workers > 1:
        workers = min(groups, ps_settings.workers)
        config.option.numprocesses, config.option.dist, config.option.tx = workers, "loadgroup", ["popen"] * workers


def is_controller(config: pytest.Config) -> bool:
    """This process runs xdist workers (and none of the claims itself)."""
    return not hasattr(config, "workerinput") and getattr(config.option, "dist", "no") != "no" \
        and bool(getattr(config.option, "tx", None) or getattr(config.option, "numprocesses", None))
