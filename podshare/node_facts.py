"""What the reports say about a node, from the API's node object: its facts
(records.NodeFacts), which nodes are alike (--one-per-pool), and why a run's
pods cannot be checked on one. Below the cluster layer, so that the waits and
the cluster read a node the same way."""
from __future__ import annotations

import json
from typing import Any

from .records import RUNTIMES_ANNOTATION, NodeFacts

# Where clusters name a node's pool (ours, then the clouds').
POOL_LABELS = ("podshare.io/pool", "cloud.google.com/gke-nodepool", "eks.amazonaws.com/nodegroup",
               "kubernetes.azure.com/agentpool", "node.kubernetes.io/pool")


def node_runtimes(node: Any) -> dict[str, Any] | None:
    """The node's runtimes as the bundled cluster annotates them (records.RUNTIMES_ANNOTATION);
    None where the node does not say, or says it in a form this podshare cannot read."""
    said = (node.metadata.annotations or {}).get(RUNTIMES_ANNOTATION)
    try:
        found = json.loads(said) if said else None
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def node_facts(node: Any) -> NodeFacts:
    """What the reports say about a node (podshare.records.NodeFacts), from the API's node."""
    info, labels = node.status.node_info, node.metadata.labels or {}
    ready = next((c for c in node.status.conditions or [] if c.type == "Ready"), None)
    return NodeFacts(
        pool=next((labels[k] for k in POOL_LABELS if k in labels), None),
        labels={k: v for k, v in labels.items() if k in POOL_LABELS or "sandbox" in k or k.startswith("podshare.io/")},
        all_labels=dict(labels), kubelet=info.kubelet_version, container_runtime=info.container_runtime_version,
        os_image=info.os_image, kernel=info.kernel_version, architecture=info.architecture,
        runtime_handlers=[h.name or "(default)" for h in (node.status.runtime_handlers or [])],
        taints=[f"{t.key}{'=' + t.value if t.value else ''}:{t.effect}" for t in node.spec.taints or []],
        unschedulable=bool(node.spec.unschedulable), ready=ready.status if ready else "Unknown",
        runtimes=node_runtimes(node), declared_features=list(getattr(node.status, "declared_features", None) or []))


def configuration(facts: NodeFacts) -> tuple:
    """What makes nodes alike for --one-per-pool: nodes with the same pool labels,
    taints, kubelet, runtime, kernel, OS image and architecture keep or break the
    same promises, so one of them stands for all."""
    return (tuple(sorted(facts.labels.items())), tuple(sorted(facts.taints)), facts.kubelet,
            facts.container_runtime, facts.kernel, facts.os_image, facts.architecture)


def one_per_configuration(facts: dict[str, NodeFacts]) -> dict[str, list[str]]:
    """Each distinct configuration's representative -> the other nodes it stands
    for: the first by name that takes pods (Ready, not cordoned), else the first."""
    groups: dict[tuple, list[str]] = {}
    for name in sorted(facts):
        groups.setdefault(configuration(facts[name]), []).append(name)
    chosen = {}
    for names in groups.values():
        fit = [n for n in names if facts[n].ready == "True" and not facts[n].unschedulable]
        pick = (fit or names)[0]
        chosen[pick] = [n for n in names if n != pick]
    return dict(sorted(chosen.items()))


def ready_condition(node: Any) -> Any | None:
    """The node's Ready condition, as its kubelet last posted it."""
    return next((c for c in node.status.conditions or [] if c.type == "Ready"), None)


def node_unfit(node: Any, tolerated: tuple[str, ...]) -> str | None:
    """Why this run's pods cannot be checked on a node, in one sentence, or None."""
    name = node.metadata.name
    if node.spec.unschedulable:
        return f"node {name} is cordoned (spec.unschedulable): no new pod may start there"
    ready = ready_condition(node)
    if ready is None or ready.status != "True":
        since = f" since {ready.last_transition_time:%Y-%m-%d %H:%M:%S} UTC" if ready and ready.last_transition_time else ""
        why = f" ({ready.reason}: {ready.message})" if ready and ready.reason else ""
        return f"node {name} is NotReady{since}{why}"
    for t in node.spec.taints or []:
        if t.effect in ("NoSchedule", "NoExecute") and "*" not in tolerated and t.key not in tolerated:
            taint = f"{t.key}{'=' + t.value if t.value else ''}:{t.effect}"
            return (f"node {name} has the taint {taint}, which the pods do not tolerate "
                    f"(--tolerate {t.key} checks it too)")
    return None
