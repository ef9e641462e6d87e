"""The run's cluster, as the pod layer sees it: the connection, the facts a
report names (context, server, node, runtime), the run's namespace, and every
pod and leftover of the run. The plugin talks to this, never to the kube layer.
"""
from __future__ import annotations

import re
from typing import Any

from . import MANAGED_BY, RUN_ID_LABEL, fence
from .confinement import Confinement
from .disruption import Disrupted, Disruption, Disruptions, diagnose
from .errors import AccessDenied, KubeError
from .evidence import EvidenceSlot
from .fence import FENCED
from .kube import Kube
from .node_facts import node_facts, node_runtimes, node_unfit, one_per_configuration, ready_condition
from .node_features import lacks
from .pods import Pod
from .records import ClusterFacts, NodeFacts
from .retry import GaveUp, NotYet, wait_until


DISRUPTED_WAIT = 5.0  # seconds to wait for the namespace to go when a node or the API is disrupted


# The kubelet settings that bound a ConfigMap update's way into a volume, and
# their defaults: the pod is re-synced every syncFrequency (plus up to half of it
# in jitter); with Watch the kubelet's copy of the ConfigMap is current at once.
KUBELET_SYNC_DEFAULTS = {"syncFrequency": "1m0s", "configMapAndSecretChangeDetectionStrategy": "Watch"}


def go_duration_s(text: str) -> float:
    """A Go duration as the kubelet prints it ("1m0s", "10s", "1h2m3.5s") in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(float(n) * units[u] for n, u in re.findall(r"([\d.]+)(ms|h|m|s)", text))


class Cluster:
    """Connects once; a failure is remembered, so every test reports the same cause quickly."""

    def __init__(self, kubeconfig: str | None, context: str | None, run_id: str, worker: str | None = None) -> None:
        self._config = (kubeconfig, context)
        self.run_id = run_id
        self.worker = worker  # a pytest-xdist worker's id: its namespace is its own
        self._kube: Kube | KubeError | None = None
        self.facts = ClusterFacts()  # the report's "cluster" section
        self.namespace: str | None = None
        self.pods: list[Pod] = []  # every pod this run created, for diagnostics
        self.leftovers: list[str] = []
        self._lacking: dict[str, list[str]] = {}  # feature -> nodes without it (nodes_lacking)
        self._read_nodes: dict[str, NodeFacts | None] = {}  # node -> facts read for one claim (facts_of)
        self.confinement: str | None = None  # whether the admission policy confines this run (run.confinement)
        self.warnings_seen: list[str] = []  # what the run could not check of itself, for the report
        # The running test's evidence: the pod layer records each verb into it.
        self.evidence = EvidenceSlot()
        self.disruptions = Disruptions()  # what moved under the run: its pods are not used again
        self._targets: list[str] | None = None  # the nodes this run checks, listed once

    @property
    def kube(self) -> Kube:
        if self._kube is None:
            try:
                self._kube = Kube(*self._config)
                self.facts.context, self.facts.server = self._kube.context, self._kube.server
                self.facts.server_version = self._kube.server_version()
            except KubeError as exc:
                self._kube = exc
        if isinstance(self._kube, KubeError):
            raise self._kube
        return self._kube

    def connect(self) -> None:
        """Raise the connection's KubeError, if it has one."""
        self.kube  # noqa: B018 (connects)

    @property
    def warnings(self) -> list[str]:
        """Admission warnings the API sent (e.g. Pod Security "would violate")."""
        return (self._kube.warnings if isinstance(self._kube, Kube) else []) + self.warnings_seen

    def labels(self) -> dict[str, str]:
        return {**MANAGED_BY, RUN_ID_LABEL: self.run_id}

    # ------------------------------------------------------------ nodes
    def node_lines(self, node: str | None) -> list[str]:
        """One line per node (the given one, or the first five) for the session header."""
        nodes = [self.kube.node(node)] if node else self.kube.nodes()
        return [f"podshare node {n.metadata.name}: {n.status.node_info.container_runtime_version}, "
                f"{n.status.node_info.os_image}, kernel {n.status.node_info.kernel_version}" for n in nodes[:5]]

    def target_nodes(self, selector: str | None, one_per_pool: bool = False) -> list[str]:
        """The nodes a run checks (--all-nodes: every node; --node-selector: those
        its labels select; --one-per-pool: one of each configuration among them),
        by name; their facts go into the report now, also for the nodes that turn
        out not to be checkable, and for those a checked node stands for. Listed
        once per process: the worker count, the parameters and the scheduler's
        groups all come from this one answer."""
        if self._targets is None:
            facts = {n.metadata.name: node_facts(n) for n in self.kube.nodes(selector)}
            chosen = one_per_configuration(facts) if one_per_pool else {n: [] for n in sorted(facts)}
            for pick, others in chosen.items():
                facts[pick].stands_for = others
                for other in others:
                    facts[other].represented_by = pick
            self.facts.nodes.update(facts)
            self._targets = list(chosen)
        return self._targets

    def check_node_fit(self, name: str, tolerated: tuple[str, ...]) -> None:
        """Raise Disrupted when a node cannot be checked now: cordoned, not Ready,
        or tainted in a way the pods do not tolerate. Remembered, so each of its
        claims ends at once with the same sentence."""
        node = self.kube.node(name)
        known = self.facts.nodes.get(name)  # what --one-per-pool said of it stays
        fresh = node_facts(node)
        if known:
            fresh.stands_for, fresh.represented_by = known.stands_for, known.represented_by
        self.facts.nodes[name] = fresh
        unfit = node_unfit(node, tolerated)
        if unfit:
            self.disruptions.check(None, name)  # already known: the same one
            # A taint keeps out only pods that do not tolerate it (another RuntimeClass's
            # may): not the whole node's disruption, as cordoned or NotReady is.
            only_tainted = node_unfit(node, ("*",)) is None
            ready = getattr(ready_condition(node), "status", None) == "True"
            raise Disrupted(Disruption(unfit) if only_tainted else self.disruptions.record(
                Disruption(unfit, node=name, node_ready=ready)))

    def learn_node(self, node: str | None) -> None:
        """Node facts for the report; reading nodes is optional (cluster-scoped)."""
        if not node or self.facts.node == node:
            return
        self.facts.node = node
        try:
            found = self.kube.node(node)
            info = found.status.node_info
            self.facts.runtimes = node_runtimes(found)
            self.facts.os_image, self.facts.kernel = info.os_image, info.kernel_version
            self.facts.container_runtime, self.facts.kubelet = info.container_runtime_version, info.kubelet_version
        except KubeError as exc:
            self.facts.node_info = f"unavailable: {exc}"

    def kubelet_sync_settings(self, node: str) -> dict[str, Any]:
        """What bounds how late a ConfigMap or Secret update reaches a pod's volume
        on this node, from the kubelet's own configz (defaults where it leaves them
        out). Reading it is optional (nodes/proxy, which the shipped roles do not
        grant): without it, each setting is unknown and the reason is said."""
        if not node:  # a pod not (or no longer) placed, as when its node's kubelet died: no kubelet to ask
            return {"source": "unknown: the pod is on no node"}
        try:
            config = self.kube.kubelet_config(node)
        except KubeError as exc:
            return {"source": f"unknown: {exc}"}
        settings = {name: config.get(name, default) for name, default in KUBELET_SYNC_DEFAULTS.items()}
        return {"source": f"configz of node {node}", **settings,
                "sync_frequency_s": go_duration_s(settings["syncFrequency"])}

    def check_node_exists(self, node: str | None) -> None:
        """--node naming no node: say so, rather than the scheduler's "didn't satisfy
        plugin(s) [NodeAffinity]". Reading nodes is optional (cluster-scoped): without
        the right, the scheduler's message stands."""
        if not node:
            return
        try:
            self.kube.node(node)
        except AccessDenied:
            return
        except KubeError as exc:
            if exc.status == 404:
                raise KubeError(f"node {node!r} does not exist (--node names the node to run on)", 404) from None
            raise

    def runtime_class(self, name: str) -> None:
        """Check that a RuntimeClass exists and note its handler; reading them is
        optional (pod creation will tell)."""
        try:
            handler = self.kube.runtime_class(name).handler
        except AccessDenied:
            handler = "unreadable"
        except KubeError as exc:
            if exc.status == 404:
                raise KubeError(f"RuntimeClass {name!r} does not exist (--runtime-class)", 404) from None
            raise
        self.facts.runtime_classes[name] = handler

    def nodes_lacking(self, feature: str) -> list[str]:
        """Every node whose facts show it cannot have `feature` (a pod the scheduler
        places is kept off them); none where nodes cannot be listed (the pods tell)."""
        if feature not in self._lacking:
            try:
                self._lacking[feature] = [n.metadata.name for n in self.kube.nodes()
                                          if lacks(feature, n.metadata.name, node_facts(n))]
            except KubeError:
                self._lacking[feature] = []
        return self._lacking[feature]

    def facts_of(self, node: str) -> NodeFacts | None:
        """A node's facts: those the run gathered, else read once; None where the
        identity may not read nodes."""
        if node not in self.facts.nodes and node not in self._read_nodes:
            try:
                self._read_nodes[node] = node_facts(self.kube.node(node))
            except KubeError:
                self._read_nodes[node] = None
        return self.facts.nodes.get(node) or self._read_nodes.get(node)

    def node_lacks(self, feature: str, node: str) -> str | None:
        """Why a node cannot have a feature some claims need (podshare.node_features),
        from its facts; None when it has it or they cannot be read (the pods tell)."""
        facts = self.facts_of(node)
        return lacks(feature, node, facts) if facts else None

    def runtime_class_excludes(self, name: str, node: str) -> str | None:
        """Why a RuntimeClass's scheduling.nodeSelector (what a managed sandboxed
        pool's class sets) keeps its pods off a node, or None when it admits the
        node. Reading RuntimeClasses and nodes is optional: unreadable, the pods tell."""
        try:
            scheduling = self.kube.runtime_class(name).scheduling
            selector = (scheduling.node_selector if scheduling else None) or {}
            if not selector:
                return None
        except KubeError:
            return None
        known = self.facts_of(node)
        if known is None:
            return None
        labels = known.all_labels
        missing = {k: v for k, v in selector.items() if labels.get(k) != v}
        if not missing:
            return None
        wanted = ", ".join(f"{k}={v}" for k, v in selector.items())
        return (f"RuntimeClass {name} runs only on nodes labelled {wanted} (its scheduling.nodeSelector); "
                f"node {node} is not")

    def runtime_class_tolerates(self, name: str | None) -> tuple[str, ...]:
        """The taint keys a RuntimeClass's scheduling.tolerations add to its pods
        (a managed sandboxed pool's class tolerates its pool's taint; "*" for a
        toleration of every taint). Unreadable: none."""
        if not name:
            return ()
        try:
            scheduling = self.kube.runtime_class(name).scheduling
        except KubeError:
            return ()
        return tuple(t.key or "*" for t in (scheduling.tolerations if scheduling else None) or [])

    def learn_runtime_class(self, name: str | None) -> None:
        """A RuntimeClass the probe pods run under as the API has them (from
        --runtime-class or the manifest's own runtimeClassName), with its handler,
        for the report's header."""
        if not name:
            return
        if name not in self.facts.runtime_classes:
            try:
                self.runtime_class(name)
            except KubeError as exc:
                self.facts.runtime_classes[name] = f"unreadable: {exc}"

    def learn_storage_class(self, name: str) -> None:
        """A StorageClass volume claims run on, for the reports: its provisioner and
        parameters ("default": whichever the cluster marks default). Reading
        StorageClasses is optional (cluster-scoped): unreadable, the claims still run."""
        if name in self.facts.storage_classes:
            return
        try:
            found = [c for c in self.kube.storage_classes()
                     if (c.metadata.name == name if name != "default" else
                         (c.metadata.annotations or {}).get("storageclass.kubernetes.io/is-default-class") == "true")]
        except KubeError as exc:
            self.facts.storage_classes[name] = {"unreadable": str(exc)}
            return
        if not found:
            self.facts.storage_classes[name] = {"missing": f"no StorageClass {'is the default' if name == 'default' else 'is named ' + name}"}
            return
        c = found[0]
        self.facts.storage_classes[name] = {
            "name": c.metadata.name, "provisioner": c.provisioner, "parameters": c.parameters or {},
            "reclaim_policy": c.reclaim_policy, "volume_binding_mode": c.volume_binding_mode,
            "default": (c.metadata.annotations or {}).get("storageclass.kubernetes.io/is-default-class") == "true"}

    # ------------------------------------------------------------ the run's namespace
    def use_namespace(self, given: str | None, pod_security: str, run_role: str, unconfined: bool = False) -> str:
        """--namespace as given (it must exist), or a fresh one for this run with
        the Pod Security level enforced, where the run then grants itself `run_role`
        and puts up the fence and quota (podshare.fence). Either way, first: is the
        identity confined (podshare.confinement)? If not, this stops the run, unless
        `unconfined`; the report says which."""
        confinement = Confinement(self.kube, unconfined)
        if given:
            if not self.kube.namespace_exists(given):
                raise KubeError(f"namespace {given!r} does not exist (--namespace uses an existing one)")
            confinement.in_namespace(given)
            self.namespace = given
            self.confinement = confinement.verdict
            return given
        confinement.before_namespace()
        name = f"podshare-{self.run_id}" + (f"-{self.worker}" if self.worker else "")
        self.kube.create_namespace(name, {**self.labels(), **FENCED, **fence.pod_security(pod_security)})
        self.namespace = name
        try:
            # The ClusterRole podshare grants nothing inside any namespace (docs/security.md):
            # the run binds the run role to itself here. An identity that
            # may already work here (an administrator) binds nothing.
            if not self.kube.can_i("create", "pods", name):
                self.kube.bind_self(name, run_role, self.labels())
            fence.install(self.kube, name)
            confinement.in_namespace(name)
        except (KubeError, GaveUp):
            self.kube.delete_namespace(name, timeout=60)  # no run follows: nothing may stay behind
            self.namespace = None
            raise
        self.confinement = confinement.verdict
        return name

    def delete_namespace(self, timeout: float) -> None:
        """Delete the run's own namespace and wait until it is gone; what stayed is a leftover.
        With a node or the API known disrupted, pods there cannot be confirmed gone:
        the wait is short and the leftovers say why."""
        if not self.namespace:
            return
        disrupted = [d for d in self.disruptions.known if d.hides_cleanup]
        left = self.kube.delete_namespace(self.namespace, timeout=DISRUPTED_WAIT if disrupted else timeout)
        self.leftovers += [f"{what} (deleted, not seen gone: {disrupted[0].cause})" if disrupted else what
                           for what in left]
        if self.facts.storage_classes and not disrupted:
            self.leftovers += self._volumes_left(timeout)

    def _volumes_left(self, timeout: float) -> list[str]:
        """The PersistentVolumes of the run's claims, which their StorageClass's
        provisioner deletes after the claims go (reclaimPolicy Delete): each still
        there after `timeout` is a leftover. Listing them is cluster-scoped: a run
        that may not, says so instead."""
        namespace = self.namespace

        def gone():
            left = self.kube.volumes_claimed_in(namespace)
            if left:
                raise NotYet(f"{len(left)} PersistentVolumes of {namespace} remain: {', '.join(left)}")
        try:
            wait_until(gone, timeout=timeout, what=f"the PersistentVolumes of {namespace} to be deleted")
        except AccessDenied:
            self.warnings_seen.append("the run's PersistentVolumes could not be listed (no right to): not checked gone")
        except (GaveUp, KubeError) as exc:
            return [f"persistentvolumes of {namespace} (their provisioner did not delete them: {exc})"]
        return []

    # ------------------------------------------------------------ disruptions
    def diagnose(self, pods: list[Pod], pod_level: bool = True) -> Disruption | None:
        """Whether the cluster moved under these pods (see podshare.disruption); a
        disruption found is remembered, so later claims needing them end at once."""
        found = diagnose(self.kube, pods, pod_level)
        return self.disruptions.record(found) if found else None
