"""Making the run's pods: names, node pinning, companion objects, cleanup.

Every pod the collected claims need is created at the start, in one go (the
probe pod and its stranger, the lifecycle pods, the patterns' pods), so their
start-ups overlap; a claim's fixture then only waits for what is already
starting. Pods of each RuntimeClass live side by side in the run's namespace.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from . import across_pods, delivery
from .across_pods import AcrossPods
from .cluster import Cluster
from .errors import HARNESS_ERRORS, AccessDenied, KubeError
from .manifests import keep_off_nodes, load_manifest, load_manifests, pin_to_node, render, with_volume_claim
from .node_features import needed_by
from .pods import Pod, ProbeSet, start_pods, start_pods_for_claims
from .records import Dimensions, volume_id

VOLUME_KINDS = "podshare.io/volume-kinds"  # a pattern pod's annotation: "run" for the run's PVCs too


class PodFactory:
    """Creates pods and their companions (ConfigMaps, Services) from manifests/
    in the run's namespace; deletes them, newest first, at the end of the run."""

    def __init__(self, cluster: Cluster, settings: Any, suffix: str, runtime_class: str | None = None,
                 node: str | None = None, user_namespaces: bool = False) -> None:
        self.cluster, self.settings, self.runtime_class = cluster, settings, runtime_class
        self.user_namespaces = user_namespaces  # every pod of this factory gets hostUsers: false
        self.node = node or settings.node  # every pod of this factory there (through the scheduler)
        self.kube, self.namespace = cluster.kube, cluster.namespace
        # Pods of each node, RuntimeClass and user-namespace setting side by side in one
        # namespace: all are in the name (the node as a short tag: node names may be long).
        tag = Dimensions(node=node, runtime_class=runtime_class, user_namespaces=user_namespaces).pod_tag()
        self.suffix = "-".join([tag, suffix] if tag else [suffix])
        self.created: list[Pod] = []
        self.others: list[tuple[str, str]] = []  # (kind, name) of non-pod objects
        self.applied: dict[str, dict[str, Any]] = {}  # manifest -> what apply made
        self.apply_failures: dict[str, BaseException] = {}  # manifest -> why it could not be made
        self.spare_lifecycle: list[ProbeSet] = []  # made at the start, for the lifecycle claims
        self._lifecycle_count = 0
        self.probes: tuple[ProbeSet, Pod] | None = None
        # per PVC kind: a probe pod and a stranger, each with its own claim of that kind
        self.volume_sets: dict[str, tuple[ProbeSet, Pod]] = {}
        self.across_sets: dict[str, AcrossPods] = {}  # per PVC kind: pods that mount one claim together
        self.probe_bundle: str | None = None  # the ConfigMap with the delivered probes, once made

    def _probe_bundle(self) -> str | None:
        """With --probes-from configmap (the default public Python image): the
        ConfigMap with the probes and wheels, made with this factory's first pod
        and deleted after its last; None when the probe image holds the probes."""
        if self.settings.probes_from != "configmap":
            return None
        if self.probe_bundle is None:
            name = f"podshare-probes-{self.suffix}"
            self.kube.create(self.namespace, render(delivery.configmap(), name=name, settings=self.settings,
                                                    run_id=self.cluster.run_id))
            self.others.append(("ConfigMap", name))
            self.probe_bundle = name
        return self.probe_bundle

    # ------------------------------------------------------------ making pods
    def pod(self, manifest: str | dict, base_name: str, node: str | None = None,
            renamed: dict[str, str] | None = None) -> Pod:
        template = manifest if isinstance(manifest, dict) else load_manifest(manifest)
        body = render(template, name=f"{base_name}-{self.suffix}", settings=self.settings,
                      run_id=self.cluster.run_id, node=node or self.node, renamed=renamed,
                      runtime_class=self.runtime_class, probe_bundle=self._probe_bundle(),
                      user_namespaces=self.user_namespaces)
        pod = Pod(self.kube, self.namespace, body, self.settings.pod_timeout, evidence=self.cluster.evidence,
                  disruptions=self.cluster.disruptions)
        self.created.append(pod)
        self.cluster.pods.append(pod)
        return pod

    def _manifest_pods(self) -> tuple[list[dict], dict | None]:
        """--pod-manifest's probe pods, and its stranger pod (a container named
        stranger) if it brings one; otherwise the shipped stranger is used."""
        docs = [d for d in load_manifests(self.settings.pod_manifest) if d.get("kind", "Pod") == "Pod"]
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

    # ------------------------------------------------------------ the start of the run
    def start_probes(self, patterns: list[str] = (), lifecycle: int = 0,
                     volumes: list[str] = (), across: list[str] = ()) -> tuple[ProbeSet, Pod]:
        """Create the probe pod(s), then every other pod the collected claims need
        (their patterns' manifests, `lifecycle` spare probe sets), then the stranger
        on the probe pod's node; wait for the probe pods and the stranger, which
        every claim needs (a KubeError here ends the run). The others are waited
        for by their claims' fixtures, their start-up overlapping meanwhile."""
        if self.probes is None:
            self.cluster.check_node_exists(self.node)
            probes = self.probe_set("podshare-probe")
            for pod in probes.pods:
                pod.create()
            # The others once the probe pod has its node: a variant on the host's
            # network must not lose its ports to a lifecycle pod.
            node = probes.main.wait_scheduled()
            stranger = self.stranger("podshare-stranger", node)
            stranger.create()
            for manifest in patterns:
                try:
                    self.apply(manifest)
                except HARNESS_ERRORS as exc:  # the pattern's claims fail with it, not the run
                    self.apply_failures[manifest] = exc
            for _ in range(lifecycle):
                self.spare_lifecycle.append(self._new_lifecycle_set(create=True))
            for kind in volumes:  # claims on a PVC: their own pods, started with the others
                self.volume_sets[kind] = self._volume_set(kind, node)
            for kind in across:  # across-pod claims: pods that mount one claim together
                self.across_sets[kind] = across_pods.make(self, kind, node)
            start_pods([*probes.pods, stranger])
            self.record_probe_containers(probes)
            self.cluster.learn_node(probes.main.node)
            self.cluster.learn_runtime_class(probes.main.runtime_class)
            self.probes = (probes, stranger)
        return self.probes

    def _volume_set(self, kind: str, node: str) -> tuple[ProbeSet, Pod]:
        """A probe pod and a stranger (the negative control: a claim of its own)
        with a PVC of `kind`, created now on the probe pod's node; a class that
        cannot bind leaves them unstarted, and only their claims see why."""
        tag = volume_id(kind)
        probes = ProbeSet([self.pod(with_volume_claim(d, kind, self.cluster.run_id), f"podshare-probe-{tag}")
                           for d in self._manifest_pods()[0]])
        stranger = self.pod(with_volume_claim(self._manifest_pods()[1] or load_manifest("stranger-pod.yaml"),
                                              kind, self.cluster.run_id), f"podshare-stranger-{tag}", node=node)
        start_pods_for_claims([*probes.pods, stranger], HARNESS_ERRORS, wait=False)
        return probes, stranger

    def across_probes(self, kind: str) -> AcrossPods:
        """The across-pod pods of a PVC kind, once ready (each that cannot start keeps why)."""
        made = self.across_sets[kind]
        start_pods_for_claims(made.pods(), HARNESS_ERRORS)
        return made

    def volume_probes(self, kind: str) -> tuple[ProbeSet, Pod]:
        """The probe pod and stranger of a PVC kind, once ready (each pod that cannot
        start keeps why, for its claims)."""
        probes, stranger = self.volume_sets[kind]
        start_pods_for_claims([*probes.pods, stranger], HARNESS_ERRORS)
        return probes, stranger

    def replace_probe_set(self, probes: ProbeSet) -> list[str]:
        """Fresh pods in place of a probe set the cluster took (deleted, evicted):
        the same manifest under new names, each on the node its old pod ran on (the
        stranger's: the negative control stays beside it), made and waited for; the
        set then holds them. Returns their names (podshare.recovery uses this once)."""
        fresh = self.probe_set("podshare-probe-fresh")
        for old, new in zip(probes.pods, fresh.pods):
            if old.node:
                pin_to_node(new.body["spec"], old.node)
        start_pods(fresh.pods)
        probes.pods[:] = fresh.pods
        self.record_probe_containers(probes)
        return [p.name for p in fresh.pods]

    def record_probe_containers(self, probes: ProbeSet) -> None:
        """Each probe container's uid, gid, groups and mounts of what it shares, as
        evidence of the probe pod (results.json: cluster.probe_containers, by pod):
        the reports explain refusals (EACCES, EROFS) and absences (ENOENT) with them.
        Optional: a container that does not answer here fails its claims itself."""
        seen = self.cluster.facts.probe_containers
        for pod in probes.pods:
            for c in pod.body["spec"]["containers"]:
                try:
                    answer = pod.container(c["name"]).run("identity")
                except HARNESS_ERRORS:
                    continue
                if answer.get("ok"):
                    seen.setdefault(pod.name, {})[c["name"]] = {k: answer.get(k) for k in ("uid", "gid", "groups",
                                                                                          "mounts")}

    def _new_lifecycle_set(self, create: bool) -> ProbeSet:
        probes = self.probe_set(f"podshare-lifecycle{self._lifecycle_count}")
        self._lifecycle_count += 1
        if create:
            start_pods_for_claims(probes.pods, HARNESS_ERRORS, wait=False)
        return probes

    def lifecycle_set(self) -> ProbeSet:
        """Probe pod(s) for one lifecycle claim alone (it restarts and recreates
        them): one made at the start, or a new one."""
        probes = self.spare_lifecycle.pop(0) if self.spare_lifecycle else self._new_lifecycle_set(create=False)
        self.start(*probes.pods)
        return probes

    def apply(self, manifest: str) -> dict[str, Any]:
        """Create every object of a multi-document manifest, keyed "Kind/name" by
        the template's names; pods are created, not waited for (see start). A
        manifest made at the start is not made again."""
        if manifest in self.apply_failures:
            raise self.apply_failures[manifest]
        if manifest in self.applied:
            return self.applied[manifest]
        docs = load_manifests(self._pattern_manifest(manifest))
        renamed = {d["metadata"]["name"]: f"{d['metadata']['name']}-{self.suffix}" for d in docs}
        made: dict[str, Any] = {}
        for doc in docs:
            kind, name = doc["kind"], doc["metadata"]["name"]
            if kind == "Pod":
                made[f"Pod/{name}"] = pod = self.pod(self._where_it_can_run(self._with_run_volumes(doc)), name,
                                                     renamed=renamed)
                try:
                    pod.create()
                except AccessDenied:
                    raise
                except KubeError as exc:  # refused (422): its claims fail with the reason
                    pod.start_failure = f"the API refused the pod: {exc}"
                continue
            body = render(doc, name=renamed[name], settings=self.settings, run_id=self.cluster.run_id,
                          renamed=renamed)
            made[f"{kind}/{name}"] = self.kube.create(self.namespace, body)
            self.others.append((kind, renamed[name]))
        self.applied[manifest] = made
        return made

    def _where_it_can_run(self, doc: dict) -> dict:
        """A pattern pod the scheduler places (no node of the run's) that needs a
        feature some nodes lack (an image volume on containerd 1.6) is kept off
        those nodes: its claims run where they can."""
        if self.node:
            return doc
        lacking = sorted({n for f in needed_by(doc["spec"]) for n in self.cluster.nodes_lacking(f)})
        if not lacking:
            return doc
        doc = copy.deepcopy(doc)
        keep_off_nodes(doc["spec"], lacking)
        return doc

    def _with_run_volumes(self, doc: dict) -> dict:
        """A pattern pod asking for the run's volume kinds (annotation
        podshare.io/volume-kinds: run) gets a PVC of each --storage-class, as a
        generic ephemeral volume mounted where the volume claims look for it."""
        if (doc["metadata"].get("annotations") or {}).get(VOLUME_KINDS) != "run":
            return doc
        for storage_class in self.settings.storage_class:
            doc = with_volume_claim(doc, f"pvc:{storage_class}", self.cluster.run_id)
        return doc

    def update_configmap(self, manifest: str, name: str, data: dict[str, str]) -> Any:
        """Replace data of a ConfigMap that `manifest` made (by its template name);
        returns the ConfigMap as the API has it after the update."""
        made = self.apply(manifest)[f"ConfigMap/{name}"]
        return self.kube.update_configmap_data(self.namespace, made.metadata.name, data)

    def _pattern_manifest(self, manifest: str) -> str | Path:
        """patterns/NAME from --patterns-dir where it has that file, else the shipped one."""
        given = self.settings.patterns_dir
        if given and manifest.startswith("patterns/") and (Path(given) / manifest[len("patterns/"):]).is_file():
            return Path(given).resolve() / manifest[len("patterns/"):]
        return manifest

    def start(self, *pods: Pod) -> None:
        """Wait until a pattern's or lifecycle claim's pods are ready. One that never
        gets there keeps its reason in `start_failure`: the claims that need it fail
        with it and the run goes on (where a pattern relies on a broken promise,
        that is the finding)."""
        start_pods_for_claims(list(pods), HARNESS_ERRORS)
        ready = [p for p in pods if not p.start_failure]
        if ready:
            self.cluster.learn_node(ready[0].node)

    # ------------------------------------------------------------ the end of the run
    def cleanup(self, keep: bool) -> None:
        """Delete what this factory made, newest first; with --namespace (the
        user's), the run ends when its pods are gone."""
        if keep:
            return
        for pod in self.created:
            pod.close_channels()
        doomed = [("Pod", p.name) for p in reversed(self.created)] + list(reversed(self.others))
        deleted = []
        for kind, name in doomed:
            try:
                self.kube.delete(self.namespace, kind, name)
                deleted.append(name)
            except KubeError as exc:
                self.cluster.leftovers.append(f"{kind.lower()}/{name}: {exc}")
        if self.settings.namespace:
            for pod in self.created:
                if pod.disruption is not None and pod.disruption.hides_cleanup:
                    self.cluster.leftovers.append(f"pod/{pod.name} (deleted, not seen gone: {pod.disruption.cause})")
                elif pod.name in deleted:
                    try:
                        self.kube.wait_pod_gone(self.namespace, pod.name, pod.uid, self.settings.pod_timeout)
                    except HARNESS_ERRORS as exc:
                        self.cluster.leftovers.append(f"pod/{pod.name}: {exc}")
