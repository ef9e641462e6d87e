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
from .pods import Pod, ProbeContainer, ProbeSet, load_manifest, load_manifests, probe_manifest_problem, render, start_pods
from .report import Check, RunReport
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
}
HARNESS_ERRORS = (KubeError, GaveUp)

SESSION = pytest.StashKey["PodshareSession"]()
EVIDENCE = pytest.StashKey[evidence_mod.Evidence]()
SESSION_STOP = pytest.StashKey[str]()
DIAGNOSTICS = pytest.StashKey[list]()
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
    config.stash[SESSION] = PodshareSession(config, settings)
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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem) -> Iterator[None]:
    try:
        return (yield)
    finally:
        _record_outcome(item, item.stash.get(REPORTS, []))
        if SESSION_STOP in item.config.stash:
            item.session.shouldstop = f"podshare: {item.config.stash[SESSION_STOP]}"


def _claim_of(item: pytest.Item) -> str:
    doc = getattr(getattr(item, "function", None), "__doc__", None) or ""
    first = doc.strip().split("\n\n")[0]
    return " ".join(first.split()) or item.name


def _record_outcome(item: pytest.Item, reports: list[pytest.TestReport]) -> None:
    ps = _session(item.config)
    if ps is None or not reports:
        return
    outcome, message = "passed", ""
    for r in reports:
        if r.failed:
            outcome = "failed" if r.when == "call" else "error"
            message = _short_message(r)
            break
        if r.skipped:
            outcome = "skipped"
            message = r.longrepr[2] if isinstance(r.longrepr, tuple) else str(r.longrepr)
    ev = item.stash.get(EVIDENCE, None)
    ps.checks[item.nodeid] = Check(
        id=item.nodeid, claim=_claim_of(item), outcome=outcome,
        duration_s=round(sum(r.duration for r in reports), 3),
        evidence=ev.as_json() if ev is not None else {}, message=message,
        markers=sorted(m.name for m in item.iter_markers() if m.name in MARKERS),
        diagnostics=item.stash.get(DIAGNOSTICS, []))


def _short_message(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return crash.message
    return str(report.longrepr).strip().splitlines()[-1] if report.longrepr else ""


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    ps = _session(session.config)
    if ps is None or session.config.option.collectonly or not ps.checks:
        return
    run = {"id": ps.run_id, "started_at": ps.started_at, "fatal": ps.fatal, "duration_s": round(time.time() - ps.started, 2),
           "podshare_version": __version__, "pytest_args": list(session.config.invocation_params.args),
           "namespace": ps.namespace, "leftovers": ps.leftovers,
           "api_warnings": ps._kube.warnings if isinstance(ps._kube, Kube) else []}
    report = RunReport(run=run, cluster=ps.cluster, checks=list(ps.checks.values()))
    paths = report.write(Path(ps.settings.reports_dir))
    ps.report_paths = paths


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    ps = _session(config)
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
    ps.leftovers = kube.delete_namespace(name, timeout=max(60.0, ps.settings.pod_timeout))


def _keep(ps: PodshareSession, session: pytest.Session) -> bool:
    return ps.settings.keep == "always" or (ps.settings.keep == "on-failure" and session.testsfailed > 0)


class PodFactory:
    """Creates pods and their companions (ConfigMaps, Services) from manifests/
    in the run's namespace; deletes them, newest first, at the end of the run."""

    def __init__(self, kube: Kube, ps: PodshareSession, namespace: str) -> None:
        self.kube, self.ps, self.namespace = kube, ps, namespace
        self.created = ps.pods
        self.others: list[tuple[str, str]] = []  # (kind, name) of non-pod objects

    def pod(self, manifest: str | dict, base_name: str, node: str | None = None,
            renamed: dict[str, str] | None = None) -> Pod:
        template = manifest if isinstance(manifest, dict) else load_manifest(manifest)
        body = render(template, name=f"{base_name}-{self.ps.suffix}", settings=self.ps.settings,
                      run_id=self.ps.run_id, node=node or self.ps.settings.node, renamed=renamed)
        pod = Pod(self.kube, self.namespace, body, self.ps.settings.pod_timeout)
        self.created.append(pod)
        return pod

    def probe_set(self, base_name: str) -> ProbeSet:
        """The probe pod(s) of --pod-manifest: one pod normally, several in a variant."""
        docs = [d for d in load_manifests(self.ps.settings.pod_manifest) if d.get("kind", "Pod") == "Pod"]
        if len(docs) == 1:
            return ProbeSet([self.pod(docs[0], base_name)])
        return ProbeSet([self.pod(d, f"{base_name}-{d['metadata']['name']}") for d in docs])

    def apply(self, manifest: str) -> dict[str, Any]:
        """Create every object of a multi-document manifest, keyed "Kind/name" by
        the template's names; pods are created, not waited for (see start)."""
        docs = load_manifests(manifest)
        renamed = {d["metadata"]["name"]: f"{d['metadata']['name']}-{self.ps.suffix}" for d in docs}
        made: dict[str, Any] = {}
        try:
            for doc in docs:
                kind, name = doc["kind"], doc["metadata"]["name"]
                if kind == "Pod":
                    made[f"Pod/{name}"] = self.pod(doc, name, renamed=renamed).create()
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

    def start(self, *pods: Pod) -> None:
        """Wait until the pods are ready; a pod that cannot start fails the test in one line."""
        _started(list(pods), self.ps)

    def cleanup(self, keep: bool) -> None:
        if keep:
            return
        doomed = [("Pod", p.name) for p in reversed(self.created)] + list(reversed(self.others))
        for kind, name in doomed:
            try:
                self.kube.delete(self.namespace, kind, name)
            except KubeError as exc:
                self.ps.leftovers.append(f"{kind.lower()}/{name}: {exc}")


@pytest.fixture(scope="session")
def pod_factory(kube: Kube, podshare_session: PodshareSession, run_namespace: str,
                request: pytest.FixtureRequest) -> Iterator[PodFactory]:
    factory = PodFactory(kube, podshare_session, run_namespace)
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


@pytest.fixture(scope="session")
def probe_pods(pod_factory: PodFactory, podshare_session: PodshareSession) -> tuple[ProbeSet, Pod]:
    """The probe pod and, on the same node, the stranger pod (the negative control).
    The stranger is created as soon as the probe pod is scheduled, so both start together."""
    probes = pod_factory.probe_set("podshare-probe")
    try:
        for pod in probes.pods:
            pod.create()
        node = probes.main.wait_scheduled()
        stranger = pod_factory.pod("stranger-pod.yaml", "podshare-stranger", node=node)
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
    _started(probes.pods, podshare_session)
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
