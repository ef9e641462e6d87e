"""The run's cluster, as the pod layer sees it: the connection, the facts a
report names (context, server, node, runtime), the run's namespace, and every
pod and leftover of the run. The plugin talks to this, never to the kube layer.
"""
from __future__ import annotations

from typing import Any

from . import MANAGED_BY, RUN_ID_LABEL
from .disruption import Disruption, Disruptions, diagnose
from .errors import AccessDenied, KubeError
from .evidence import Evidence
from .kube import Kube
from .pods import Pod


DISRUPTED_WAIT = 5.0  # seconds to wait for the namespace to go when a node or the API is disrupted


class Cluster:
    """Connects once; a failure is remembered, so every test reports the same cause quickly."""

    def __init__(self, kubeconfig: str | None, context: str | None, run_id: str) -> None:
        self._config = (kubeconfig, context)
        self.run_id = run_id
        self._kube: Kube | KubeError | None = None
        self.facts: dict[str, Any] = {}  # the report's "cluster" section
        self.namespace: str | None = None
        self.pods: list[Pod] = []  # every pod this run created, for diagnostics
        self.leftovers: list[str] = []
        # The running test's evidence: the pod layer records each verb into it.
        self.evidence: Evidence | None = None
        self.disruptions = Disruptions()  # what moved under the run: its pods are not used again

    @property
    def kube(self) -> Kube:
        if self._kube is None:
            try:
                self._kube = Kube(*self._config)
                self.facts.update(context=self._kube.context, server=self._kube.server,
                                  server_version=self._kube.server_version())
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
        return self._kube.warnings if isinstance(self._kube, Kube) else []

    def labels(self) -> dict[str, str]:
        return {**MANAGED_BY, RUN_ID_LABEL: self.run_id}

    # ------------------------------------------------------------ nodes
    def node_lines(self, node: str | None) -> list[str]:
        """One line per node (the given one, or the first five) for the session header."""
        nodes = [self.kube.node(node)] if node else self.kube.nodes()
        return [f"podshare node {n.metadata.name}: {n.status.node_info.container_runtime_version}, "
                f"{n.status.node_info.os_image}, kernel {n.status.node_info.kernel_version}" for n in nodes[:5]]

    def learn_node(self, node: str | None) -> None:
        """Node facts for the report; reading nodes is optional (cluster-scoped)."""
        if not node or self.facts.get("node") == node:
            return
        self.facts["node"] = node
        try:
            info = self.kube.node(node).status.node_info
            self.facts.update(os_image=info.os_image, kernel=info.kernel_version,
                              container_runtime=info.container_runtime_version, kubelet=info.kubelet_version)
        except KubeError as exc:
            self.facts["node_info"] = f"unavailable: {exc}"

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
        self.facts.setdefault("runtime_classes", {})[name] = {"handler": handler}

    def learn_runtime_class(self, name: str | None) -> None:
        """A RuntimeClass the probe pods run under as the API has them (from
        --runtime-class or the manifest's own runtimeClassName), with its handler,
        for the report's header."""
        if not name:
            return
        if name not in self.facts.get("runtime_classes", {}):
            try:
                self.runtime_class(name)
            except KubeError as exc:
                self.facts.setdefault("runtime_classes", {})[name] = {"handler": f"unreadable: {exc}"}
        self.facts["runtime_class"] = ", ".join(f"{n} (handler {c['handler']})"
                                                for n, c in self.facts["runtime_classes"].items())

    # ------------------------------------------------------------ the run's namespace
    def use_namespace(self, given: str | None, pod_security: str) -> str:
        """--namespace as given (it must exist), or a fresh one for this run with
        the Pod Security level enforced."""
        if given:
            if not self.kube.namespace_exists(given):
                raise KubeError(f"namespace {given!r} does not exist (--namespace uses an existing one)")
            self.namespace = given
            return given
        name = f"podshare-{self.run_id}"
        psa = {f"pod-security.kubernetes.io/{mode}": pod_security for mode in ("enforce", "warn", "audit")}
        self.kube.create_namespace(name, {**self.labels(), **psa})
        self.namespace = name
        return name

    def delete_namespace(self, timeout: float) -> None:
        """Delete the run's own namespace and wait until it is gone; what stayed is a leftover.
        With a node or the API known disrupted, pods there cannot be confirmed gone:
        the wait is short and the leftovers say why."""
        if not self.namespace:
            return
        disrupted = [d for d in self.disruptions.known if d.node or d.everywhere]
        left = self.kube.delete_namespace(self.namespace, timeout=DISRUPTED_WAIT if disrupted else timeout)
        self.leftovers += [f"{what} (deleted, not seen gone: {disrupted[0].cause})" if disrupted else what
                           for what in left]

    # ------------------------------------------------------------ disruptions
    def diagnose(self, pods: list[Pod], pod_level: bool = True) -> Disruption | None:
        """Whether the cluster moved under these pods (see podshare.disruption); a
        disruption found is remembered, so later claims needing them end at once."""
        found = diagnose(self.kube, pods, pod_level)
        return self.disruptions.record(found) if found else None
