"""The pod layer: probe-pod handles over the kube layer.

render manifest -> create -> wait -> exec(container, verb, flags) ->
restart / delete / recreate, plus the diagnostics a failed test attaches.
"""
from __future__ import annotations

import copy
import shlex
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from . import MANAGED_BY, POD_LABEL, RUN_ID_LABEL
from .evidence import Evidence, EvidenceSlot
from .channel import Channel, ProbeKilled, VerbRun, last_json_with
from .delivery import deliver
from .disruption import Disrupted, Disruption, Disruptions, diagnose
from .errors import KubeError, PodNotReady, SandboxRefused
from .kube import Kube, to_manifest
from .retry import NotYet, wait_until

# Inside the package when installed from a wheel; at the top of a checkout otherwise.
MANIFESTS = next(p for p in (Path(__file__).resolve().parent / "manifests",
                             Path(__file__).resolve().parent.parent / "manifests") if p.is_dir())
READY_TIMEOUT = 15.0
# While a wait for a pod goes on, how often to ask whether the cluster moved under
# it (deleted, node NotReady, kubelet silent): a dead kubelet costs seconds, not --pod-timeout.
LOOK_EVERY = 10.0
# A round trip over a live channel takes milliseconds: one slower than this was
# held up by the channel (a frozen containerd or API server), not by the probe.
STALLED = 1.0
# The node could not get the image (the public one or a custom one).
PULL_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
# Waiting reasons after which a pod never becomes ready without a change by a person.
TERMINAL_WAITING_REASONS = frozenset({
    "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull",
    "CrashLoopBackOff", "CreateContainerConfigError", "CreateContainerError", "RunContainerError",
})


def _manifest_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    return path if path.is_absolute() or path.exists() else MANIFESTS / path


def load_manifest(name_or_path: str | Path) -> dict:
    return yaml.safe_load(_manifest_path(name_or_path).read_text())


def load_manifests(name_or_path: str | Path) -> list[dict]:
    """All documents of a multi-document manifest (ConfigMap, Pod, Service...)."""
    return [d for d in yaml.safe_load_all(_manifest_path(name_or_path).read_text()) if d]


def probe_manifest_problem(path: str | Path) -> str | None:
    """Why a --pod-manifest cannot serve as the probe pod(s), or None."""
    try:
        pods = [d for d in load_manifests(path) if d.get("kind") == "Pod"]
    except (OSError, yaml.YAMLError) as exc:
        return str(exc).splitlines()[0]
    names = [c.get("name") for p in pods for c in p.get("spec", {}).get("containers", [])]
    if not pods or "alpha" not in names or "beta" not in names:
        return "it must hold one or more Pods with containers named alpha and beta"
    return None


def pin_to_node(spec: dict, node: str) -> None:
    """Require a node by name through the scheduler (as DaemonSets do), so an
    unschedulable pod still reports the scheduler's reason."""
    spec.setdefault("affinity", {})["nodeAffinity"] = {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}}


def render(manifest: dict, *, name: str, settings: Any, run_id: str, node: str | None = None,
           renamed: dict[str, str] | None = None, runtime_class: str | None = None,
           probe_bundle: str | None = None, user_namespaces: bool = False) -> dict:
    """Fill a manifest template with this run's name, labels, images and node.

    `renamed` maps the template's object names to this run's, so a pod's
    ConfigMap volumes and a Service's pod selector follow their objects.
    `probe_bundle` names the ConfigMap with the delivered probes, when the probe
    image is a plain Python image (podshare/delivery.py). `user_namespaces`
    gives the pod its own user namespace (hostUsers: false) unless the manifest
    says otherwise itself (a variant keeping the host's, as a negative control)."""
    renamed = renamed or {}
    body = copy.deepcopy(manifest)
    meta = body.setdefault("metadata", {})
    meta["name"] = name
    meta.pop("namespace", None)
    meta["labels"] = {**meta.get("labels", {}), **MANAGED_BY, RUN_ID_LABEL: run_id}
    kind = body.get("kind", "Pod")
    if kind == "Service":
        selector = body["spec"].get("selector", {})
        if POD_LABEL in selector:
            selector[POD_LABEL] = renamed.get(selector[POD_LABEL], selector[POD_LABEL])
    if kind != "Pod":
        return body
    meta["labels"][POD_LABEL] = name
    spec = body["spec"]
    for volume in spec.get("volumes", []):
        if "configMap" in volume:
            volume["configMap"]["name"] = renamed.get(volume["configMap"]["name"], volume["configMap"]["name"])
    images = {"PROBE_IMAGE": settings.probe_image, "NGINX_IMAGE": settings.nginx_image}  # the manifests' placeholders
    for c in spec.get("initContainers", []) + spec.get("containers", []):
        c["image"] = images.get(c.get("image"), c.get("image"))
        c["imagePullPolicy"] = settings.image_pull_policy
    if probe_bundle:
        deliver(spec, settings.probe_image, probe_bundle)
    if settings.image_pull_secret:
        spec["imagePullSecrets"] = [{"name": settings.image_pull_secret}]
    if node:
        pin_to_node(spec, node)
    if getattr(settings, "tolerate", ()):  # --tolerate: tainted pools are checked too
        spec["tolerations"] = spec.get("tolerations", []) + (
            [{"operator": "Exists"}] if "*" in settings.tolerate else
            [{"key": key, "operator": "Exists"} for key in settings.tolerate])
    if runtime_class:
        spec["runtimeClassName"] = runtime_class
    if user_namespaces:
        spec.setdefault("hostUsers", False)
    return body


# ------------------------------------------------------------------ waiting for pods
# One wait with named conditions (as the Kubernetes e2e framework's pod/wait.go):
# each takes the V1Pod and says whether the wait is over.

def running_and_ready(pod) -> bool:
    statuses = pod.status.container_statuses or []
    return pod.status.phase == "Running" and bool(statuses) and all(s.ready for s in statuses)


def scheduled(pod) -> bool:
    return bool(pod.spec.node_name)


def restarted(container: str, before: int):
    def condition(pod) -> bool:
        cs = next(s for s in pod.status.container_statuses or [] if s.name == container)
        return cs.restart_count > before and cs.ready
    condition.__name__ = f"{container}_restarted"
    return condition


def pod_problem(pod) -> str | None:
    """A one-line reason when the pod cannot become ready by itself."""
    status = pod.status
    if status.phase in ("Failed", "Succeeded") and pod.spec.restart_policy != "Always":
        return f"pod {pod.metadata.name} is {status.phase}: {status.reason or ''} {status.message or ''}".strip()
    for cond in status.conditions or []:
        if cond.type == "PodScheduled" and cond.status == "False" and cond.reason == "Unschedulable":
            return f"pod {pod.metadata.name} is unschedulable: {cond.message}"
    for cs in (status.init_container_statuses or []) + (status.container_statuses or []):
        waiting = cs.state and cs.state.waiting
        if waiting and waiting.reason in TERMINAL_WAITING_REASONS:
            last = cs.last_state and cs.last_state.terminated
            detail = waiting.message or (last and f"{last.reason}: {last.message or ''}") or ""
            hint = ""
            if "python3" in detail and ("not found" in detail or "no such file" in detail):
                hint = f" (is {cs.image} a podshare probe image? it needs python3 and the probes package)"
            elif waiting.reason in PULL_REASONS:
                hint = (f" (node {pod.spec.node_name or '?'} cannot get the image {cs.image}: build and push the probe "
                        "image (README: images/probe.Containerfile) and name it with --probe-image, or pull through "
                        "a mirror with --registry and --image-pull-secret; `podshare images` lists every image a "
                        "run needs)")
            return f"container {cs.name} of pod {pod.metadata.name} is {waiting.reason}: {detail}{hint}".strip()
    return None


def sandbox_refused(kube: Kube, pod) -> str | None:
    """For a pod in a user namespace (hostUsers: false) still waiting for its
    sandbox: the kubelet's own reason when it could not create it, from the pod's
    events (FailedCreatePodSandBox), else None. The kubelet refuses such a pod on
    a runtime handler that does not report user-namespace support, and a runtime
    that cannot set one up fails the same step: neither changes by itself, so the
    wait ends at once with the kubelet's words rather than at --pod-timeout."""
    if pod.spec.host_users is not False or pod.status.phase != "Pending" or not pod.spec.node_name:
        return None
    try:
        records = kube.event_records(pod.metadata.namespace, pod.metadata.name)
    except KubeError:  # listing events is optional (RBAC): the wait then runs its course
        return None
    failed = [r for r in records if r["reason"] == "FailedCreatePodSandBox"]
    if not failed:
        return None
    return (f"the kubelet on node {pod.spec.node_name} could not create the sandbox of pod {pod.metadata.name} "
            f"(hostUsers: false): {failed[-1]['message']}")


def wait_for_pod(kube: Kube, namespace: str, name: str, timeout: float, condition=running_and_ready,
                 watch: "Pod | None" = None):
    """Wait until `condition` holds for the pod, failing fast on a terminal state
    (PodNotReady) and, for a pod handle given as `watch`, on a pod or node the run
    knows is disrupted or, every LOOK_EVERY seconds, finds disrupted (Disrupted);
    retryable API errors are tried again, others end the wait."""
    disruptions = watch.disruptions if watch is not None else None
    looked = [time.monotonic()]

    def check():
        pod = kube.read_pod(namespace, name)
        if disruptions is not None:
            disruptions.check(pod.metadata.uid, pod.spec.node_name)
        problem = pod_problem(pod)
        if problem:
            raise PodNotReady(problem)
        refused = sandbox_refused(kube, pod)
        if refused:
            raise SandboxRefused(refused)
        if disruptions is not None and watch.uid and time.monotonic() - looked[0] > LOOK_EVERY:
            looked[0] = time.monotonic()
            found = diagnose(kube, [watch])
            if found is not None:
                raise Disrupted(disruptions.record(found))
        if not condition(pod):
            waiting = [f"{s.name}:{s.state.waiting.reason}" for s in pod.status.container_statuses or []
                       if s.state and s.state.waiting]
            raise NotYet(f"phase {pod.status.phase} {' '.join(waiting)}".strip())
        return pod
    return wait_until(check, timeout=timeout, what=f"pod {namespace}/{name} ({condition.__name__})")


def _size(count: int) -> str:
    """Bytes as the pod spec would say them: 512 KiB, 64 MiB."""
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= factor and count % factor == 0:
            return f"{count // factor} {unit}"
    return f"{count} bytes"


class ProbeContainer:
    """One container of a probe pod: runs probe verbs through exec."""

    def __init__(self, pod: "Pod", name: str) -> None:
        self.pod, self.name = pod, name

    def __repr__(self) -> str:
        return f"<{self.pod.name}/{self.name}>"

    @property
    def port(self) -> int:
        """The agent's port, from the container's PODSHARE_PORT."""
        for c in self.pod.body["spec"]["containers"]:
            if c["name"] == self.name:
                return int(next(e["value"] for e in c.get("env", []) if e["name"] == "PODSHARE_PORT"))
        raise KeyError(self.name)

    @staticmethod
    def argv(verb: str, flags: dict[str, Any]) -> list[str]:
        args = [verb]
        for key, value in flags.items():
            if value is None or value is False:
                continue
            args.append("--" + key.replace("_", "-"))
            if value is not True:
                args.append(str(value))
        return args

    def run(self, verb: str, **flags: Any) -> dict:
        """Run a one-shot verb; returns its JSON answer and records it as evidence."""
        argv = self.argv(verb, flags)
        start = time.monotonic()
        try:
            result = self.pod.channel(self.name).send(argv).answer().json()
        except ProbeKilled as killed:
            raise self.explained(killed, argv, start) from None
        self._record(argv, result, start)
        return result

    def explained(self, killed: ProbeKilled, argv: list[str], start: float) -> ProbeKilled:
        """A verb killed by a signal, with what the file system under its last step
        says about why: a mapped write past the end of a full tmpfs is a SIGBUS
        ("... while writing the mapped /dev/shm object (the tmpfs is full: 512 KiB)")."""
        path = killed.step.get("path")
        fs: dict = {}
        if path:
            try:
                fs = self.pod.channel(self.name).send(self.argv("filesystem", {"path": str(Path(path).parent)})) \
                    .answer().json()
            except KubeError:
                fs = {}
        if fs.get("ok") and fs.get("fstype") == "tmpfs":
            size, free = fs["size_bytes"], fs["free_bytes"]
            killed.args = (killed.sentence(f" (the tmpfs is full: {_size(size)})" if free == 0 else
                                           f" (its tmpfs of {_size(size)} has {_size(free)} free)"),)
        self._record(argv, {"ok": False, "killed_by": killed.signal, "step": killed.step, "filesystem": fs or None,
                            "said": str(killed)}, start)
        return killed

    def start(self, verb: str, **flags: Any) -> "Background":
        """Start a verb that keeps running (a holder, a waiter) while the test goes on."""
        argv = self.argv(verb, flags)
        return Background(self, argv, self.pod.channel(self.name).send(argv))

    def _record(self, argv: list[str], result: dict, start: float) -> None:
        ev = self.pod.evidence
        if ev is not None:
            ev.record_exec(self.pod, self.name, shlex.join(argv), result, (time.monotonic() - start) * 1000)


class Background:
    """A verb running in a container. As a context manager: waits until the
    probe says it holds its resource, and releases it on the way out."""

    def __init__(self, container: ProbeContainer, argv: list[str], running: VerbRun) -> None:
        self.container, self.argv, self.running = container, argv, running
        self.started = time.monotonic()
        self._result: dict | None = None

    def wait_ready(self) -> "Background":
        """Wait until the probe says it holds its resource: READY_TIMEOUT of the
        probe's own time. When that runs out, a round trip over the same channel
        tells a probe that is not ready (the round trip is quick: fail) from a
        channel that stalled, which holds up every frame, that one too (a frozen
        containerd or API server: wait again, up to the verb's answer timeout)."""
        deadline = time.monotonic() + self.running.timeout
        while True:
            try:
                self.running.wait_ready(READY_TIMEOUT)
                return self
            except KubeError:
                if self.running.finished or time.monotonic() > deadline:
                    raise
                start = time.monotonic()
                self.container.pod.channel(self.container.name).send(["loopback"]).answer()
                if time.monotonic() - start < STALLED:
                    raise

    def result(self) -> dict:
        if self._result is None:
            try:
                self._result = self.running.answer().json()
            except ProbeKilled as killed:
                raise self.container.explained(killed, self.argv, self.started) from None
            self.container._record(self.argv, self._result, self.started)
        return self._result

    def release(self) -> dict:
        """Ask the holder to let go (SIGUSR1 via `probes release`) and return its answer."""
        if self._result is None:
            self.container.run("release")
        return self.result()

    def __enter__(self) -> "Background":
        return self.wait_ready()

    def __exit__(self, *exc) -> None:
        try:
            self.release()
        except Exception:
            if exc[0] is None:
                raise


class Pod:
    """A pod podshare created: its manifest, its state, its containers."""

    def __init__(self, kube: Kube, namespace: str, body: dict, timeout: float, evidence: EvidenceSlot | None = None,
                 disruptions: Disruptions | None = None) -> None:
        """`evidence` holds the running test's Evidence (the run's Cluster has the slot);
        `disruptions` what the run knows moved under it (a disrupted pod is not used again)."""
        self.kube, self.namespace, self.body, self.timeout = kube, namespace, body, timeout
        self.evidence_slot, self.disruptions = evidence, disruptions
        self.disrupted_by: Disruption | None = None  # why it could not start, when the cluster moved
        self.runtime_class: str | None = None  # its runtimeClassName as the API has it, once ready
        self.name: str = body["metadata"]["name"]
        self.uid: str | None = None
        self.node: str | None = None
        self.start_failure: str | None = None  # why it never became ready, for the claims that need it
        self._channels: dict[str, Channel] = {}
        self._channels_lock = threading.Lock()

    def channel(self, container: str) -> Channel:
        """The container's probe channel, opened on first use (once, also when
        threads ask at the same time). One that closed unexpectedly is reopened
        once per verb, and the evidence says so; none is opened to a pod the run
        knows is disrupted."""
        if self.disruptions is not None:
            self.disruptions.check(self.uid, self.node)
        with self._channels_lock:
            return self._open_channel(container)

    def _open_channel(self, container: str) -> Channel:
        current = self._channels.get(container)
        if current is not None and not current.closed:
            return current
        fresh = self._channels[container] = Channel(self.kube, self.namespace, self.name, container)
        ev = self.evidence
        if current is not None and ev is not None:
            ev.setdefault("channel_reopened", []).append(f"{current.where}: {current.closed}")
        return fresh

    def close_channels(self, container: str | None = None) -> None:
        """Close the channels (all, or one container's) on purpose: not reported."""
        for name in [container] if container else list(self._channels):
            with self._channels_lock:
                channel = self._channels.pop(name, None)
            if channel is not None:
                channel.close()

    def __repr__(self) -> str:
        return f"<pod {self.namespace}/{self.name}>"

    @property
    def evidence(self) -> Evidence | None:
        return self.evidence_slot.current if self.evidence_slot is not None else None

    @property
    def disruption(self) -> Disruption | None:
        """What the run knows took this pod, its node or the API, if anything."""
        known = self.disruptions.of(self) if self.disruptions is not None else None
        return known or self.disrupted_by

    def container(self, name: str) -> ProbeContainer:
        return ProbeContainer(self, name)

    def log(self, container: str) -> str:
        return self.kube.read_log(self.namespace, self.name, container)

    def logged_answer(self, container: str) -> dict:
        """The answer a probe verb that ran as the container's command printed: the
        last JSON object in its log with an "ok". The log also holds the verb's
        stderr, the steps it took, and a runtime may order the two streams either way."""
        found = last_json_with(self.log(container), "ok")
        if found is None:
            raise KubeError(f"{self.name}/{container} logged no probe answer")
        return found

    def create(self) -> "Pod":
        created = self.kube.create(self.namespace, self.body)
        self.uid = created.metadata.uid
        ev = self.evidence
        if ev is not None:
            ev.touch(self)
        return self

    def wait_scheduled(self) -> str:
        """Wait only until the scheduler has placed the pod (same fail-fast as wait_ready)."""
        pod = wait_for_pod(self.kube, self.namespace, self.name, self.timeout, scheduled, self)
        self.node = pod.spec.node_name
        return self.node

    def wait_ready(self) -> "Pod":
        pod = wait_for_pod(self.kube, self.namespace, self.name, self.timeout, watch=self)
        self.uid, self.node = pod.metadata.uid, pod.spec.node_name
        self.runtime_class = pod.spec.runtime_class_name  # read back: --runtime-class or the manifest's own
        return self

    def read(self):
        """The pod as the API has it now (V1Pod: spec and status)."""
        return self.kube.read_pod(self.namespace, self.name)

    def restart_count(self, container: str) -> int:
        statuses = self.read().status.container_statuses or []
        return next(s.restart_count for s in statuses if s.name == container)

    def restart_container(self, container: str) -> int:
        """Stop the container's main process and wait until kubelet has restarted
        it and it is ready again; returns the new restart count."""
        before = self.restart_count(container)
        try:
            self.container(container).run("stop-agent")
        except KubeError:
            pass  # the answer may die with the container it stops; the restart count is the evidence
        self.close_channels(container)  # it ends with the container: a new one serves the restarted one
        pod = wait_for_pod(self.kube, self.namespace, self.name, self.timeout, restarted(container, before), self)
        return next(s.restart_count for s in pod.status.container_statuses if s.name == container)

    def delete(self) -> None:
        self.close_channels()
        self.kube.delete_pod(self.namespace, self.name, timeout=self.timeout)

    def diagnostics(self) -> dict[str, Any]:
        """Status, events and container logs: what a person needs when a claim fails."""
        try:
            pod = self.read()
        except Exception as exc:  # the pod may be what is gone
            return {"pod": self.name, "error": str(exc)}
        containers = {}
        for cs in (pod.status.init_container_statuses or []) + (pod.status.container_statuses or []):
            state = cs.state.to_dict() if cs.state else {}
            entry = {"ready": cs.ready, "restart_count": cs.restart_count,
                     "state": {k: v for k, v in state.items() if v},
                     "logs": self.kube.logs(self.namespace, self.name, cs.name)}
            if cs.restart_count:
                entry["previous_logs"] = self.kube.logs(self.namespace, self.name, cs.name, previous=True)
            containers[cs.name] = entry
        return {"pod": self.name, "namespace": self.namespace, "uid": pod.metadata.uid, "node": pod.spec.node_name,
                "phase": pod.status.phase, "events": self.kube.events(self.namespace, self.name),
                "containers": containers}


def start_pods(pods: list[Pod]) -> None:
    """Create the pods not created yet, then wait for all: their start-up overlaps."""
    for pod in pods:
        if pod.uid is None:
            pod.create()
    for pod in pods:
        pod.wait_ready()


def start_pods_for_claims(pods: list[Pod], errors: tuple[type[BaseException], ...], wait: bool = True) -> None:
    """Start pods whose readiness is itself part of what their claims check (a
    pattern relies on the promise under test): a pod that does not become ready
    keeps the reason in `start_failure`, so its claims fail with it and the run
    goes on."""
    def attempt(step) -> None:
        for pod in pods:
            if pod.start_failure:
                continue
            try:
                step(pod)
            except errors as exc:
                pod.start_failure = str(exc)
                if isinstance(exc, Disrupted):
                    pod.disrupted_by = exc.disruption
    # all created first, then waited for: their start-up overlaps, as in start_pods
    attempt(lambda pod: pod.create() if pod.uid is None else None)
    if wait:
        attempt(Pod.wait_ready)


class ProbeSet:
    """The probe containers as a manifest lays them out: normally one pod with
    alpha and beta; a variant may spread them over several pods (which the
    claims must then catch). Pod-level questions go to alpha's pod."""

    def __init__(self, pods: list[Pod]) -> None:
        self.pods = pods

    def __repr__(self) -> str:
        return f"<probes in {', '.join(p.name for p in self.pods)}>"

    def pod_of(self, container: str) -> Pod:
        for pod in self.pods:
            if any(c["name"] == container for c in pod.body["spec"]["containers"]):
                return pod
        raise KeyError(f"no container {container!r} in the probe manifest")

    def container(self, name: str) -> ProbeContainer:
        return self.pod_of(name).container(name)

    @property
    def main(self) -> Pod:
        return self.pod_of("alpha")

    name = property(lambda self: self.main.name)
    body = property(lambda self: self.main.body)
    uid = property(lambda self: self.main.uid)
    node = property(lambda self: self.main.node)
    namespace = property(lambda self: self.main.namespace)

    def restart_count(self, container: str) -> int:
        return self.pod_of(container).restart_count(container)

    def volume_at(self, container: str, path: str) -> dict | None:
        """The volume (as the API returns the pod) that `container` mounts at `path`."""
        pod = self.pod_of(container).read()
        spec = next(c for c in pod.spec.containers if c.name == container)
        name = next((m.name for m in spec.volume_mounts or [] if m.mount_path.rstrip("/") == path), None)
        volume = next((v for v in pod.spec.volumes or [] if v.name == name), None)
        return to_manifest(volume) if volume else None

    def restart_container(self, container: str) -> int:
        return self.pod_of(container).restart_container(container)

    @property
    def start_failure(self) -> str | None:
        return next((f"{p.name}: {p.start_failure}" for p in self.pods if p.start_failure), None)

    def recreate(self) -> "ProbeSet":
        """Delete every pod of the set, then create them again with the same names,
        each on the node it ran on: on another node, a runtime that leaks volume
        data or IPC objects between pods of one node would go unseen."""
        for pod in self.pods:
            pod.delete()
        for pod in self.pods:
            if pod.node:
                pin_to_node(pod.body["spec"], pod.node)
            pod.uid = None
        start_pods(self.pods)
        return self
