"""The pytest plugin (entry point `pytest11: podshare`): options, markers, and
one object, `PodshareSession`, registered with the plugin manager (as pytest's
junitxml keeps its state in LogXML): the run's state, with the hooks that turn
outcomes and evidence into reports as its methods. The fixtures live in
podshare.fixtures; the pods and the cluster behind them in the pod layer.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
from dataclasses import asdict
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Iterator, NoReturn

import pytest
from _pytest import junitxml

from . import RUN_ID_LABEL, __version__, kube, new_run_id
from .cluster import Cluster, runtime_classes_line
from .disruption import Disrupted, Disruption
from .errors import HARNESS_ERRORS, AccessDenied, KubeError
from .evidence import Evidence
from .history import History
from .metrics import exposition, push
from .pods import Pod, ProbeContainer, ProbeSet, probe_manifest_problem
from .recovery import RERUN, Recovery, rerun_message
from .records import (COULD_NOT_CHECK, INTERRUPTED, KNOWN_DIVERGENCE, NEWLY_FAILING, RECOVERED, Check, RunInfo,
                      nodes_of)
from .report import KnownDivergences, RunReport
from .settings import USER_NAMESPACE_MODES, Settings, add_options

MARKERS = {
    "identity": "hostname and namespace identity of the pod's containers",
    "network": "localhost and the shared port space",
    "ipc": "System V semaphores, shared memory and message queues",
    "posix": "POSIX shared memory, semaphores, message queues and /dev/shm",
    "volume": "emptyDir volumes shared between containers",
    "lifecycle": "container restart and pod recreation",
    "pattern": "multi-container patterns: reverse proxy, log watcher, data loader, native sidecar",
    "perf": "how fast the shared mechanisms are between two containers (figures, no threshold)",
    "userns": "user namespaces (hostUsers: false): one per pod, its id maps, emptyDir ownership",
}
OTHER_MARKERS = {
    "manifest": "manifest(path): the pattern manifest a module's claims use; its pods start with the probe pod",
    "user_namespaced": "a claim about pods with hostUsers: false, collected only for them (--user-namespaces on, both)",
}

SESSION = pytest.StashKey["PodshareSession"]()
EVIDENCE = pytest.StashKey[Evidence]()
DIAGNOSTICS = pytest.StashKey[list]()
KNOWN = pytest.StashKey[tuple]()  # (outcome, message) where --known-divergences decided it
REPORTS = pytest.StashKey[list]()
# (the disruption, what the claim itself saw or None when it ended before using the pod)
DISRUPTED = pytest.StashKey[tuple]()
LISTED = pytest.StashKey[Cluster]()  # the controller's cluster, its nodes listed to count the workers
RUNTIME_CLASS = pytest.StashKey[str]()  # the class the claim's pods ran under, read while they are at hand
# How a claim's id says whether its pods had user namespaces of their own (--user-namespaces on, both).
USERNS_IDS = {True: "userns", False: "hostusers"}


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """Several nodes or RuntimeClasses are checked side by side, as the machines
    they are: a pytest-xdist worker per node and class (`--dist loadgroup`, each
    group's claims on one worker, which starts that group's pods), at most
    --workers at once. An explicit -n is the user's choice; workers do not recurse."""
    if hasattr(config, "workerinput") or config.option.help or config.option.collectonly \
            or not config.pluginmanager.hasplugin("xdist") or getattr(config.option, "numprocesses", None):
        return
    settings = Settings.from_config(config)
    groups = len(settings.runtime_class or (None,)) * len(USER_NAMESPACE_MODES[settings.user_namespaces] or (None,))
    if settings.all_nodes or settings.node_selector:
        try:
            # the session takes this cluster over, so the controller lists the nodes once
            config.stash[LISTED] = cluster = Cluster(settings.kubeconfig, settings.kube_context, "")
            groups *= len(cluster.target_nodes(settings.node_selector, settings.one_per_pool))
        except KubeError:
            return  # the run itself will say why it cannot reach the cluster
    if groups > 1 and settings.workers > 1:
        workers = min(groups, settings.workers)
        # what `-n N --dist loadgroup` sets (xdist turns -n into tx in its own cmdline_main,
        # which may have run before this one)
        config.option.numprocesses, config.option.dist, config.option.tx = workers, "loadgroup", ["popen"] * workers


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
        config.stash[SESSION] = session = PodshareSession(config, settings)
    except (OSError, ValueError) as exc:
        raise pytest.UsageError(f"--known-divergences: {exc}") from None
    config.pluginmanager.register(session, "podshare-session")
    config.pluginmanager.register(Recovery(session, DISRUPTED, EVIDENCE), "podshare-recovery")
    config.pluginmanager.import_plugin("podshare.fixtures")
    if not config.option.collectonly and not getattr(config.option, "xmlpath", None):
        config.option.xmlpath = str(Path(settings.reports_dir) / "junit.xml")
    # SIGTERM (CI cancelling a job) gets the same clean teardown as Ctrl-C.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def session_of(config: pytest.Config) -> "PodshareSession | None":
    return config.stash.get(SESSION, None)


class PodshareSession:
    """Per-run state (settings, the cluster, the checks) and the hooks that need it."""

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config, self.settings = config, settings
        worker = getattr(config, "workerinput", None)  # a pytest-xdist worker: the controller's run
        self.worker = worker["workerid"] if worker else None
        self.run_id = worker["podshare_run_id"] if worker else settings.run_id or new_run_id()
        # Every object name ends in this, so runs sharing a namespace never collide.
        self.suffix = self.run_id[-6:].lower()
        self.started = time.time()
        self.started_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        self.cluster = config.stash.get(LISTED, None) or Cluster(settings.kubeconfig, settings.kube_context, "",
                                                                 self.worker)
        self.cluster.run_id = self.run_id
        self.distributed = False  # this is the controller of xdist workers
        self.worker_problems: list[str] = []
        self.worker_warnings: list[str] = []
        self.workers_cost: Counter[str] = Counter()  # the API requests the workers made
        self.namespaces: list[str] = []
        self.checks: dict[str, Check] = {}
        self.fatal: str | None = None
        self.stop: str | None = None  # why no later test can get further
        self.interrupted: str | None = None  # Ctrl-C or SIGTERM, with what it said
        self.known_divergences = KnownDivergences.load(settings.known_divergences)
        self.collection_errors: list[str] = []
        self.pushed: str | None = None  # what became of --pushgateway
        self.changes: dict[str, str] = {}  # claim @ class -> verdict, with --history-dir
        self.report_paths: list[Path] = []
        self.diagnosed: set[Disruption] = set()  # disruptions whose pods' diagnostics a claim already has

    # ------------------------------------------------------------ failing setup
    def fail_run(self, reason: str) -> NoReturn:
        """A failure no claim can get past (no cluster, no namespace, pods that cannot
        start): fail this test with the one-line reason and stop the session."""
        self.fatal = self.stop = reason
        # from None: the harness error it came from says the same again ("During handling ...")
        raise pytest.fail.Exception(reason, pytrace=False) from None

    @contextlib.contextmanager
    def harness_errors(self, fatal: bool, node: str | None = None) -> Iterator[None]:
        """The one way a fixture turns a harness error into an outcome: the run's
        end (fatal), the end of one node's claims (fatal, with several nodes: each
        of them could not be checked, the other nodes go on) or this claim's
        failure, with the one-line reason either way."""
        try:
            yield
        except Disrupted:
            raise
        except HARNESS_ERRORS as exc:
            failure, cause = str(exc), exc
        else:
            return
        if fatal and node is not None and not isinstance(cause, AccessDenied):
            raise Disrupted(self.cluster.disruptions.record(
                Disruption(f"node {node}: the pods every claim there needs could not start: {failure}",
                           node=node))) from cause
        if fatal:
            self.fail_run(failure)
        # the cause stays attached: the report decides whether the cluster moved under the claim
        raise pytest.fail.Exception(failure, pytrace=False) from cause

    def keep(self, session: pytest.Session) -> bool:
        return self.settings.keep == "always" or (self.settings.keep == "on-failure" and session.testsfailed > 0)

    # ------------------------------------------------------------ hooks
    def pytest_keyboard_interrupt(self, excinfo) -> None:
        self.interrupted = str(excinfo.value) or "KeyboardInterrupt"

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.collection_errors.append(f"{report.nodeid}: {_short_message(report)}")

    @property
    def nodes_dimension(self) -> bool:
        """Whether the node is a dimension of this run (--all-nodes, --node-selector)."""
        return bool(self.settings.all_nodes or self.settings.node_selector)

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """Every claim once per node (--all-nodes, --node-selector) and per
        --runtime-class: session-scoped parameters, so each node and class gets its
        own pods and the claims are grouped by them."""
        if self.nodes_dimension and "node" in metafunc.fixturenames:
            try:
                nodes = self.cluster.target_nodes(self.settings.node_selector, self.settings.one_per_pool)
            except KubeError as exc:
                raise pytest.UsageError(f"podshare: cannot list the nodes to check: {exc}") from None
            if not nodes:
                raise pytest.UsageError(f"podshare: no node matches --node-selector {self.settings.node_selector}")
            metafunc.parametrize("node", nodes, indirect=True, scope="session", ids=nodes)
        if self.settings.runtime_class and "runtime_class" in metafunc.fixturenames:
            metafunc.parametrize("runtime_class", list(self.settings.runtime_class), indirect=True,
                                 scope="session", ids=list(self.settings.runtime_class))
        modes = USER_NAMESPACE_MODES[self.settings.user_namespaces]
        if modes and "user_namespaces" in metafunc.fixturenames:
            metafunc.parametrize("user_namespaces", list(modes), indirect=True, scope="session",
                                 ids=[USERNS_IDS[m] for m in modes])

    def _deselect_user_namespaced(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        """A claim about pods in user namespaces of their own says nothing about pods in
        the host's: it is collected only for pods with hostUsers: false (like -m, the
        others are deselected), so runs without user namespaces stay as they were."""
        kept = [i for i in items if i.get_closest_marker("user_namespaced") is None or _user_namespaces_of(i)]
        if len(kept) != len(items):
            config.hook.pytest_deselected(items=[i for i in items if i not in kept])
            items[:] = kept

    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        """A RuntimeClass whose scheduling.nodeSelector admits only some nodes (as a
        managed sandboxed pool's class does) runs only there: its claims on the
        other nodes are not run, and the reports name them not applicable, why."""
        self._deselect_user_namespaced(config, items)
        if not self.settings.runtime_class or not (self.nodes_dimension or self.settings.node):
            return
        excluded: dict[tuple[str, str], str | None] = {}
        keep, dropped = [], []
        for item in items:
            place = (_node_param_of(item) or self.settings.node, _runtime_class_of(item))
            if place[0] and place[1] and place not in excluded:
                excluded[place] = self.cluster.runtime_class_excludes(place[1], place[0])
            (dropped if excluded.get(place) else keep).append(item)
        if dropped:
            items[:] = keep
            config.hook.pytest_deselected(items=dropped)
        self.cluster.facts["not_applicable"] = [{"node": n, "runtime_class": c, "why": why}
                                                for (n, c), why in excluded.items() if why]

    def pytest_report_collectionfinish(self, config: pytest.Config, items: list[pytest.Item]) -> list[str]:
        if config.option.collectonly or not any("kube" in getattr(i, "fixturenames", ()) for i in items):
            return []
        try:
            self.cluster.connect()
        except KubeError as exc:
            return [f"podshare: {exc}"]
        c = self.cluster.facts
        lines = [f"podshare {__version__}: context {c['context']}, server {c['server']}, "
                 f"Kubernetes {c['server_version']}, run {self.run_id}"]
        try:
            lines += self.cluster.node_lines(self.settings.node)
        except KubeError as exc:  # reading nodes is cluster-scoped and optional
            lines.append(f"podshare nodes: not readable ({exc}); the node is named after the pods start")
        return lines

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem) -> Iterator[None]:
        try:
            return (yield)
        finally:
            self._record_outcome(item, item.stash.get(REPORTS, []))
            if self.stop:
                item.session.shouldstop = f"podshare: {self.stop}"

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_call(self, item: pytest.Item) -> None:
        """A claim whose pod, node or API the run already knows is disrupted ends
        here at once as could-not-check, with the same cause. A claim whose pod never
        became ready fails here, before its body runs, with the pod's reason (unless
        the facts show the cluster moved); its status and events go into the diagnostics."""
        pods = _pods_behind(item)
        known = next((p.disruption for p in pods if p.disruption is not None), None)
        if known is not None:
            item.stash[DISRUPTED] = (known, None)
            pytest.fail(f"could not check: {known.cause}", pytrace=False)
        not_ready = [p for p in pods if p.start_failure]
        if not_ready:
            found = self.cluster.diagnose(not_ready)
            if found is not None:
                item.stash[DISRUPTED] = (found, not_ready[0].start_failure)
                pytest.fail(f"could not check: {found.cause}", pytrace=False)
        for value in getattr(item, "funcargs", {}).values():
            for candidate in (value.values() if isinstance(value, dict) else [value]):
                failure = getattr(candidate, "start_failure", None)
                if isinstance(failure, str):
                    ev = item.stash.get(EVIDENCE, None)
                    if ev is not None:
                        for pod in getattr(candidate, "pods", [candidate]):
                            ev.touch(pod)
                        ev["pod_not_ready"] = failure
                    pytest.fail(f"the pod this claim needs never became ready, so the promise it relies on "
                                f"does not hold here: {failure}", pytrace=False)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
        report = yield
        if report.when != "teardown" and RUNTIME_CLASS not in item.stash:
            runtime_class = _pods_runtime_class(item)
            if runtime_class:
                item.stash[RUNTIME_CLASS] = runtime_class
        known_before = DISRUPTED in item.stash
        # a session fixture's Disrupted reaches every claim of its group: its pods' state
        # goes into the first one's diagnostics, not again into each of the others'
        raised = call.excinfo.value if call.excinfo is not None else None
        repeated = isinstance(raised, Disrupted) and raised.disruption in self.diagnosed
        if isinstance(raised, Disrupted):
            self.diagnosed.add(raised.disruption)
        if report.failed and report.when in ("setup", "call") and not known_before:
            self._diagnose(item, call)
        if DISRUPTED in item.stash and report.failed and report.when in ("setup", "call"):
            disruption, seen = item.stash[DISRUPTED]
            report.podshare_could_not_check = _could_not_check_message(disruption, seen)
        elif report.when == "call":
            self._apply_known_divergence(item, report)
        item.stash.setdefault(REPORTS, []).append(report)  # setup, call, teardown: one check
        if call.excinfo is not None and isinstance(call.excinfo.value, AccessDenied):
            self.stop = str(call.excinfo.value)  # no later test gets further
        ev = item.stash.get(EVIDENCE, None)
        # The pods the test touched; when a fixture failed before any exec, every pod of the run.
        pods = (ev.pods if ev is not None and ev.pods else None) or self.cluster.pods
        # A claim ended at once by a known disruption adds nothing to the first one's diagnostics.
        if report.failed and pods and DIAGNOSTICS not in item.stash and not known_before and not repeated:
            dumps = []
            for pod in pods:
                try:
                    dumps.append(pod.diagnostics())
                except Exception as exc:  # diagnostics must never hide the failure itself
                    dumps.append({"pod": pod.name, "error": str(exc)})
            item.stash[DIAGNOSTICS] = dumps
            if not self.fatal:  # a run that could not start says one line; the dumps are in the reports
                report.sections.append(("podshare diagnostics", json.dumps(dumps, indent=2, default=str)))
        if report.when == "teardown" and ev is not None:
            item.user_properties.append(("evidence", json.dumps(ev.as_json(), default=str)))
            if DIAGNOSTICS in item.stash:
                item.user_properties.append(("diagnostics", json.dumps(item.stash[DIAGNOSTICS], default=str)))
        return report

    def pytest_report_teststatus(self, report: pytest.TestReport, config: pytest.Config):
        """The terminal says COULD NOT CHECK (letter C), apart from failures and errors."""
        if getattr(report, "podshare_could_not_check", None):
            return "could not check", "C", ("COULD NOT CHECK", {"yellow": True})
        return None

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> Iterator[None]:
        """junit.xml: a claim that could not be checked is an <error> with the cause,
        not a <failure> (junitxml writes a failed call as one; the element is
        retagged right after, and its counts with it)."""
        result = yield
        message = getattr(report, "podshare_could_not_check", None)
        xml = self.config.stash.get(junitxml.xml_key, None)
        if message and xml is not None and report.when == "call":
            for node in xml.node_reporter(report).nodes:
                if node.tag == "failure":
                    node.tag = "error"
                    node.set("message", junitxml.bin_xml_escape(message))
                    node.set("type", COULD_NOT_CHECK)
                    xml.stats["failure"] -= 1
                    xml.stats["error"] += 1
        elif message and xml is not None:  # setup: already an <error>; it names the cause
            for node in xml.node_reporter(report).nodes:
                if node.tag == "error":
                    node.set("message", junitxml.bin_xml_escape(message))
                    node.set("type", COULD_NOT_CHECK)
        return result

    def _diagnose(self, item: pytest.Item, call: pytest.CallInfo) -> None:
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
        needed = list(dict.fromkeys([*_pods_behind(item), *(ev.pods if ev is not None else [])]))
        try:
            found = (self.cluster.diagnose(needed) if needed else
                     self.cluster.diagnose(list(self.cluster.pods), pod_level=False))
        except Exception:  # diagnosing must never hide the failure itself
            return
        if found is not None:
            item.stash[DISRUPTED] = (found, seen)

    def _apply_known_divergence(self, item: pytest.Item, report: pytest.TestReport) -> None:
        """A claim the operator listed as a known divergence of its RuntimeClass: its
        failure is reported as that (an expected failure, with the reason and what was
        seen), and its passing fails the run (strict: the list is out of date)."""
        if not self.known_divergences:
            return
        runtime_class, node = _pods_runtime_class(item), _node_param_of(item)
        known_node = nodes_of(self.cluster.facts).get(node) if node else None
        node_labels = known_node.all_labels if known_node else None
        userns = _user_namespaces_of(item)
        listed = self.known_divergences.match(_claim_id(item), runtime_class, node_labels, userns)
        if listed is None:
            return
        where = " on ".join(w for w in ("", runtime_class, f"node {node}" if node else None) if w is not None)
        where += " in a user namespace" if userns else ""
        if report.failed:
            seen = _short_message(report)
            report.outcome, report.wasxfail = "skipped", f"known divergence{where}: {listed}"
            item.stash[KNOWN] = (KNOWN_DIVERGENCE, f"{listed} (seen: {seen})")
        elif report.passed:
            message = (f"listed as a known divergence{where} ({listed}), but the claim now holds: "
                       "update the known-divergences file")
            report.outcome, report.longrepr = "failed", message
            item.stash[KNOWN] = ("failed", message)

    def _record_outcome(self, item: pytest.Item, reports: list[pytest.TestReport]) -> None:
        """One check per claim. A claim passes only on a passed call report: one the run
        stopped in the middle of (Ctrl-C, SIGTERM, a session stop) is `interrupted`."""
        outcome, message = None, ""
        for r in reports:
            if r.failed:
                outcome = "failed" if r.when == "call" else "error"
                message = _short_message(r)
                break
            if r.skipped:
                outcome = "skipped"
                message = r.longrepr[2] if isinstance(r.longrepr, tuple) else str(r.longrepr)
        if outcome is None:
            if any(r.when == "call" and r.passed for r in reports):
                outcome = "passed"
            else:
                outcome = INTERRUPTED
                message = f"the run stopped before this claim finished ({self.interrupted or self.fatal or 'no result'})"
        ev = item.stash.get(EVIDENCE, None)
        if KNOWN in item.stash:
            outcome, message = item.stash[KNOWN]
        if DISRUPTED in item.stash and outcome in ("failed", "error"):
            disruption, seen = item.stash[DISRUPTED]
            outcome, message = COULD_NOT_CHECK, _could_not_check_message(disruption, seen)
            if ev is not None:
                ev["disruption"] = {"cause": disruption.cause, "claim_saw": seen}
        cause = item.stash[DISRUPTED][0].cause if outcome == COULD_NOT_CHECK else ""
        if RERUN in item.stash:  # its first attempt was disrupted: the message says so, the cause names it
            message, cause = rerun_message(item, outcome, message), cause or item.stash[RERUN][0].cause
        self.checks[item.nodeid] = Check(
            id=_check_id(item), claim=_claim_of(item), outcome=outcome,
            claim_id=_claim_id(item), runtime_class=item.stash.get(RUNTIME_CLASS, None),
            user_namespaces=_user_namespaces_of(item),
            per_node=bool(_node_param_of(item)),
            node=_node_param_of(item) or next((p.node for p in (ev.pods if ev is not None else []) if p.node),
                                              self.cluster.facts.get("node")),
            duration_s=round(sum(r.duration for r in reports), 3),
            evidence=ev.as_json() if ev is not None else {}, message=message,
            figures=dict(ev.figures) if ev is not None else {},
            markers=sorted(m.name for m in item.iter_markers() if m.name in MARKERS),
            diagnostics=item.stash.get(DIAGNOSTICS, []), cause=cause)

    # ------------------------------------------------------------ side by side (pytest-xdist)
    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log):
        """Controller: one group per node, RuntimeClass and user-namespace setting, whole on one worker, which
        starts that group's pods once (session fixtures are per worker). The group is
        read from the test id's parameters (xdist's own xdist_group suffix does not
        reach the controller with this pytest)."""
        from xdist.scheduler import LoadScopeScheduling
        values = sorted({*(self.cluster.target_nodes(self.settings.node_selector, self.settings.one_per_pool)
                           if self.nodes_dimension else []),
                         *self.settings.runtime_class,
                         *(USERNS_IDS[m] for m in USER_NAMESPACE_MODES[self.settings.user_namespaces])},
                        key=len, reverse=True)

        class ByNodeAndClass(LoadScopeScheduling):
            def _split_scope(self, nodeid: str) -> str:
                return dimension_group(nodeid, values)
        return ByNodeAndClass(config, log)

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node) -> None:
        """Controller: every worker runs under this run's id (labels, gc, the reports)."""
        self.distributed = True
        node.workerinput["podshare_run_id"] = self.run_id

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error) -> None:
        """Controller: a worker's checks, facts and problems join the run's."""
        done = node.workeroutput.get("podshare") if hasattr(node, "workeroutput") else None
        if error or not done:
            self.worker_problems.append(f"worker {node.gateway.id} ended without its results: {error or 'no output'}")
            return
        done = json.loads(done)
        for nodeid, check in done["checks"].items():
            self.checks[nodeid] = Check.from_json(check)
        facts = self.cluster.facts
        merged = {key: {**facts.get(key, {}), **done["facts"].get(key, {})} for key in ("nodes", "runtime_classes",
                                                                                   "probe_containers")}
        facts.update({k: v for k, v in done["facts"].items() if k not in facts})
        facts.update({key: value for key, value in merged.items() if value})
        if merged["runtime_classes"]:  # each worker knew its own class: the header names them all
            facts["runtime_class"] = runtime_classes_line(merged["runtime_classes"])
        self.cluster.leftovers += done["leftovers"]
        self.fatal = self.fatal or done["fatal"]
        self.worker_warnings += done["warnings"]
        self.namespaces += [done["namespace"]] if done["namespace"] else []
        self.workers_cost.update(done["api_cost"])

    def _worker_output(self) -> None:
        """Worker: what the controller needs to write the reports (they are written once, there)."""
        self.config.workeroutput["podshare"] = json.dumps({
            "checks": {nodeid: asdict(c) for nodeid, c in self.checks.items()}, "facts": self.cluster.facts,
            "leftovers": self.cluster.leftovers, "fatal": self.fatal, "warnings": self.cluster.warnings,
            "namespace": self.cluster.namespace, "api_cost": dict(kube.COST)}, default=str)

    def _remove_what_workers_left(self) -> None:
        """Controller: a worker that died cannot delete its namespace: any of this
        run's that no worker has deleted are deleted now and named as leftovers (a
        namespace already being deleted is its worker's, and its worker said what
        stayed)."""
        if self.settings.keep != "never" or self.settings.namespace:
            return
        try:
            remaining = [n.metadata.name for n in self.cluster.kube.list_namespaces(f"{RUN_ID_LABEL}={self.run_id}")
                         if n.metadata.deletion_timestamp is None]
        except KubeError as exc:
            self.cluster.leftovers.append(f"the run's namespaces could not be listed: {exc}")
            return
        for name in remaining:
            gone = self.cluster.kube.delete_namespace(name, timeout=max(60.0, self.settings.pod_timeout))
            self.cluster.leftovers += gone or [f"namespace/{name} (its worker did not delete it; deleted after the run)"]

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """Every run rewrites every report, also when no claim ran or collection
        failed, so a report on disk is never an earlier run's. A worker hands its
        checks to the controller instead."""
        if session.config.option.collectonly:
            return
        if self.worker is not None:
            self._worker_output()
            return
        if self.distributed:
            self._remove_what_workers_left()
            order = {k: i for i, k in enumerate(self.checks)}
            self.checks = dict(sorted(self.checks.items(), key=lambda kv: (
                kv[1].node or "", kv[1].runtime_class or "", order[kv[0]])))
        if self.collection_errors and not self.fatal:
            self.fatal = f"could not collect the claims: {'; '.join(self.collection_errors)}"
        leftovers = self.cluster.leftovers
        outcomes = {c.outcome for c in self.checks.values()}
        if self.fatal:
            # "could not check" is exit code 2, also when -x stopped the session first
            session.exitstatus = pytest.ExitCode.INTERRUPTED
        elif COULD_NOT_CHECK in outcomes and not outcomes & {"failed", "error"} \
                and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
            # claims the cluster moved under: the run did not check everything (2), but no
            # promise was seen broken (1 stays for that)
            session.exitstatus = pytest.ExitCode.INTERRUPTED
        elif leftovers and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED  # leaving things behind fails the run
        run = RunInfo(id=self.run_id, started_at=self.started_at, started_epoch=round(self.started, 3),
                      fatal=self.fatal, interrupted=self.interrupted, exit_status=int(session.exitstatus),
                      duration_s=round(time.time() - self.started, 2), podshare_version=__version__,
                      pytest_args=list(session.config.invocation_params.args),
                      namespace=self.cluster.namespace if not self.distributed else ", ".join(self.namespaces),
                      leftovers=leftovers, checks_run=len(self.checks),
                      api_warnings=self.cluster.warnings + self.worker_warnings,
                      workers=len(self.namespaces) if self.distributed else None,
                      api_cost=api_cost(kube.COST + self.workers_cost, self.checks.values()),
                      confinement=self.cluster.facts.pop("confinement", None))
        if self.worker_problems:
            run.fatal = self.fatal = self.fatal or "; ".join(self.worker_problems)
            session.exitstatus = pytest.ExitCode.INTERRUPTED
        report = RunReport(run=run, cluster=self.cluster.facts, checks=list(self.checks.values()))
        if self.settings.pushgateway:
            self.pushed = _push_metrics(report, self.settings.pushgateway)
            run.pushgateway = self.pushed
        if self.settings.history_dir and self.checks:  # a run that checked nothing is no point in a trend
            History.record(self.settings.history_dir, report.to_json())
            report.history = History.load(self.settings.history_dir)
            self.changes = report.history.changes()
        self.report_paths = report.write(Path(self.settings.reports_dir))

    def pytest_terminal_summary(self, terminalreporter, exitstatus: int, config: pytest.Config) -> None:
        session = getattr(terminalreporter, "_session", None)
        if self.fatal and session is not None and session.shouldfail:
            # -x / --maxfail ended the session first and said "stopping after 1 failures":
            # the one line with the cause, as without them
            terminalreporter.write_sep("!", f"Interrupted: podshare: {self.fatal}", red=True)
        if not self.report_paths:
            return
        terminalreporter.section("podshare")
        c = self.cluster.facts
        if c.get("node"):
            terminalreporter.write_line(f"node {c['node']}: {c.get('os_image', '?')}, kernel {c.get('kernel', '?')}, "
                                        f"runtime {c.get('container_runtime', '?')}")
        for p in self.report_paths:
            terminalreporter.write_line(f"report: {p}")
        if self.cluster.leftovers:
            terminalreporter.write_line(f"NOT CLEANED UP: {', '.join(self.cluster.leftovers)}", red=True)
        if self.pushed:
            terminalreporter.write_line(f"metrics {self.pushed}", red=self.pushed.startswith("NOT"))
        for key, verdict in self.changes.items():
            terminalreporter.write_line(f"{verdict}: {key}", red=verdict == NEWLY_FAILING,
                                        green=verdict == RECOVERED)
        for warning in self.cluster.warnings:
            terminalreporter.write_line(f"API warning: {warning}", yellow=True)
        unchecked = [c for c in self.checks.values() if c.outcome == COULD_NOT_CHECK]
        for cause, count in Counter(c.cause for c in unchecked).items():
            terminalreporter.write_line(f"could not check {count} claim{'s' * (count != 1)}: {cause}", yellow=True)


# ------------------------------------------------------------------ the pods a claim needs

def _pods_behind(item: pytest.Item) -> list[Pod]:
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


def _pods_runtime_class(item: pytest.Item) -> str | None:
    """The claim's RuntimeClass: --runtime-class's parameter, else the one its pods
    ran under as read back from the API (a manifest may set runtimeClassName itself)."""
    return _runtime_class_of(item) or next((p.runtime_class for p in _pods_behind(item) if p.runtime_class), None)


def _could_not_check_message(disruption: Disruption, seen: str | None) -> str:
    """One sentence: the disruption and its source, then what the claim itself saw."""
    said = f"could not check: {disruption.cause}"
    return f"{said}; the claim saw: {seen}" if seen and seen not in disruption.cause else said


# ------------------------------------------------------------------ naming claims

def api_cost(cost: Counter[str], checks) -> dict[str, float]:
    """What the run asked of the API server, in all and per node checked (README:
    "Large clusters" scales it to 500 nodes)."""
    nodes = len({c.node for c in checks if c.node}) or 1
    total = {k: cost[k] for k in ("api_calls", "execs", "pods_created", "configmaps_created", "services_created")}
    return {**total, "nodes": nodes, **{f"{k}_per_node": round(v / nodes, 1) for k, v in total.items()}}


def _runtime_class_of(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("runtime_class") if callspec else None


def dimension_group(nodeid: str, values: list[str]) -> str:
    """The node and RuntimeClass in a test id's parameters (longest names first,
    each a whole run of "-"-separated segments: vm-current is not vm)."""
    params = nodeid[nodeid.find("[") + 1:-1] if nodeid.endswith("]") else ""
    found = []
    for value in values:
        match = re.search(rf"(?:^|-){re.escape(value)}(?=-|$)", params)
        if match:
            found.append(value)
            params = params[:match.start()] + params[match.end():]
    return "|".join(sorted(found)) or "default"


def _user_namespaces_of(item: pytest.Item) -> bool | None:
    """True or False where --user-namespaces made it a dimension of the run, else None."""
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("user_namespaces") if callspec else None


def _node_param_of(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("node") if callspec else None


def _check_id(item: pytest.Item) -> str:
    """The claim's id as a checkout names it (suites/test_x.py::test_y[...]), also
    when the installed suites run (`podshare run`, the runner image), so known
    divergences and a history match across the two."""
    _, _, rest = item.nodeid.partition("::")
    return f"suites/{item.path.name}::{rest}" if item.path.parent.name == "suites" and rest else item.nodeid


def _claim_id(item: pytest.Item) -> str:
    """The claim without its node, RuntimeClass and user-namespace setting: one row of
    the matrix (test_x[disk-node-b-gvisor-userns] -> test_x[disk]; a session-scoped parameter may also
    come first: test_y[gvisor-unix] -> test_y[unix]). Node names may hold dashes, so
    each is removed as a whole run of id segments, the last such run."""
    check_id = _check_id(item)
    if not check_id.endswith("]"):
        return check_id
    base, ids = check_id[:-1].split("[", 1)
    userns = _user_namespaces_of(item)
    for dimension in (None if userns is None else USERNS_IDS[userns], _runtime_class_of(item), _node_param_of(item)):
        if dimension:
            found = list(re.finditer(rf"(?:^|-){re.escape(dimension)}(?=-|$)", ids))
            if found:
                ids = (ids[:found[-1].start()] + ids[found[-1].end():]).strip("-")
    return f"{base}[{ids}]" if ids else base


def _claim_of(item: pytest.Item) -> str:
    doc = getattr(getattr(item, "function", None), "__doc__", None) or ""
    first = doc.strip().split("\n\n")[0]
    return " ".join(first.split()) or item.name


# A harness error's message is a sentence already; its class (as pytest prefixes it) is not for the reader.
_HARNESS_CLASS = re.compile(r"^(?:[\w.]+\.)?(?:KubeError|AccessDenied|PodNotReady|Disrupted|GaveUp|ProbeKilled): ")


# A claim's assertion: its own sentence is the message; pytest's class prefix and its
# introspection after it ("assert False", "+  where False = failed_with({...})") are not.
_CLAIM_CLASS = re.compile(r"^(?:AssertionError|Failed): ")
_INTROSPECTION = re.compile(r"\n(?:assert |\s*\+\s+where |where |AssertionError$).*", re.S)


def _short_message(report: pytest.TestReport | pytest.CollectReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        message = _HARNESS_CLASS.sub("", crash.message)
        if _CLAIM_CLASS.match(message):
            message = _INTROSPECTION.sub("", _CLAIM_CLASS.sub("", message))
        return message
    return _HARNESS_CLASS.sub("", str(report.longrepr).strip().splitlines()[-1]) if report.longrepr else ""


def _push_metrics(report: RunReport, url: str) -> str:
    """Push the run's metrics, grouped by cluster context and node so each
    cluster's latest run replaces its previous one; returns what happened."""
    body = exposition(report.run, report.cluster, report.checks)
    try:
        return "pushed to " + push(url, body, {"context": str(report.cluster.get("context") or "none"),
                                               "node": str(report.cluster.get("node") or "none")})
    except OSError as exc:
        return f"NOT pushed: {exc}"


