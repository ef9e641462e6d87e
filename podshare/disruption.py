"""Telling a broken promise from a cluster that moved under the run.

When a claim fails with a harness error (an exec refused, a probe channel that
ended, a wait that ran out), the facts are read back from the API at that
moment: the pod (gone, its deletionTimestamp, evicted), its events (Killing,
Evicted, Preempted), its node's Ready condition and since when, and whether
the API server still reaches the node's kubelet (a container log, which the
kubelet serves). What they show is a Disruption: the claim could not be
checked. Error text alone decides nothing here; an assertion on a probe's
answer never comes this way.

The run remembers every Disruption, so each later claim that needs the same pod
or node ends at once with the same cause instead of waiting out its timeouts.
"""
from __future__ import annotations

import datetime as dt
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Iterable

from .errors import AccessDenied, KubeError
from .node_facts import ready_condition
from .retry import GaveUp, wait_until

API_BUDGET = 20.0  # how long the API may stay unreachable before that is the disruption
REQUEST_TIMEOUT = 10.0  # one read while diagnosing: a frozen API server or kubelet must not hang it
# Events that name who or what stopped a pod (kubelet, scheduler, taint manager, node controller).
DISRUPTING_EVENTS = ("Killing", "Evicted", "Preempted", "Preempting", "TaintManagerEviction", "NodeNotReady")


@dataclass(frozen=True)
class Disruption:
    """Why claims could not be checked: `cause` is one sentence naming the
    disruption and its source; the scope is the pods (by uid) it took, every pod
    on `node`, or everything (the API)."""
    cause: str
    pods: frozenset[str] = field(default_factory=frozenset)
    node: str | None = None
    everywhere: bool = False
    container: str | None = None  # a container the kubelet restarted: the pod stays, no fresh pod helps
    by_spec: bool = False  # the pod's own spec caused it (a volume over its sizeLimit): a fresh pod meets it again
    # the node takes no new pod (cordoned, an untolerated taint) but is Ready: its kubelet
    # still confirms deletions, so cleaning up there is waited for as anywhere
    node_ready: bool = False

    @property
    def hides_cleanup(self) -> bool:
        """Deletions cannot be confirmed through it (a node down, the API): wait short."""
        return self.everywhere or (self.node is not None and not self.node_ready)

    def covers(self, key: str | None, node: str | None) -> bool:
        return self.everywhere or (node is not None and node == self.node) or (key is not None and key in self.pods)


class Disrupted(KubeError):
    """Raised where a claim would use a pod or node the run knows is disrupted."""

    def __init__(self, disruption: Disruption) -> None:
        super().__init__(disruption.cause)
        self.disruption = disruption


class Disruptions:
    """What the run knows moved under it (one per run, shared by every pod handle)."""

    def __init__(self) -> None:
        self.known: list[Disruption] = []
        self._lock = threading.Lock()

    def record(self, disruption: Disruption) -> Disruption:
        """Remember a disruption; one already known for the same scope (the same pods,
        node or the API) stays the one cause, also when a later look words it otherwise
        (a dead kubelet's connection refused, then reset)."""
        with self._lock:
            same = next((d for d in self.known if (d.pods, d.node, d.everywhere) ==
                         (disruption.pods, disruption.node, disruption.everywhere)), None)
            if same is not None:
                return same
            self.known.append(disruption)
        return disruption

    def of(self, pod: Any) -> Disruption | None:
        """The known disruption of a pod handle (itself, its node, or the API), or None."""
        return self.covering(_key(pod), getattr(pod, "node", None))

    def covering(self, key: str | None, node: str | None) -> Disruption | None:
        return next((d for d in self.known if d.covers(key, node)), None)

    def check(self, key: str | None, node: str | None) -> None:
        """Raise Disrupted if the pod (by uid), its node, or the API is known disrupted."""
        known = self.covering(key, node)
        if known is not None:
            raise Disrupted(known)


def _key(pod: Any) -> str:
    return getattr(pod, "uid", None) or getattr(pod, "name", "")


def _at(when: dt.datetime | None) -> str:
    return f"{when.astimezone(dt.timezone.utc):%H:%M:%S} UTC" if when else "an unknown time"


def _events(kube: Any, namespace: str, name: str) -> str:
    """The pod's disrupting events as words ("event Killing at 19:42:10 UTC: Stopping
    container alpha"), newest last; empty when there are none or they are unreadable."""
    try:
        records = kube.event_records(namespace, name, timeout=REQUEST_TIMEOUT)
    except KubeError:  # listing events is optional (RBAC); the decision never rests on them
        return ""
    grouped: dict[tuple[str, str], list[str]] = {}  # one reason at one time: its messages together
    for r in records:
        if r["reason"] in DISRUPTING_EVENTS:
            messages = grouped.setdefault((r["reason"], _at(r["time"])), [])
            if r["message"].strip() not in messages:
                messages.append(r["message"].strip())
    return "; ".join(f"event {reason} at {at}: {', '.join(messages)}"
                     for (reason, at), messages in list(grouped.items())[-3:])


def _with(detail: str) -> str:
    return f" ({detail})" if detail else ""


def _read_pod(kube: Any, namespace: str, name: str) -> Any | None:
    """The pod as the API has it now, or None when it has none; an API that stays
    unreachable (or answers only 5xx) past API_BUDGET raises GaveUp."""
    def read():
        try:
            return kube.read_pod(namespace, name, timeout=REQUEST_TIMEOUT)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
    return wait_until(read, timeout=API_BUDGET, what="the API server to answer")


def _pod_gone(kube: Any, pod: Any, live: Any) -> Disruption | None:
    """The pod deleted, being deleted, evicted or ended by its node."""
    name, namespace = pod.name, pod.namespace
    if getattr(pod, "deleted_by_claim", False):
        return None  # the claim deleted it to watch it stop
    scope = frozenset({_key(pod)})
    if live is None or (pod.uid and live.metadata.uid != pod.uid):
        replaced = "" if live is None else f"; a new pod of that name exists (uid {live.metadata.uid})"
        events = _events(kube, namespace, name)
        return Disruption(f"pod {name} was deleted{_with(events)}{replaced}", pods=scope)
    meta, status = live.metadata, live.status
    target = next((c for c in status.conditions or [] if c.type == "DisruptionTarget" and c.status == "True"), None)
    why = f"DisruptionTarget {target.reason}: {target.message}" if target else ""
    if meta.deletion_timestamp:
        grace = meta.deletion_grace_period_seconds or 0
        requested = meta.deletion_timestamp - dt.timedelta(seconds=grace)  # the API sets it to request + grace
        details = "; ".join(filter(None, [why, _events(kube, namespace, name)]))
        return Disruption(f"pod {name} was deleted at {_at(requested)}{_with(details)}", pods=scope)
    if status.phase not in ("Failed", "Succeeded"):
        return None
    events = _events(kube, namespace, name)
    # An eviction for the pod's own limits whose containers end cleanly on its SIGTERM leaves the
    # pod Succeeded, with no reason and no DisruptionTarget (kubernetes#120182): only its event says so.
    evicted = status.reason == "Evicted" or "event Evicted at " in events
    if not (status.reason or target or evicted):
        return None
    verb = "was evicted" if evicted else f"was stopped ({status.reason or target.reason})"
    details = "; ".join(filter(None, [(status.message or "").strip(), why, events]))
    phase = (" (the API calls it Succeeded: its containers ended cleanly on the eviction's SIGTERM, "
             "kubernetes#120182)") if evicted and status.phase == "Succeeded" else ""
    spec = _spec_limit(details) if evicted else ""
    return Disruption(f"pod {name} {verb}{_with(details)}{phase}{spec}", pods=scope, by_spec=bool(spec))


# The kubelet's eviction messages for a limit the pod's own spec sets (pkg/kubelet/eviction/helpers.go)
SPEC_LIMITS = ((re.compile(r'Usage of EmptyDir volume "([^"]+)" exceeds the limit "([^"]+)"'),
                "the pod's own spec limits its volume {0} to {1}"),
               (re.compile(r'Container (\S+) exceeded its local ephemeral storage limit "([^"]+)"'),
                "the pod's own spec limits the ephemeral storage of container {0} to {1}"),
               (re.compile(r"Pod ephemeral local storage usage exceeds the total limit of containers (\S+?)\.? "),
                "the pod's own spec limits its ephemeral storage to {0}"))


def _spec_limit(message: str) -> str:
    """Where an eviction is for a limit of the pod's own spec: that, said as a finding about the spec."""
    for pattern, said in SPEC_LIMITS:
        found = pattern.search(message + " ")
        if found:
            return f"; {said.format(*found.groups())}: a finding about the spec, not about what the containers share"
    return ""


def _limit_of(live: Any, container: str) -> str | None:
    spec = next((c for c in live.spec.containers or [] if c.name == container), None)
    limits = (spec.resources.limits or {}) if spec is not None and spec.resources else {}
    return limits.get("memory")


def _container_restarted(pod: Any, live: Any) -> Disruption | None:
    """A container the kubelet restarted since the run last knew it (its restart
    count went up while no claim restarted it), named as the API says: why it
    ended (OOMKilled, Error with its exit code), when, and where the cause is the
    pod's own spec (a memory limit it ran into), a finding about that spec."""
    known = getattr(pod, "restarts_seen", None) or {}
    for cs in live.status.container_statuses or []:
        if cs.name not in known or cs.restart_count <= known[cs.name]:
            continue
        ended = cs.last_state.terminated if cs.last_state else None
        how = (f"{ended.reason or 'ended'} (exit code {ended.exit_code})" if ended else "ended")
        at = f" at {_at(ended.finished_at)}" if ended and ended.finished_at else ""
        limit = _limit_of(live, cs.name)
        spec = (f"; the pod's own spec limits its memory to {limit}: a finding about the spec, not about "
                "what the containers share") if ended and ended.reason == "OOMKilled" and limit else ""
        # its termination message (or, by FallbackToLogsOnError, its log's tail): the last line says why it
        # ended; an OOM kill's is whatever the process last logged, not why
        last = (ended.message or "").strip().splitlines()[-1:] if ended and ended.reason != "OOMKilled" else []
        said = f" ({last[0][:200]})" if last else ""
        return Disruption(f"container {cs.name} of pod {pod.name} was restarted by the kubelet{at}: {how}{said}{spec}",
                          pods=frozenset({_key(pod)}), container=cs.name)
    return None


def _node_down(kube: Any, node: str) -> tuple[Disruption | None, Any]:
    """The node deleted or not Ready (per its Ready condition); returns the node too.
    Reading nodes is optional (cluster-scoped): without the right, nothing is said."""
    try:
        found = kube.node(node, timeout=REQUEST_TIMEOUT)
    except AccessDenied:
        return None, None
    except KubeError as exc:
        if exc.status == 404:
            return Disruption(f"node {node} was deleted", node=node), None
        return None, None
    ready = ready_condition(found)
    if ready is not None and ready.status != "True":
        # as kubectl says it: an Unknown Ready condition (the kubelet stopped posting) is NotReady too
        state = "NotReady" if ready.status == "False" else f"NotReady (its Ready condition is {ready.status})"
        return Disruption(f"node {node} is {state} since {_at(ready.last_transition_time)}"
                          f"{_with(f'{ready.reason}: {ready.message}' if ready.reason else ready.message or '')}",
                          node=node), found
    return None, found


def _kubelet_silent(kube: Any, node: str, found: Any, pod: Any, live: Any) -> Disruption | None:
    """Ask the node's kubelet, through the API, for a running container's last log
    line. A 5xx (or no answer) while the API itself answers is the API server
    failing to reach the kubelet: the kubelet is not answering."""
    running = [s.name for s in live.status.container_statuses or [] if s.state and s.state.running]
    if not running:
        return None
    try:
        kube.read_log(pod.namespace, pod.name, running[0], tail=1, timeout=REQUEST_TIMEOUT)
        return None
    except KubeError as exc:
        if not (exc.unreachable or (exc.status or 0) >= 500):
            return None
        said = exc
    ready = ready_condition(found) if found else None
    heard = f"; the API last heard from it at {_at(ready.last_heartbeat_time)}" if ready else ""
    return Disruption(f"node {node}'s kubelet is not answering: the API server could not reach it to {said}{heard}",
                      node=node)


def diagnose(kube: Any, pods: Iterable[Any], pod_level: bool = True) -> Disruption | None:
    """What, if anything, moved under these pods, from facts read back from the API now.
    With `pod_level` False only the nodes and the API are judged (pods the claim
    may not need: a deleted one among them is not this claim's cause)."""
    pods = [p for p in pods if getattr(p, "uid", None)]  # only pods that were created
    lives: list[tuple[Any, Any]] = []
    for pod in pods:
        try:
            live = _read_pod(kube, pod.namespace, pod.name)
        except GaveUp as exc:
            return Disruption(f"the API server at {kube.server} did not answer for {API_BUDGET:g}s: {exc}",
                              everywhere=True)
        except KubeError:
            return None  # refused (403...): nothing is known
        if pod_level:
            gone = _pod_gone(kube, pod, live) or (_container_restarted(pod, live) if live is not None else None)
            if gone:
                return gone
        if live is not None:
            lives.append((pod, live))
    for node in dict.fromkeys(live.spec.node_name for _, live in lives if live.spec.node_name):
        down, found = _node_down(kube, node)
        if down:
            return down
        pod, live = next((p, lv) for p, lv in lives if lv.spec.node_name == node)
        silent = _kubelet_silent(kube, node, found, pod, live)
        if silent:
            return silent
    return None
