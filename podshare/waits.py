"""Waiting for pods: one wait with named conditions (as the Kubernetes e2e
framework's pod/wait.go), each taking the V1Pod and saying whether the wait is
over; a terminal state, a refused sandbox or a cluster that moved ends it early.
"""
from __future__ import annotations

import re
import time
from typing import Any

from .disruption import Disrupted, diagnose
from .errors import KubeError, PodNotReady, SandboxRefused
from .kube import Kube
from .node_features import lacks, needed_by
from .node_facts import node_facts
from .retry import GaveUp, NotYet, wait_until

# How long a verb that holds something (a lock, a mapping) has to say it holds it.
READY_TIMEOUT = 15.0
# While a wait for a pod goes on, how often to ask whether the cluster moved under
# it (deleted, node NotReady, kubelet silent): a dead kubelet costs seconds, not --pod-timeout.
LOOK_EVERY = 10.0
# The node could not get the image (the public one or a custom one).
PULL_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
# Waiting reasons after which a pod never becomes ready without a change by a person.
TERMINAL_WAITING_REASONS = frozenset({
    "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull",
    "CrashLoopBackOff", "CreateContainerConfigError", "CreateContainerError", "RunContainerError",
})


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


def restarted_with_all_ready(container: str, before: int):
    """`container` restarted, and every container of the pod ready again: after a
    restart rule's exit, whether the others restarted too is what the claim asks."""
    def condition(pod) -> bool:
        statuses = pod.status.container_statuses or []
        # the one that exited may be a native sidecar (an init container with restartPolicy Always)
        cs = next(s for s in statuses + (pod.status.init_container_statuses or []) if s.name == container)
        return (cs.restart_count > before and cs.ready and all(s.ready for s in statuses)
                and _restart_of_all_settled(pod))
    condition.__name__ = f"{container}_restarted_all_ready"
    return condition


def _restart_of_all_settled(pod) -> bool:
    """Where the kubelet restarts every container (a RestartAllContainers rule), its
    pod condition AllContainersRestarting is True while it ends them all and turns
    False once all have ended: until each container started after that, a "ready"
    may be a container's stale word from before (CI: an exec then met beta being
    restarted). Without the condition (no such rule), nothing to wait for."""
    said = next((c for c in pod.status.conditions or [] if c.type == "AllContainersRestarting"), None)
    if said is None:
        return True
    if said.status == "True":
        return False
    since = said.last_transition_time
    return since is None or all(s.state and s.state.running and s.state.running.started_at
                                and s.state.running.started_at >= since
                                for s in pod.status.container_statuses or [])


def pod_problem(pod, last_words=None) -> str | None:
    """A one-line reason when the pod cannot become ready by itself; with
    `last_words` (container name -> the last line its previous run logged), a
    crash-looping container's line says why it ended, as the kubelet's own
    "back-off ... restarting failed container" does not."""
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
                # the probe image is podshare's to build; another is a manifest's own (a pattern's app)
                build = ("build and push the probe image (docs/quickstart.md: images/probe.Containerfile) and name it "
                         "with --probe-image (a manifest's own image: push it where the nodes pull from)")
                hint = (f" (node {pod.spec.node_name or '?'} cannot get the image {cs.image}: {build}, or pull through "
                        "a mirror with --registry and --image-pull-secret; `podshare images` lists every image a "
                        "run needs)")
            if waiting.reason == "CrashLoopBackOff":
                if last and waiting.message:
                    detail += f" (its last run ended {last.reason or '?'}, exit code {last.exit_code})"
                said = last_words(cs.name) if last_words is not None else ""
                if said:
                    detail += f"; its last log line: {said}"
            return f"container {cs.name} of pod {pod.metadata.name} is {waiting.reason}: {detail}{hint}".strip()
    return None


def last_log_line(kube: Kube, namespace: str, pod: str, container: str) -> str:
    """The last line a container's previous run logged ("" where there is none or
    the log cannot be read: it is optional, as pods/log may not be granted)."""
    text = kube.logs(namespace, pod, container, previous=True, tail=5)
    if text.startswith("(no logs"):
        return ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def node_lacks(kube: Kube, pod) -> str | None:
    """Why the pod's node cannot have what the pod's spec needs (podshare.node_features),
    or None; for a pod that cannot start, on a node no claim's collection decided."""
    needed = needed_by(pod.spec.to_dict())
    if not needed or not pod.spec.node_name:
        return None
    try:
        facts = node_facts(kube.node(pod.spec.node_name))
    except KubeError:
        return None
    return next((why for f in needed if (why := lacks(f, pod.spec.node_name, facts))), None)


def outside_the_promise(pod) -> bool:
    """The pod cannot start for a reason of the cluster's, not of the claims': no
    node takes it, or its node cannot get an image."""
    unschedulable = any(c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable"
                        for c in pod.status.conditions or [])
    return unschedulable or any(
        cs.state and cs.state.waiting and cs.state.waiting.reason in PULL_REASONS
        for cs in (pod.status.init_container_statuses or []) + (pod.status.container_statuses or []))


def unbound_claims(kube: Kube, pod) -> tuple[str, bool]:
    """For a pod that cannot be scheduled yet: its claims (generic ephemeral
    volumes and PersistentVolumeClaims) and what their events say, so a line names
    the class and why ("" where it has none); and whether one is refused for good
    (its StorageClass does not exist; or its provisioner does not make the access
    mode asked for: then the line says the claim is not applicable), not merely
    still being provisioned."""
    said, refused, modes = [], False, []
    for v in pod.spec.volumes or []:
        if v.ephemeral:
            name = f"{pod.metadata.name}-{v.name}"  # how Kubernetes names a generic ephemeral volume's claim
            spec = v.ephemeral.volume_claim_template.spec
        elif v.persistent_volume_claim:
            name, spec = v.persistent_volume_claim.claim_name, None
        else:
            continue
        try:
            records = kube.event_records(pod.metadata.namespace, name)
        except KubeError:  # listing events is optional (RBAC)
            records = []
        events = [r["message"] for r in records]
        if spec is None:
            spec = _claim_spec(kube, pod.metadata.namespace, name)
        storage_class = (spec.storage_class_name if spec else None) or "the default class"
        asked = ", ".join(spec.access_modes or []) if spec else "asked for"
        refused = refused or any("storageclass" in e and "not found" in e for e in events)
        # said without the claim's name: one line for every node and pod the class refuses alike
        modes += [f"StorageClass {storage_class} does not provision {asked} volumes (its provisioner: {e})"
                  for e in dict.fromkeys(events) if ACCESS_MODE_REFUSED.search(e)][-1:]
        said.append(f"PersistentVolumeClaim {name} of StorageClass {storage_class} is not bound"
                    + (f" ({'; '.join(dict.fromkeys(events))})" if events else " (no events)"))
    if modes:
        return f"not applicable: {'; '.join(modes)}", True
    return "; ".join(said), refused


# A provisioner's words for an access mode it does not make (local-path: "NodePath only supports
# ReadWriteOnce and ReadWriteOncePod (1.22+) access modes"; CSI drivers: "access mode ... not supported").
ACCESS_MODE_REFUSED = re.compile(r"access ?modes?\b.*(not supported|unsupported)|only supports? .*access ?modes?"
                                 r"|(not supported|unsupported) access ?modes?", re.I)


def _claim_spec(kube: Kube, namespace: str, name: str):
    try:
        return kube.pvc(namespace, name).spec
    except KubeError:
        return None


def claims_pending(pod) -> bool:
    """The scheduler holds the pod for its volume claims (made, bound or provisioned
    after the pod exists): a wait, not yet a verdict."""
    return any(v.ephemeral or v.persistent_volume_claim for v in pod.spec.volumes or []) and any(
        c.type == "PodScheduled" and c.status == "False" for c in pod.status.conditions or [])


def awaits_provisioning(pod) -> bool:
    """Not yet on a node, with claims among its volumes."""
    return not pod.spec.node_name and any(v.ephemeral or v.persistent_volume_claim for v in pod.spec.volumes or [])


def not_ready_containers(pod) -> list[str]:
    return [s.name for s in pod.status.container_statuses or [] if s.state and s.state.running and not s.ready]


def readiness_said(kube: Kube, pod) -> str:
    """What the kubelet's probes said of the pod's not-ready containers (its
    Unhealthy events, newest last), or "" where it said nothing readable."""
    try:
        records = kube.event_records(pod.metadata.namespace, pod.metadata.name)
    except KubeError:  # listing events is optional (RBAC)
        return ""
    # the not-ready containers' own probes: a ready one's early failures are not why
    theirs = {f"spec.containers{{{name}}}" for name in not_ready_containers(pod)}
    unhealthy = [r for r in records if r["reason"] == "Unhealthy"]
    said = list(dict.fromkeys(r["message"] for r in unhealthy if r.get("field_path") in theirs)
                or dict.fromkeys(r["message"] for r in unhealthy))
    return "; ".join(said[-2:])


def mount_failures(kube: Kube, pod) -> str:
    """What the kubelet said of a pod whose volumes it could not set up (its
    FailedMount / FailedAttachVolume events, newest last), or ""."""
    try:
        records = kube.event_records(pod.metadata.namespace, pod.metadata.name)
    except KubeError:  # listing events is optional (RBAC)
        return ""
    said = list(dict.fromkeys(r["message"] for r in records
                              if r["reason"] in ("FailedMount", "FailedAttachVolume", "FailedMapVolume")))
    return "; ".join(said[-2:])


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
                 watch: Any = None):
    """Wait until `condition` holds for the pod, failing fast on a terminal state
    (PodNotReady) and, for a pod handle given as `watch`, on a pod or node the run
    knows is disrupted or, every LOOK_EVERY seconds, finds disrupted (Disrupted);
    retryable API errors are tried again, others end the wait."""
    disruptions = watch.disruptions if watch is not None else None
    looked = [time.monotonic()]
    last: list[Any] = [None]  # the pod as last read, for what the wait ends with

    def check():
        pod = kube.read_pod(namespace, name)
        if disruptions is not None:
            disruptions.check(pod.metadata.uid, pod.spec.node_name)
        last[0] = pod
        problem = pod_problem(pod, lambda container: last_log_line(kube, namespace, name, container))
        if problem and claims_pending(pod):
            claims, refused = unbound_claims(kube, pod)
            if not refused:  # still being provisioned: the wait's end says so, with the claims' events
                raise NotYet(f"{problem}; {claims}")
            said = f"{claims} (the scheduler: {problem})" if claims.startswith("not applicable") else \
                f"{problem}; {claims}"
            raise PodNotReady(said, outside=True)
        if not problem and awaits_provisioning(pod):
            # The scheduler holds a pod whose claim waits for its first consumer without a
            # word (no condition) while it asks the provisioner: a refusal is in the claim's events.
            claims, refused = unbound_claims(kube, pod)
            if refused:
                raise PodNotReady(claims, outside=True)
        if problem:
            missing = node_lacks(kube, pod)
            if missing:  # what the node cannot have, not a promise it broke
                raise PodNotReady(f"not applicable: {missing} (the kubelet: {problem})", outside=True)
            raise PodNotReady(problem, outside=outside_the_promise(pod))
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
            unready = [f"container {c} not ready" for c in not_ready_containers(pod)]
            raise NotYet(", ".join([f"phase {pod.status.phase} {' '.join(waiting)}".strip(), *unready]))
        return pod
    try:
        return wait_until(check, timeout=timeout, what=f"pod {namespace}/{name} ({condition.__name__})")
    except GaveUp as exc:
        if last[0] is not None and claims_pending(last[0]):  # a provisioner that never answered: not the promise
            raise PodNotReady(f"{exc}; {unbound_claims(kube, last[0])[0]}", outside=True) from None
        unmounted = mount_failures(kube, last[0]) if last[0] is not None and last[0].spec.node_name and \
            last[0].status.phase == "Pending" else ""
        if unmounted:  # bound, placed, but its volumes never mounted: the storage's doing, in the kubelet's words
            raise PodNotReady(f"{exc}; the kubelet could not mount its volumes: {unmounted}", outside=True) from None
        # running but never ready: what its readiness probe said, in the kubelet's words
        said = readiness_said(kube, last[0]) if last[0] is not None and not_ready_containers(last[0]) else ""
        if said:
            raise GaveUp(f"{exc}; its readiness probe: {said}") from None
        raise
