"""The fixtures the suites use (registered by the plugin at configure time).

Session scope: the cluster, the run's namespace, one PodFactory per
RuntimeClass, the probe pods. Per test: the containers, the test's evidence,
fresh IPC keys, names and ports.
"""
from __future__ import annotations

import os
import sys
import uuid
from typing import Iterator

import pytest

from .disruption import Disrupted, Disruption
from .errors import HARNESS_ERRORS, PodNotReady
from .evidence import Evidence
from .factory import PodFactory
from .across_pods import PEER
from .pods import Pod, ProbeSet
from .records import volume_path
from .session import EVIDENCE, PodshareSession, session_of
from .verbs import ProbeContainer


@pytest.fixture(scope="session")
def podshare_session(pytestconfig: pytest.Config) -> PodshareSession:
    ps = session_of(pytestconfig)
    assert ps is not None
    return ps


@pytest.fixture(scope="session")
def kube(podshare_session: PodshareSession):
    """The cluster connection (for the harness's own tests); every test errors
    with the same one-line cause if it fails."""
    with podshare_session.harness_errors(fatal=True):
        return podshare_session.cluster.kube


@pytest.fixture(scope="session")
def run_namespace(kube, podshare_session: PodshareSession, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per run (restricted Pod Security), or --namespace as given."""
    ps = podshare_session
    with ps.harness_errors(fatal=True):
        name = ps.cluster.use_namespace(ps.settings.namespace, ps.settings.pod_security, ps.settings.run_role,
                                        ps.settings.unconfined)
    yield name
    if ps.keep(request.session):
        print(f"\npodshare: kept namespace {name} (--keep={ps.settings.keep})", file=sys.stderr)
        return
    if not ps.settings.namespace:  # in a namespace of the user's, pods are deleted by their factory
        ps.cluster.delete_namespace(timeout=max(60.0, ps.settings.pod_timeout))


@pytest.fixture(scope="session")
def runtime_class(request: pytest.FixtureRequest, kube, podshare_session: PodshareSession) -> str | None:
    """The RuntimeClass of this claim's pods (parametrized by --runtime-class), or
    None for the cluster's default."""
    name = getattr(request, "param", None)
    if name is not None:
        with podshare_session.harness_errors(fatal=True):
            podshare_session.cluster.runtime_class(name)
    return name


@pytest.fixture(scope="session")
def user_namespaces(request: pytest.FixtureRequest, podshare_session: PodshareSession) -> bool:
    """Whether this claim's pods run in user namespaces of their own (hostUsers:
    false): parametrized by --user-namespaces on or both, else False."""
    return bool(getattr(request, "param", podshare_session.settings.user_namespaces == "on"))


@pytest.fixture(scope="session")
def node(request: pytest.FixtureRequest, kube, podshare_session: PodshareSession, runtime_class: str | None) -> str | None:
    """The node of this claim's pods (parametrized by --all-nodes or --node-selector),
    --node, or None for the scheduler's choice. A node that cannot be checked
    (cordoned, NotReady, a taint neither --tolerate nor the RuntimeClass tolerates)
    ends each of its claims as could-not-check with that reason."""
    name = getattr(request, "param", None)
    if name is None:
        return podshare_session.settings.node
    cluster = podshare_session.cluster
    cluster.check_node_fit(name, podshare_session.settings.tolerate + cluster.runtime_class_tolerates(runtime_class))
    return name


@pytest.fixture(scope="session")
def pod_factory(podshare_session: PodshareSession, run_namespace: str, node: str | None,
                runtime_class: str | None, user_namespaces: bool, request: pytest.FixtureRequest) -> Iterator[PodFactory]:
    ps = podshare_session
    factory = PodFactory(ps.cluster, ps.settings, ps.suffix, runtime_class, node, user_namespaces)
    yield factory
    factory.cleanup(keep=ps.keep(request.session))


def _needed_by(items: list[pytest.Item], where: dict[str, object]) -> tuple[list[str], int, list[str], list[str]]:
    """What the collected claims of one set of pods (`where`: its dimensions' values,
    by name) need besides the probe pod: their patterns' manifests (the `manifest`
    marker), lifecycle pods, the PVC kinds of volume claims (pods of their own),
    and the PVC kinds of across-pod claims (podshare.across_pods)."""
    patterns: list[str] = []
    lifecycle = 0
    volumes: list[str] = []
    across: list[str] = []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if any(params.get(name, value) != value for name, value in where.items()):
            continue
        for marker in item.iter_markers("manifest"):
            if marker.args[0] not in patterns:
                patterns.append(marker.args[0])
        lifecycle += "lifecycle_pod" in getattr(item, "fixturenames", ())
        kind = params.get("volume")
        wanted = across if "across" in getattr(item, "fixturenames", ()) else volumes
        if kind and kind.startswith("pvc:") and kind not in wanted:
            wanted.append(kind)
    return patterns, lifecycle, volumes, across


@pytest.fixture(scope="session")
def probe_pods(pod_factory: PodFactory, podshare_session: PodshareSession, node: str | None,
               runtime_class: str | None, user_namespaces: bool, request: pytest.FixtureRequest) -> tuple[ProbeSet, Pod]:
    """The probe pod and, on the same node, the stranger pod (the negative control);
    every other pod the collected claims need starts with them."""
    patterns, lifecycle, volumes, across = _needed_by(request.session.items, {
        "node": node, "runtime_class": runtime_class, "user_namespaces": user_namespaces})
    # With several nodes, pods that cannot start end that node's claims, not the run.
    with podshare_session.harness_errors(fatal=True, node=node if podshare_session.nodes_dimension else None):
        try:
            return pod_factory.start_probes(patterns, lifecycle, volumes, across)
        except PodNotReady as exc:
            if not user_namespaces:
                raise
            # A node or runtime that cannot run pods in a user namespace: this node and
            # class could not be checked that way (one line, the kubelet's reason); the
            # run goes on with the others, also on the same node.
            said = str(exc)
            where = ", ".join(filter(None, [runtime_class and f"RuntimeClass {runtime_class}",
                                            node and f"node {node}" not in said and f"node {node}"]))
            cause = f"{where + ': ' if where else ''}{said}"
            uids = frozenset(p.uid for p in pod_factory.created if p.uid)
            raise Disrupted(podshare_session.cluster.disruptions.record(Disruption(cause, pods=uids))) from exc


@pytest.fixture(scope="session")
def probe_set(probe_pods: tuple[ProbeSet, Pod]) -> ProbeSet:
    """The probe containers' pod(s): one pod normally, several in a broken variant."""
    return probe_pods[0]


@pytest.fixture(scope="session")
def stranger_pod(probe_pods: tuple[ProbeSet, Pod]) -> Pod:
    return probe_pods[1]


@pytest.fixture
def volume(request: pytest.FixtureRequest, podshare_session: PodshareSession) -> str:
    """Where a volume claim's containers share their volume: the disk or Memory
    emptyDir, or a PVC of a StorageClass (--storage-class), by the claim's volume
    kind (parametrized by the plugin)."""
    return shared_volume(request.param, podshare_session)


def shared_volume(kind: str, podshare_session: PodshareSession) -> str:
    """Where the containers mount a volume kind; a StorageClass's facts learnt once."""
    if kind.startswith("pvc:"):
        podshare_session.cluster.learn_storage_class(kind.removeprefix("pvc:"))
    return volume_path(kind)


@pytest.fixture
def probes_here(request: pytest.FixtureRequest, probe_pods: tuple[ProbeSet, Pod], pod_factory: PodFactory,
                evidence: Evidence) -> tuple[ProbeSet, Pod]:
    """The probe pod(s) and stranger of this claim: the run's, or for a claim on a
    PVC the pair made with claims of that kind; with the volume's file system as
    the containers see it in the evidence (type and mount options)."""
    kind = getattr(getattr(request.node, "callspec", None), "params", {}).get("volume")
    if not kind:
        return probe_pods
    here = pod_factory.volume_probes(kind) if kind.startswith("pvc:") else probe_pods
    if not here[0].start_failure:
        try:
            seen = here[0].pod_of("alpha").filesystem("alpha", volume_path(kind))
        except HARNESS_ERRORS as exc:
            # evidence only: the claim's body meets what took the pod (a deletion is
            # recovered from there, on a fresh pod), a failed setup would not be
            evidence["shared_volume"] = {"kind": kind, "ok": False, "error": str(exc).strip().split("\n")[0]}
            return here
        evidence["shared_volume"] = {"kind": kind, **{k: seen.get(k) for k in ("ok", "fstype", "options", "device")}}
    return here


@pytest.fixture
def across(request: pytest.FixtureRequest, probe_pods, pod_factory: PodFactory, volume: str, placement: str,
           evidence: Evidence) -> dict[str, ProbeContainer]:
    """The pods of an across-pod claim (podshare.across_pods), by the claim's
    volume kind and `placement` (the suite's: one-node, two-nodes), once ready: "first" and "second" mount one
    claim, "own" a claim of its own; where each runs is in the evidence. A pod
    that did not start keeps why, and the claim says it before its body runs."""
    kind = request.node.callspec.params["volume"]
    pods = pod_factory.across_probes(kind)
    first, second = pods.pairs[placement]
    where = {name: {"pod": p.name, "node": p.node, "runtime_class": p.runtime_class, "ready": not p.start_failure}
             for name, p in (("first", first), ("second", second), ("own", pods.own))}
    evidence.update(placement=placement, pods=where)
    refused = next((p.start_failure for p in (first, second) if (p.start_failure or "").startswith("not applicable")),
                   None)
    if refused:  # the class does not make this placement's access mode: nothing to check, said once per claim
        pytest.skip(refused)
    made = {"first": first.container(PEER), "second": second.container(PEER), "own": pods.own.container(PEER)}
    if not (first.start_failure or second.start_failure):
        try:  # evidence only, as probes_here: the claim's body meets what took a pod
            seen = {who: made[who].pod.filesystem(PEER, volume) for who in ("first", "second")}
            evidence["shared_volume"] = {"kind": kind, **{k: seen["first"].get(k) for k in ("ok", "fstype", "options",
                                                                                            "device")},
                                         "second": {k: seen["second"].get(k) for k in ("fstype", "options")}}
        except HARNESS_ERRORS as exc:
            evidence["shared_volume"] = {"kind": kind, "ok": False, "error": str(exc).strip().split("\n")[0]}
    return made


@pytest.fixture
def alpha(probes_here: tuple[ProbeSet, Pod]) -> ProbeContainer:
    return probes_here[0].container("alpha")


@pytest.fixture
def beta(probes_here: tuple[ProbeSet, Pod]) -> ProbeContainer:
    return probes_here[0].container("beta")


@pytest.fixture
def stranger(probes_here: tuple[ProbeSet, Pod]) -> ProbeContainer:
    return probes_here[1].container("stranger")


@pytest.fixture
def lifecycle_pod(pod_factory: PodFactory, probe_pods, podshare_session: PodshareSession) -> ProbeSet:
    """Probe pod(s) of the test's own: lifecycle claims restart and recreate them
    (made with the probe pod at the start of the run)."""
    with podshare_session.harness_errors(fatal=False):
        return pod_factory.lifecycle_set()


@pytest.fixture(scope="module")
def pattern_pods(pod_factory: PodFactory, probe_pods, podshare_session: PodshareSession, request):
    """The objects of the module's `manifest` (made at the start of the run),
    keyed "Kind/name"; its pods are waited for here."""
    manifest = request.node.get_closest_marker("manifest").args[0]
    with podshare_session.harness_errors(fatal=False):
        made = pod_factory.apply(manifest)
    pod_factory.start(*(obj for key, obj in made.items() if key.startswith("Pod/")))
    return made


@pytest.fixture(scope="module")
def update_configmap(pod_factory: PodFactory, pattern_pods, podshare_session: PodshareSession, request):
    """f(name, data): replace data of a ConfigMap the module's `manifest` made (by
    its template name); returns the ConfigMap as the API has it after the update."""
    manifest = request.node.get_closest_marker("manifest").args[0]

    def update(name: str, data: dict[str, str]):
        with podshare_session.harness_errors(fatal=False):
            return pod_factory.update_configmap(manifest, name, data)
    return update


@pytest.fixture(scope="session")
def kubelet_sync_settings(podshare_session: PodshareSession):
    """f(node): the node kubelet's settings that bound a ConfigMap update's way
    into a volume, from its configz, or why they are unknown."""
    return podshare_session.cluster.kubelet_sync_settings


@pytest.fixture(autouse=True)
def _podshare_evidence(request: pytest.FixtureRequest, pytestconfig: pytest.Config) -> Iterator[None]:
    """Each test's own Evidence; the pod layer records every verb into it."""
    ev = Evidence()
    request.node.stash[EVIDENCE] = ev
    ps = session_of(pytestconfig)
    if ps is not None:
        ps.cluster.evidence.current = ev
    yield
    if ps is not None:
        ps.cluster.evidence.current = None


@pytest.fixture
def evidence(request: pytest.FixtureRequest) -> Evidence:
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

