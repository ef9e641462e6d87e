"""The pytest plugin (entry point `pytest11: podshare`): options, markers, and
the hook wiring. Each concern is an object of its own, registered in
configure and unregistered in unconfigure (as pytest's junitxml does): the
run's hooks (`PodshareHooks`), recovery, junit's could-not-check, the
terminal summary and, only in an xdist controller, the `Controller`. What
the hooks do lives in the modules they call: dimensions (parametrizing and
naming claims), claim_diagnosis, outcomes, run_end; the run's state in session.
"""
from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Iterator

import pytest

from . import __version__, claim_diagnosis, dimensions, failure_block, junit, new_run_id, outcomes
from .cluster import Cluster
from .controller import Controller, is_controller, wanted_workers, worker_output
from .disruption import Disrupted
from .errors import AccessDenied, KubeError
from .manifests import probe_manifest_problem
from .markers import MARKERS, OTHER_MARKERS
from .progress import Progress
from .recovery import Recovery
from .run_end import Terminal, finish
from .session import (DIAGNOSTICS, DISRUPTED, EVIDENCE, KNOWN, LISTED, MESSAGE, REPORTS, RUNTIME_CLASS, SESSION,
                      PodshareSession)
from .settings import Settings, add_options

RUN_ID = pytest.StashKey[str]()
REGISTERED = pytest.StashKey[list]()  # (name, object) this plugin registered, to unregister
PREVIOUS_SIGTERM = pytest.StashKey[object]()


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def _run_id(config: pytest.Config, settings: Settings) -> str:
    """Known before anything is made: a worker's is its controller's."""
    if RUN_ID not in config.stash:
        worker = getattr(config, "workerinput", None)
        config.stash[RUN_ID] = worker["podshare_run_id"] if worker else settings.run_id or new_run_id()
    return config.stash[RUN_ID]


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """Several nodes or RuntimeClasses are checked side by side, as the machines
    they are: a pytest-xdist worker per group (podshare.controller), at most
    --workers at once. An explicit -n is the user's choice; workers do not recurse."""
    if hasattr(config, "workerinput") or config.option.help or config.option.collectonly \
            or not config.pluginmanager.hasplugin("xdist") or getattr(config.option, "numprocesses", None):
        return
    settings = Settings.from_config(config)
    nodes: list[str] = []
    if settings.all_nodes or settings.node_selector:
        try:
            # the session takes this cluster over, so the controller lists the nodes once
            config.stash[LISTED] = cluster = Cluster(settings.kubeconfig, settings.kube_context,
                                                     _run_id(config, settings))
            nodes = cluster.target_nodes(settings.node_selector, settings.one_per_pool)
        except KubeError:
            return  # the run itself will say why it cannot reach the cluster
    wanted_workers(config, settings, dimensions.groups_of_run(settings, nodes))


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    for name, text in {**MARKERS, **OTHER_MARKERS}.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    if config.option.help:
        return
    settings = Settings.from_config(config)
    problem = probe_manifest_problem(settings.pod_manifest)
    if problem:
        raise pytest.UsageError(f"--pod-manifest {settings.pod_manifest}: {problem}")
    try:
        ps = PodshareSession(config, settings, _run_id(config, settings), config.stash.get(LISTED, None))
    except (OSError, ValueError) as exc:
        raise pytest.UsageError(f"--known-divergences: {exc}") from None
    config.stash[SESSION] = ps
    terminal = Terminal(ps)
    controller = Controller(ps) if is_controller(config) else None
    registered = [("podshare-session", PodshareHooks(ps, terminal, controller)),
                  ("podshare-recovery", Recovery(ps, DISRUPTED, EVIDENCE)),
                  ("podshare-junit", junit.CouldNotCheckAsError(config)), ("podshare-terminal", terminal),
                  *([("podshare-controller", controller)] if controller else []),
                  *([("podshare-progress", Progress(config, lambda: dimensions.segments_of_run(
                      settings, ps.target_nodes())))] if ps.worker is None else [])]  # a worker's terminal is nobody's
    for name, plugin in registered:
        config.pluginmanager.register(plugin, name)
    config.stash[REGISTERED] = registered
    config.pluginmanager.import_plugin("podshare.fixtures")
    if not config.option.collectonly and not getattr(config.option, "xmlpath", None):
        config.option.xmlpath = str(Path(settings.reports_dir) / "junit.xml")
    # SIGTERM (CI cancelling a job) gets the same clean teardown as Ctrl-C, for this session only.
    if threading.current_thread() is threading.main_thread():
        config.stash[PREVIOUS_SIGTERM] = signal.signal(signal.SIGTERM, _interrupt)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Undo what configure did."""
    for _name, plugin in config.stash.get(REGISTERED, []):
        config.pluginmanager.unregister(plugin)
    if PREVIOUS_SIGTERM in config.stash and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, config.stash[PREVIOUS_SIGTERM])
    if SESSION in config.stash:
        del config.stash[SESSION]


def _interrupt(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


class PodshareHooks:
    """The run's hooks, each handing its work to the module whose concern it is."""

    def __init__(self, ps: PodshareSession, terminal: Terminal, controller: Controller | None) -> None:
        self.ps, self.terminal, self.controller = ps, terminal, controller

    def pytest_keyboard_interrupt(self, excinfo) -> None:
        self.ps.interrupted = str(excinfo.value) or "KeyboardInterrupt"

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.ps.collection_errors.append(f"{report.nodeid}: {outcomes.short_message(report)}")

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        nodes = None
        if self.ps.nodes_dimension and "node" in metafunc.fixturenames:
            try:
                nodes = self.ps.target_nodes()
            except KubeError as exc:
                raise pytest.UsageError(f"podshare: cannot list the nodes to check: {exc}") from None
            if not nodes:
                raise pytest.UsageError(f"podshare: no node matches --node-selector {self.ps.settings.node_selector}")
        dimensions.parametrize(metafunc, self.ps.settings, nodes)

    @pytest.hookimpl(trylast=True)  # after -m and -k: what is not applicable is said of the claims selected
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        """Claims about user-namespaced pods only for such pods; a RuntimeClass whose
        scheduling.nodeSelector admits only some nodes (as a managed sandboxed pool's
        class does) runs only there, the reports naming the rest not applicable."""
        dimensions.deselect(config, items, dimensions.user_namespaced_elsewhere)
        dimensions.deselect(config, items, dimensions.across_without_a_class)
        if not (self.ps.nodes_dimension or self.ps.settings.node):
            return
        node_of = lambda i: dimensions.of_item(i).node or self.ps.settings.node  # noqa: E731
        missing = dimensions.lacking(items, self.ps.settings.node, self.ps.cluster.node_lacks)
        gaps = {(na.node, na.feature) for na in missing}
        dimensions.deselect(config, items, lambda i: any((node_of(i), f) in gaps for f in dimensions.needed_features(i)))
        excluded = dimensions.not_applicable(items, self.ps.settings.node, self.ps.cluster.runtime_class_excludes) \
            if self.ps.settings.runtime_class else []
        places = {(na.node, na.runtime_class) for na in excluded}
        dimensions.deselect(config, items, lambda i: (node_of(i), dimensions.of_item(i).runtime_class) in places)
        self.ps.cluster.facts.not_applicable = excluded + missing

    def pytest_report_collectionfinish(self, config: pytest.Config, items: list[pytest.Item]) -> list[str]:
        if config.option.collectonly or not any("kube" in getattr(i, "fixturenames", ()) for i in items):
            return []
        try:
            self.ps.cluster.connect()
        except KubeError as exc:
            return [f"podshare: {exc}"]
        c = self.ps.cluster.facts
        lines = [f"podshare {__version__}: context {c.context}, server {c.server}, "
                 f"Kubernetes {c.server_version}, run {self.ps.run_id}"]
        try:
            lines += self.ps.cluster.node_lines(self.ps.settings.node)
        except KubeError as exc:  # reading nodes is cluster-scoped and optional
            lines.append(f"podshare nodes: not readable ({exc}); the node is named after the pods start")
        return lines

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem) -> Iterator[None]:
        try:
            return (yield)
        finally:
            self.ps.checks[item.nodeid] = outcomes.check_of(self.ps, item, item.stash.get(REPORTS, []), MARKERS)
            if self.ps.stop:
                item.session.shouldstop = f"podshare: {self.ps.stop}"

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_call(self, item: pytest.Item) -> None:
        """A claim whose pod, node or API the run already knows is disrupted ends
        here at once as could-not-check, with the same cause; one whose pod never
        became ready fails here, before its body runs, with the pod's reason."""
        why = claim_diagnosis.before_the_claim(self.ps, item)
        if why is not None:
            pytest.fail(why, pytrace=False)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
        report = yield
        ps = self.ps
        if report.when != "teardown" and RUNTIME_CLASS not in item.stash:
            runtime_class = claim_diagnosis.pods_runtime_class(item, dimensions.of_item(item).runtime_class)
            if runtime_class:
                item.stash[RUNTIME_CLASS] = runtime_class
        known_before = DISRUPTED in item.stash
        # a session fixture's Disrupted reaches every claim of its group: its pods' state
        # goes into the first one's diagnostics, not again into each of the others'
        raised = call.excinfo.value if call.excinfo is not None else None
        repeated = isinstance(raised, Disrupted) and raised.disruption in ps.diagnosed
        if isinstance(raised, Disrupted):
            ps.diagnosed.add(raised.disruption)
        if report.failed and report.when in ("setup", "call") and not known_before:
            claim_diagnosis.after_a_failure(ps, item, call)
        if DISRUPTED in item.stash and report.failed and report.when in ("setup", "call"):
            junit.mark(report, outcomes.could_not_check_message(*item.stash[DISRUPTED]))
        elif report.when == "call":
            outcomes.apply_known_divergence(ps, item, report, item.stash.get(RUNTIME_CLASS, None))
        item.stash.setdefault(REPORTS, []).append(report)  # setup, call, teardown: one check
        if isinstance(raised, AccessDenied):
            ps.stop = str(raised)  # no later test gets further
        # A claim ended at once by a known disruption adds nothing to the first one's diagnostics.
        short = failure_block.applies(item)
        if report.failed and DIAGNOSTICS not in item.stash and not known_before and not repeated:
            claim_diagnosis.keep_diagnostics(ps, item, report, on_terminal=not short)
        if short and report.failed and report.when in ("setup", "call"):
            message = item.stash[KNOWN][1] if KNOWN in item.stash else outcomes.short_message(report)
            item.stash[MESSAGE] = message
            said = outcomes.could_not_check_message(*item.stash[DISRUPTED]) if DISRUPTED in item.stash else message
            failure_block.mark(report, failure_block.block(outcomes.claim_of(item), dimensions.check_id(item), said,
                                                           item.stash.get(EVIDENCE, None), ps.settings.reports_dir))
        ev = item.stash.get(EVIDENCE, None)
        if report.when == "teardown" and ev is not None:
            item.user_properties.append(("evidence", outcomes.as_json_text(ev.as_json())))
            if DIAGNOSTICS in item.stash:
                item.user_properties.append(("diagnostics", outcomes.as_json_text(item.stash[DIAGNOSTICS])))
        return report

    def pytest_report_teststatus(self, report: pytest.TestReport, config: pytest.Config):
        """The terminal says COULD NOT CHECK (letter C), apart from failures and errors."""
        if junit.could_not_check(report):
            return "could not check", "C", ("COULD NOT CHECK", {"yellow": True})
        return None

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if session.config.option.collectonly:
            return
        if self.ps.worker is not None:  # a worker hands its checks to the controller instead
            worker_output(session.config, self.ps)
            return
        self.terminal.ending = finish(self.ps, session, self.controller)
