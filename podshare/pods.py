"""The pod layer's handles: a pod podshare created (create, wait, restart a
container, delete, the diagnostics a failed test attaches), the probe
containers as a manifest lays them out over pods, and starting pods together.
Manifests are in manifests.py, the waits in waits.py, the probe verbs in verbs.py.
"""
from __future__ import annotations

import threading
from typing import Any

from .channel import Channel, last_json_with
from .disruption import Disrupted, Disruption, Disruptions
from .errors import KubeError
from .evidence import Evidence, EvidenceSlot
from .kube import Kube
from .kube_calls import to_manifest
from .manifests import pin_to_node
from .verbs import ProbeContainer
from .waits import restarted, restarted_with_all_ready, scheduled, wait_for_pod


def _ended_words(kind: str, what: Any) -> str:
    """A container state's reason, exit code and message in one line."""
    code = getattr(what, "exit_code", None)
    at = getattr(what, "finished_at", None)
    parts = [what.reason or "", f"exit code {code}" if code is not None else "",
             f"at {at:%H:%M:%S} UTC" if at else "", (what.message or "").strip()[:160]]
    return f"{kind}: " + ", ".join(p for p in parts if p)


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
        self.start_outside = False  # that reason is the cluster's (no node, no image): its claims could not check
        # each container's restart count as the run knows it (ready, or restarted by a claim):
        # a higher one is the kubelet's doing (podshare.disruption); inf: any number is the claim's
        self.restarts_seen: dict[str, float] = {}
        self.deleted_by_claim = False  # begin_deletion: the pod's end is a claim's doing
        self._channels: dict[str, Channel] = {}
        self._channels_lock = threading.Lock()
        self._filesystems: dict[tuple[str | None, str, str], dict] = {}

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

    def filesystem(self, container: str, path: str) -> dict:
        """The file system at `path` as the container sees it (type, mount options,
        device), the evidence of every volume claim on it: read once per incarnation
        of the pod, as a running pod's mounts do not change."""
        key = (self.uid, container, path)
        if key not in self._filesystems:
            seen = self.container(container).run("filesystem", path=path)
            if not seen.get("ok"):
                return seen  # not kept: asked again, it is asked again
            self._filesystems[key] = seen
        return self._filesystems[key]

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
        self.restarts_seen = {s.name: s.restart_count for s in pod.status.container_statuses or []}
        return self

    def read(self):
        """The pod as the API has it now (V1Pod: spec and status)."""
        return self.kube.read_pod(self.namespace, self.name)

    def restart_count(self, container: str) -> int:
        statuses = self.read().status.container_statuses or []
        return next(s.restart_count for s in statuses if s.name == container)

    def allow_one_restart(self, container: str) -> int:
        """The container may restart once now by the claim's own doing (a write past
        its memory limit that the OOM killer may end with the container), not a
        disruption; returns its restart count before."""
        before = self.restart_count(container)
        self.restarts_seen[container] = before + 1
        return before

    def allow_restarts(self, *containers: str) -> dict[str, int]:
        """From now on these containers may restart any number of times by the claim's
        own doing, none of them a disruption: a write past a memory limit in a runtime
        that charges the pod as a whole may end any of them, or the whole sandbox the
        kubelet then makes anew. Returns their restart counts before."""
        statuses = {s.name: s.restart_count for s in self.read().status.container_statuses or []}
        self.restarts_seen.update({c: float("inf") for c in containers})
        return {c: statuses[c] for c in containers}

    def ready_again(self, container: str, before: int) -> int:
        """After the container ended by a claim's doing: wait until the kubelet has
        restarted it and it is ready; returns the new restart count."""
        self.close_channels(container)  # it ended with the container: a new one serves the restarted one
        pod = wait_for_pod(self.kube, self.namespace, self.name, self.timeout, restarted(container, before), self)
        count = next(s.restart_count for s in pod.status.container_statuses if s.name == container)
        self.restarts_seen[container] = max(count, self.restarts_seen.get(container, 0))  # an allowance stays
        return count

    def container_states(self) -> dict[str, dict]:
        """Each container as the API has it now: restart count, ready, its state in
        words (running, or waiting/terminated with reason and message) and how its
        previous run ended."""
        states = {}
        for s in self.read().status.container_statuses or []:
            state = s.state
            now = ("running" if state and state.running else
                   _ended_words("waiting", state.waiting) if state and state.waiting else
                   _ended_words("terminated", state.terminated) if state and state.terminated else "unknown")
            ended = s.last_state.terminated if s.last_state else None
            states[s.name] = {"restart_count": s.restart_count, "ready": bool(s.ready), "state": now,
                              "last_termination": _ended_words("ended", ended) if ended else None}
        return states

    def restart_container(self, container: str, exit_code: int = 0) -> int:
        """Stop the container's main process (exit code 0, or 1 as a crash) and wait
        until kubelet has restarted it and it is ready again; returns the new restart count."""
        before = self.allow_one_restart(container)
        try:
            self.container(container).run("stop-agent", exit_code=exit_code)
        except KubeError:
            pass  # the answer may die with the container it stops; the restart count is the evidence
        return self.ready_again(container, before)

    def exit_by_restart_rule(self, container: str, exit_code: int) -> dict[str, int]:
        """End the container's main process with `exit_code` (what a container restart
        rule matches) and wait until the kubelet has restarted it and every container is
        ready again; returns every container's restart count (the others' too: a
        RestartAllContainers rule restarts them, none does without one)."""
        read = self.read().status
        statuses = read.container_statuses or []
        before = next(s.restart_count for s in statuses + (read.init_container_statuses or []) if s.name == container)
        # every container may restart once now (the rule's doing, not a disruption): a wait longer
        # than the disruption check's period must not take the claim's own restarts for the kubelet's
        self.restarts_seen = {s.name: s.restart_count + 1 for s in statuses}
        try:
            self.container(container).run("stop-agent", exit_code=exit_code)
        except KubeError:
            pass  # the answer may die with the container it stops; the restart counts are the evidence
        self.close_channels()  # a restart of all containers ends every channel
        pod = wait_for_pod(self.kube, self.namespace, self.name, self.timeout,
                           restarted_with_all_ready(container, before), self)
        self.restarts_seen = {s.name: s.restart_count for s in pod.status.container_statuses or []}
        return dict(self.restarts_seen)

    def begin_deletion(self) -> None:
        """Ask for the pod's deletion and return at once, the channels left open: a
        claim about what happens while it terminates. The deletion is the claim's own,
        never a disruption (podshare.disruption)."""
        self.deleted_by_claim = True
        self.kube.delete(self.namespace, "Pod", self.name)

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
                pod.start_outside = bool(getattr(exc, "outside", False))
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

    def restart_container(self, container: str, exit_code: int = 0) -> int:
        return self.pod_of(container).restart_container(container, exit_code)

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
