"""The pytest plugin (entry point `pytest11: podshare`): options, markers,
fixtures, and the hooks that turn outcomes and evidence into reports."""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator, NoReturn

import pytest

from . import MANAGED_BY, RUN_ID_LABEL, __version__, evidence as evidence_mod
from .kube import AccessDenied, Kube, KubeError
from .pods import (Pod, ProbeContainer, ProbeSet, load_manifest, load_manifests, probe_manifest_problem, render,
                   start_pods, start_pods_for_claims)
from .history import History
from .metrics import exposition, push
from .report import Check, KnownDivergences, RunReport
from .retry import GaveUp
from .settings import Settings, add_options

MARKERS = {
    "identity": "hostname and namespace identity of the pod's containers",
    "network": "localhost and the shared port space",
    "ipc": "System V semaphores, shared memory and message queues",
    "posix": "POSIX shared memory, semaphores, message queues and /dev/shm",
    "volume": "emptyDir volumes shared between containers",
    "lifecycle": "container restart and pod recreation",
    "pattern": "multi-container patterns: reverse proxy, log watcher, data loader, native sidecar",
    "perf": "how fast the shared mechanisms are between two containers (figures, no threshold)",
}
HARNESS_ERRORS = (KubeError, GaveUp)

SESSION = pytest.StashKey["PodshareSession"]()
EVIDENCE = pytest.StashKey[evidence_mod.Evidence]()
SESSION_STOP = pytest.StashKey[str]()
DIAGNOSTICS = pytest.StashKey[list]()
KNOWN = pytest.StashKey[tuple]()  # (outcome, message) where --known-divergences decided it
REPORTS = pytest.StashKey[list]()


class PodshareSession:
    """Per-run state: settings, the cluster connection, the namespace, the report."""

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config, self.settings = config, settings
        self.run_id = settings.run_id or (
            dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6])
        # Every object name ends in this, so runs sharing a namespace never collide.
        self.suffix = self.run_id[-6:].lower()
        self.started = time.time()
        self.started_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        self.cluster: dict[str, Any] = {}
        self.checks: dict[str, Check] = {}
        self._kube: Kube | KubeError | None = None
        self.namespace: str | None = None
        self.leftovers: list[str] = []
        self.pods: list[Pod] = []  # every pod this run created, for diagnostics
        self.fatal: str | None = None
        self.interrupted: str | None = None  # Ctrl-C or SIGTERM, with what it said
        self.known_divergences = KnownDivergences.load(settings.known_divergences)
        self.collection_errors: list[str] = []
        self.pushed: str | None = None  # what became of --pushgateway
        self.changes: dict[str, str] = {}  # claim @ class -> verdict, with --history-dir

    @property
    def kube(self) -> Kube:
        """Connect once; a failure is remembered, so every test reports the same cause quickly."""
        if self._kube is None:
            try:
                self._kube = Kube(self.settings.kubeconfig, self.settings.kube_context)
                self.cluster.update(context=self._kube.context, server=self._kube.server,
                                    server_version=self._kube.server_version())
            except KubeError as exc:
                self._kube = exc
        if isinstance(self._kube, KubeError):
            raise self._kube
        return self._kube

    def learn_node(self, node: str) -> None:
        """Node facts for the report; reading nodes is optional (cluster-scoped)."""
        if self.cluster.get("node") == node:
            return
        self.cluster["node"] = node
        try:
            info = self.kube.node(node).status.node_info
            self.cluster.update(os_image=info.os_image, kernel=info.kernel_version,
                                container_runtime=info.container_runtime_version,
                                kubelet=info.kubelet_version)
        except KubeError as exc:
            self.cluster["node_info"] = f"unavailable: {exc}"

    def labels(self) -> dict[str, str]:
        return {**MANAGED_BY, RUN_ID_LABEL: self.run_id}

    # Hooks pytest calls without a config; registered with the plugin manager
    # as this object's methods, so they reach the run's state.
    def pytest_keyboard_interrupt(self, excinfo) -> None:
        self.interrupted = str(excinfo.value) or "KeyboardInterrupt"

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.collection_errors.append(f"{report.nodeid}: {_short_message(report)}")


# ------------------------------------------------------------------ hooks

def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    if config.option.help:
        return
    settings = Settings.from_config(config)
    problem = probe_manifest_problem(settings.pod_manifest)
    if problem:
        raise pytest.UsageError(f"--pod-manifest {settings.pod_manifest}: {problem}")
    try:
        config.stash[SESSION] = PodshareSession(config, settings)
    except (OSError, ValueError) as exc:
        raise pytest.UsageError(f"--known-divergences: {exc}") from None
    config.pluginmanager.register(config.stash[SESSION], "podshare-session")
    if not config.option.collectonly and not getattr(config.option, "xmlpath", None):
        config.option.xmlpath = str(Path(settings.reports_dir) / "junit.xml")
    # SIGTERM (CI cancelling a job) gets the same clean teardown as Ctrl-C.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _session(config: pytest.Config) -> PodshareSession | None:
    return config.stash.get(SESSION, None)


def pytest_report_collectionfinish(config: pytest.Config, items: list[pytest.Item]) -> list[str]:
    ps = _session(config)
    if ps is None or config.option.collectonly or not any("kube" in getattr(i, "fixturenames", ()) for i in items):
        return []
    try:
        ps.kube
    except KubeError as exc:
        return [f"podshare: {exc}"]
    c = ps.cluster
    lines = [f"podshare {__version__}: context {c['context']}, server {c['server']}, "
             f"Kubernetes {c['server_version']}, run {ps.run_id}"]
    try:
        nodes = [ps.kube.node(ps.settings.node)] if ps.settings.node else ps.kube.nodes()
        lines += [f"podshare node {n.metadata.name}: {n.status.node_info.container_runtime_version}, "
                  f"{n.status.node_info.os_image}, kernel {n.status.node_info.kernel_version}" for n in nodes[:5]]
    except KubeError as exc:  # reading nodes is cluster-scoped and optional
        lines.append(f"podshare nodes: not readable ({exc}); the node is named after the pods start")
    return lines


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    report = yield
    if report.when == "call":
        _apply_known_divergence(item, report)
    item.stash.setdefault(REPORTS, []).append(report)  # setup, call, teardown: one check
    if call.excinfo is not None and isinstance(call.excinfo.value, AccessDenied):
        item.config.stash[SESSION_STOP] = str(call.excinfo.value)  # no later test gets further
    ev = item.stash.get(EVIDENCE, None)
    ps = _session(item.config)
    # The pods the test touched; when a fixture failed before any exec, every pod of the run.
    pods = (ev.pods if ev is not None and ev.pods else None) or (ps.pods if ps else [])
    if report.failed and pods and DIAGNOSTICS not in item.stash:
        dumps = []
        for pod in pods:
            try:
                dumps.append(pod.diagnostics())
            except Exception as exc:  # diagnostics must never hide the failure itself
                dumps.append({"pod": pod.name, "error": str(exc)})
        item.stash[DIAGNOSTICS] = dumps
        report.sections.append(("podshare diagnostics", json.dumps(dumps, indent=2, default=str)))
    if report.when == "teardown" and ev is not None:
        item.user_properties.append(("evidence", json.dumps(ev.as_json(), default=str)))
        if DIAGNOSTICS in item.stash:
            item.user_properties.append(("diagnostics", json.dumps(item.stash[DIAGNOSTICS], default=str)))
    return report


def _apply_known_divergence(item: pytest.Item, report: pytest.TestReport) -> None:
    """A claim the operator listed as a known divergence of its RuntimeClass: its
    failure is reported as that (an expected failure, with the reason and what was
    seen), and its passing fails the run (strict: the list is out of date)."""
    ps = _session(item.config)
    runtime_class = _runtime_class_of(item)
    if ps is None or not runtime_class or not ps.known_divergences:
        return
    listed = ps.known_divergences.match(_claim_id(item), runtime_class)
    if listed is None:
        return
    if report.failed:
        seen = _short_message(report)
        report.outcome, report.wasxfail = "skipped", f"known divergence on {runtime_class}: {listed}"
        item.stash[KNOWN] = ("known-divergence", f"{listed} (seen: {seen})")
    elif report.passed:
        message = (f"listed as a known divergence on {runtime_class} ({listed}), but the claim now holds: "
                   "update the known-divergences file")
        report.outcome, report.longrepr = "failed", message
        item.stash[KNOWN] = ("failed", message)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem) -> Iterator[None]:
    try:
        return (yield)
    finally:
        _record_outcome(item, item.stash.get(REPORTS, []))
        if SESSION_STOP in item.config.stash:
            item.session.shouldstop = f"podshare: {item.config.stash[SESSION_STOP]}"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    """A claim whose pod never became ready fails here, before its body runs, with
    the pod's reason; its status and events go into the diagnostics."""
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


def _runtime_class_of(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("runtime_class") if callspec else None


def _check_id(item: pytest.Item) -> str:
    """The claim's id as a checkout names it (suites/test_x.py::test_y[...]), also
    when the installed suites run (`podshare run`, the runner image), so known
    divergences and a history match across the two."""
    _, _, rest = item.nodeid.partition("::")
    return f"suites/{item.path.name}::{rest}" if item.path.parent.name == "suites" and rest else item.nodeid


def _claim_id(item: pytest.Item) -> str:
    """The claim without its RuntimeClass: one row of the claim x runtime matrix."""
    runtime_class = _runtime_class_of(item)
    check_id = _check_id(item)
    if not runtime_class or "[" not in check_id:
        return check_id
    base, ids = check_id[:-1].split("[", 1)
    parts = ids.split("-")
    if runtime_class in parts:
        del parts[len(parts) - 1 - parts[::-1].index(runtime_class)]
    return f"{base}[{'-'.join(parts)}]" if parts else base


def _claim_of(item: pytest.Item) -> str:
    doc = getattr(getattr(item, "function", None), "__doc__", None) or ""
    first = doc.strip().split("\n\n")[0]
    return " ".join(first.split()) or item.name


def _record_outcome(item: pytest.Item, reports: list[pytest.TestReport]) -> None:
    """One check per claim. A claim passes only on a passed call report: one the run
    stopped in the middle of (Ctrl-C, SIGTERM, a session stop) is `interrupted`."""
    ps = _session(item.config)
    if ps is None:
        return
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
            outcome = "interrupted"
            message = f"the run stopped before this claim finished ({ps.interrupted or ps.fatal or 'no result'})"
    ev = item.stash.get(EVIDENCE, None)
    runtime_class = _runtime_class_of(item)
    if KNOWN in item.stash:
        outcome, message = item.stash[KNOWN]
    ps.checks[item.nodeid] = Check(
        id=_check_id(item), claim=_claim_of(item), outcome=outcome,
        claim_id=_claim_id(item), runtime_class=runtime_class,
        duration_s=round(sum(r.duration for r in reports), 3),
        evidence=ev.as_json() if ev is not None else {}, message=message,
        figures=dict(ev.figures) if ev is not None else {},
        markers=sorted(m.name for m in item.iter_markers() if m.name in MARKERS),
        diagnostics=item.stash.get(DIAGNOSTICS, []))


def _short_message(report: pytest.TestReport | pytest.CollectReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return crash.message
    return str(report.longrepr).strip().splitlines()[-1] if report.longrepr else ""


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Every run rewrites every report, also when no claim ran or collection
    failed, so a report on disk is never an earlier run's."""
    ps = _session(session.config)
    if ps is None or session.config.option.collectonly:
        return
    if ps.collection_errors and not ps.fatal:
        ps.fatal = f"could not collect the claims: {'; '.join(ps.collection_errors)}"
    if ps.fatal:
        # "could not check" is exit code 2, also when -x stopped the session first
        session.exitstatus = pytest.ExitCode.INTERRUPTED
    elif ps.leftovers and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED  # leaving things behind fails the run
    run = {"id": ps.run_id, "started_at": ps.started_at, "started_epoch": round(ps.started, 3),
           "fatal": ps.fatal, "interrupted": ps.interrupted,
           "exit_status": int(session.exitstatus), "duration_s": round(time.time() - ps.started, 2),
           "podshare_version": __version__, "pytest_args": list(session.config.invocation_params.args),
           "namespace": ps.namespace, "leftovers": ps.leftovers, "checks_run": len(ps.checks),
           "api_warnings": ps._kube.warnings if isinstance(ps._kube, Kube) else []}
    report = RunReport(run=run, cluster=ps.cluster, checks=list(ps.checks.values()))
    if ps.settings.pushgateway:
        ps.pushed = _push_metrics(report, ps.settings.pushgateway)
        run["pushgateway"] = ps.pushed
    if ps.settings.history_dir and ps.checks:  # a run that checked nothing is no point in a trend
        History.record(ps.settings.history_dir, report.to_json())
        report.history = History.load(ps.settings.history_dir)
        ps.changes = report.history.changes()
    paths = report.write(Path(ps.settings.reports_dir))
    ps.report_paths = paths


def _push_metrics(report: RunReport, url: str) -> str:
    """Push the run's metrics, grouped by cluster context and node so each
    cluster's latest run replaces its previous one; returns what happened."""
    body = exposition(report.run, report.cluster, report.checks)
    try:
        return "pushed to " + push(url, body, {"context": str(report.cluster.get("context") or "none"),
                                               "node": str(report.cluster.get("node") or "none")})
    except OSError as exc:
        return f"NOT pushed: {exc}"


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    ps = _session(config)
    session = getattr(terminalreporter, "_session", None)
    if ps is not None and ps.fatal and session is not None and session.shouldfail:
        # -x / --maxfail ended the session first and said "stopping after 1 failures":
        # the one line with the cause, as without them
        terminalreporter.write_sep("!", f"Interrupted: podshare: {ps.fatal}", red=True)
    if ps is None or not getattr(ps, "report_paths", None):
        return
    terminalreporter.section("podshare")
    c = ps.cluster
    if c.get("node"):
        terminalreporter.write_line(f"node {c['node']}: {c.get('os_image', '?')}, kernel {c.get('kernel', '?')}, "
                                    f"runtime {c.get('container_runtime', '?')}")
    for p in ps.report_paths:
        terminalreporter.write_line(f"report: {p}")
    if ps.leftovers:
        terminalreporter.write_line(f"NOT CLEANED UP: {', '.join(ps.leftovers)}", red=True)
    if ps.pushed:
        terminalreporter.write_line(f"metrics {ps.pushed}", red=ps.pushed.startswith("NOT"))
    for key, verdict in ps.changes.items():
        terminalreporter.write_line(f"{verdict}: {key}", red=verdict == "newly failing", green=verdict == "recovered")
    if isinstance(ps._kube, Kube) and ps._kube.warnings:
        for warning in ps._kube.warnings:
            terminalreporter.write_line(f"API warning: {warning}", yellow=True)


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="session")
def podshare_session(pytestconfig: pytest.Config) -> PodshareSession:
    ps = _session(pytestconfig)
    assert ps is not None
    return ps


@pytest.fixture(scope="session")
def kube(podshare_session: PodshareSession) -> Kube:
    """The cluster connection; every test errors with the same one-line cause if it fails."""
    try:
        return podshare_session.kube
    except KubeError as exc:
        failure = str(exc)
    _fatal(podshare_session, failure)


@pytest.fixture(scope="session")
def run_namespace(kube: Kube, podshare_session: PodshareSession, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per run (restricted Pod Security), or --namespace as given."""
    ps = podshare_session
    given = ps.settings.namespace
    try:
        if given:
            if not kube.namespace_exists(given):
                raise KubeError(f"namespace {given!r} does not exist (--namespace uses an existing one)")
            name = given
        else:
            name = f"podshare-{ps.run_id}"
            level = ps.settings.pod_security
            psa = {f"pod-security.kubernetes.io/{mode}": level for mode in ("enforce", "warn", "audit")}
            kube.create_namespace(name, {**ps.labels(), **psa})
    except KubeError as exc:
        _fatal(ps, str(exc))
    ps.namespace = name
    yield name
    if _keep(ps, request.session):
        print(f"\npodshare: kept namespace {name} (--keep={ps.settings.keep})", file=sys.stderr)
        return
    if given:
        return  # pods podshare made there are deleted by their own fixtures
    ps.leftovers += kube.delete_namespace(name, timeout=max(60.0, ps.settings.pod_timeout))


def _keep(ps: PodshareSession, session: pytest.Session) -> bool:
    return ps.settings.keep == "always" or (ps.settings.keep == "on-failure" and session.testsfailed > 0)


class PodFactory:
    """Creates pods and their companions (ConfigMaps, Services) from manifests/
    in the run's namespace; deletes them, newest first, at the end of the run."""

    def __init__(self, kube: Kube, ps: PodshareSession, namespace: str, runtime_class: str | None = None) -> None:
        self.kube, self.ps, self.namespace, self.runtime_class = kube, ps, namespace, runtime_class
        # Pods of each RuntimeClass side by side in one namespace: the class is in the name.
        self.suffix = f"{runtime_class}-{ps.suffix}" if runtime_class else ps.suffix
        self.created = ps.pods
        self.others: list[tuple[str, str]] = []  # (kind, name) of non-pod objects

    def pod(self, manifest: str | dict, base_name: str, node: str | None = None,
            renamed: dict[str, str] | None = None) -> Pod:
        template = manifest if isinstance(manifest, dict) else load_manifest(manifest)
        body = render(template, name=f"{base_name}-{self.suffix}", settings=self.ps.settings,
                      run_id=self.ps.run_id, node=node or self.ps.settings.node, renamed=renamed,
                      runtime_class=self.runtime_class)
        pod = Pod(self.kube, self.namespace, body, self.ps.settings.pod_timeout)
        self.created.append(pod)
        return pod

    def _manifest_pods(self) -> tuple[list[dict], dict | None]:
        """--pod-manifest's probe pods, and its stranger pod (a container named
        stranger) if it brings one; otherwise the shipped stranger is used."""
        docs = [d for d in load_manifests(self.ps.settings.pod_manifest) if d.get("kind", "Pod") == "Pod"]
        strangers = [d for d in docs if any(c["name"] == "stranger" for c in d["spec"]["containers"])]
        return [d for d in docs if d not in strangers], (strangers[0] if strangers else None)

    def stranger(self, base_name: str, node: str) -> Pod:
        """The negative control, on the probe pod's node."""
        return self.pod(self._manifest_pods()[1] or "stranger-pod.yaml", base_name, node=node)

    def probe_set(self, base_name: str) -> ProbeSet:
        """The probe pod(s) of --pod-manifest: one pod normally, several in a variant."""
        docs = self._manifest_pods()[0]
        if len(docs) == 1:
            return ProbeSet([self.pod(docs[0], base_name)])
        return ProbeSet([self.pod(d, f"{base_name}-{d['metadata']['name']}") for d in docs])

    def apply(self, manifest: str) -> dict[str, Any]:
        """Create every object of a multi-document manifest, keyed "Kind/name" by
        the template's names; pods are created, not waited for (see start)."""
        docs = load_manifests(self._pattern_manifest(manifest))
        renamed = {d["metadata"]["name"]: f"{d['metadata']['name']}-{self.suffix}" for d in docs}
        made: dict[str, Any] = {}
        try:
            for doc in docs:
                kind, name = doc["kind"], doc["metadata"]["name"]
                if kind == "Pod":
                    made[f"Pod/{name}"] = pod = self.pod(doc, name, renamed=renamed)
                    try:
                        pod.create()
                    except AccessDenied:
                        raise
                    except KubeError as exc:  # refused (422): its claims fail with the reason
                        pod.start_failure = f"the API refused the pod: {exc}"
                    continue
                body = render(doc, name=renamed[name], settings=self.ps.settings, run_id=self.ps.run_id,
                              renamed=renamed)
                made[f"{kind}/{name}"] = self.kube.create(self.namespace, body)
                self.others.append((kind, renamed[name]))
        except HARNESS_ERRORS as exc:
            failure = str(exc)
        else:
            return made
        pytest.fail(failure, pytrace=False)

    def _pattern_manifest(self, manifest: str) -> str | Path:
        """patterns/NAME from --patterns-dir where it has that file, else the shipped one."""
        given = self.ps.settings.patterns_dir
        if given and manifest.startswith("patterns/") and (Path(given) / manifest[len("patterns/"):]).is_file():
            return Path(given).resolve() / manifest[len("patterns/"):]
        return manifest

    def start(self, *pods: Pod) -> None:
        """Wait until a pattern's or lifecycle claim's pods are ready. One that never
        gets there fails the claims that need it (see pytest_runtest_call) and the
        run goes on: where a pattern relies on a broken promise, that is the finding."""
        start_pods_for_claims(list(pods), HARNESS_ERRORS)
        ready = [p for p in pods if not p.start_failure]
        if ready:
            self.ps.learn_node(ready[0].node)

    def cleanup(self, keep: bool) -> None:
        if keep:
            return
        doomed = [("Pod", p.name) for p in reversed(self.created)] + list(reversed(self.others))
        deleted = []
        for kind, name in doomed:
            try:
                self.kube.delete(self.namespace, kind, name)
                deleted.append(name)
            except KubeError as exc:
                self.ps.leftovers.append(f"{kind.lower()}/{name}: {exc}")
        if self.ps.settings.namespace:  # a namespace of the user's: the run ends when its pods are gone
            for pod in self.created:
                if pod.name in deleted:
                    try:
                        self.kube.wait_pod_gone(self.namespace, pod.name, pod.uid, self.ps.settings.pod_timeout)
                    except HARNESS_ERRORS as exc:
                        self.ps.leftovers.append(f"pod/{pod.name}: {exc}")


@pytest.fixture(scope="session")
def runtime_class(request: pytest.FixtureRequest, kube: Kube, podshare_session: PodshareSession) -> str | None:
    """The RuntimeClass of this claim's pods (parametrized by --runtime-class), or
    None for the cluster's default."""
    name = getattr(request, "param", None)
    if name is None:
        return None
    try:
        found = kube.runtime_class(name)
    except AccessDenied:
        found = None  # reading RuntimeClasses is optional; pod creation will tell
    except KubeError as exc:
        if exc.status == 404:
            _fatal(podshare_session, f"RuntimeClass {name!r} does not exist (--runtime-class)")
        _fatal(podshare_session, str(exc))
    podshare_session.cluster.setdefault("runtime_classes", {})[name] = {
        "handler": found.handler if found else "unreadable"}
    return name


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every claim once per --runtime-class: a session-scoped parameter, so each
    class gets its own pods and the claims are grouped by class."""
    ps = _session(metafunc.config)
    if ps is not None and ps.settings.runtime_class and "runtime_class" in metafunc.fixturenames:
        metafunc.parametrize("runtime_class", list(ps.settings.runtime_class), indirect=True, scope="session",
                             ids=list(ps.settings.runtime_class))


@pytest.fixture(scope="session")
def pod_factory(kube: Kube, podshare_session: PodshareSession, run_namespace: str, runtime_class: str | None,
                request: pytest.FixtureRequest) -> Iterator[PodFactory]:
    factory = PodFactory(kube, podshare_session, run_namespace, runtime_class)
    yield factory
    factory.cleanup(keep=_keep(podshare_session, request.session))


def _fatal(ps: PodshareSession, reason: str) -> NoReturn:
    """A failure no claim can get past (no cluster, no namespace, pods that cannot
    start): fail this test with the one-line reason and stop the session."""
    ps.fatal = reason
    ps.config.stash[SESSION_STOP] = reason
    pytest.fail(reason, pytrace=False)


def _started(pods: list[Pod], ps: PodshareSession) -> None:
    try:
        start_pods(pods)
    except HARNESS_ERRORS as exc:
        failure = str(exc)
    else:
        ps.learn_node(pods[0].node)
        return
    _fatal(ps, failure)


def _check_node_exists(kube: Kube, node: str | None) -> None:
    """--node naming no node: say so, rather than the scheduler's "didn't satisfy
    plugin(s) [NodeAffinity]". Reading nodes is optional (cluster-scoped): without
    the right, the scheduler's message stands."""
    if not node:
        return
    try:
        kube.node(node)
    except AccessDenied:
        return
    except KubeError as exc:
        if exc.status == 404:
            raise KubeError(f"node {node!r} does not exist (--node names the node to run on)", 404) from None
        raise


@pytest.fixture(scope="session")
def probe_pods(pod_factory: PodFactory, podshare_session: PodshareSession) -> tuple[ProbeSet, Pod]:
    """The probe pod and, on the same node, the stranger pod (the negative control).
    The stranger is created as soon as the probe pod is scheduled, so both start together."""
    probes = pod_factory.probe_set("podshare-probe")
    try:
        _check_node_exists(pod_factory.kube, podshare_session.settings.node)
        for pod in probes.pods:
            pod.create()
        node = probes.main.wait_scheduled()
        stranger = pod_factory.stranger("podshare-stranger", node)
        stranger.create()
    except HARNESS_ERRORS as exc:
        failure = str(exc)
    else:
        _started([*probes.pods, stranger], podshare_session)
        return probes, stranger
    _fatal(podshare_session, failure)


@pytest.fixture(scope="session")
def probe_pod(probe_pods: tuple[ProbeSet, Pod]) -> ProbeSet:
    return probe_pods[0]


@pytest.fixture(scope="session")
def stranger_pod(probe_pods: tuple[ProbeSet, Pod]) -> Pod:
    return probe_pods[1]


@pytest.fixture
def alpha(probe_pod: ProbeSet) -> ProbeContainer:
    return probe_pod.container("alpha")


@pytest.fixture
def beta(probe_pod: ProbeSet) -> ProbeContainer:
    return probe_pod.container("beta")


@pytest.fixture
def stranger(stranger_pod: Pod) -> ProbeContainer:
    return stranger_pod.container("stranger")


@pytest.fixture
def lifecycle_pod(pod_factory: PodFactory, podshare_session: PodshareSession) -> ProbeSet:
    """Probe pod(s) of the test's own: lifecycle claims restart and recreate them."""
    probes = pod_factory.probe_set(f"podshare-lifecycle{len(pod_factory.created)}")
    pod_factory.start(*probes.pods)
    return probes


@pytest.fixture(autouse=True)
def _podshare_evidence(request: pytest.FixtureRequest) -> Iterator[None]:
    ev = evidence_mod.Evidence()
    request.node.stash[EVIDENCE] = ev
    evidence_mod.activate(ev)
    yield
    evidence_mod.activate(None)


@pytest.fixture
def evidence(request: pytest.FixtureRequest) -> evidence_mod.Evidence:
    """The test's evidence: facts it records appear in every report."""
    return request.node.stash[EVIDENCE]


@pytest.fixture
def ipc_key() -> int:
    """A System V key no other test uses."""
    return int.from_bytes(os.urandom(4), "big") & 0x3FFFFFFF | 0x10000


@pytest.fixture
def ipc_name() -> str:
    """A POSIX IPC / file / socket name no other test uses."""
    return "podshare-" + uuid.uuid4().hex[:10]


@pytest.fixture
def free_port() -> int:
    """A port above the agents' (7001-7003) for claims about the port space."""
    return 20000 + int.from_bytes(os.urandom(2), "big") % 20000
