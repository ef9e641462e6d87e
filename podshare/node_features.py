"""What a claim needs of a node beyond the Kubernetes API, and why a node lacks it.

A claim marked `needs("<feature>")` is not applicable on a node whose own
facts (its container runtime and version, as the node's status reports them)
show it cannot have the feature: one line says why, instead of a broken
promise the node never made. Facts that do not settle it (another runtime, an
unparsed version) leave the claim to run: its pods tell.
"""
from __future__ import annotations

import re
from typing import Callable

from .records import NodeFacts


def _runtime(facts: NodeFacts) -> tuple[str, str, tuple[int, ...] | None]:
    """("containerd", "1.6.20", (1, 6, 20)) from the node's containerRuntimeVersion."""
    kind, _, version = facts.container_runtime.partition("://")
    numbers = re.match(r"v?(\d+)\.(\d+)(?:\.(\d+))?", version)
    return kind, version, tuple(int(n) for n in numbers.groups() if n is not None) if numbers else None


def image_volumes(node: str, facts: NodeFacts) -> str | None:
    """The CRI's image mounts: containerd from 2.1 (containerd#10579), CRI-O from
    1.31; cri-dockerd has none (Mirantis/cri-dockerd#526)."""
    kind, version, numbers = _runtime(facts)
    if kind == "containerd" and numbers is not None and numbers < (2, 1):
        return (f"node {node}'s containerd {version} cannot mount image volumes "
                "(containerd 2.1 added them: containerd/containerd#10579)")
    if kind == "docker":
        return f"node {node} runs cri-dockerd (docker {version}), which mounts no image volumes (cri-dockerd#526)"
    return None


RESTART_ALL = "RestartAllContainersOnContainerExits"  # the kubelet's gate, as a node declares it


def restart_all_containers(node: str, facts: NodeFacts) -> str | None:
    """A container restart rule's RestartAllContainers action (KEP-5532): the
    kubelet's gate, alpha and off in 1.35, beta and on from 1.36. A node that
    declares its features (status.declaredFeatures, 1.36 on) says so itself; one
    that declares none is judged by its kubelet's version."""
    if RESTART_ALL in facts.declared_features:
        return None
    numbers = re.match(r"v?(\d+)\.(\d+)", facts.kubelet)
    if facts.declared_features:
        return (f"node {node}'s kubelet {facts.kubelet} declares its features, and {RESTART_ALL} is not among "
                "them (its gate is off): it restarts no pod's containers all at once")
    if numbers and (int(numbers[1]), int(numbers[2])) < (1, 36):
        return (f"node {node}'s kubelet {facts.kubelet} restarts no pod's containers all at once: "
                f"{RESTART_ALL} is alpha and off by default before 1.36 (KEP-5532), and the node declares no features")
    return None


def pod_level_resources(node: str, facts: NodeFacts) -> str | None:
    """A pod's own resources (spec.resources, KEP-2837): alpha in 1.32, beta and on
    from 1.34; a kubelet without the gate sizes and limits the pod by its containers.
    Judged by the kubelet's version only: no node declares this gate (it is not among
    component-helpers' nodedeclaredfeatures)."""
    numbers = re.match(r"v?(\d+)\.(\d+)", facts.kubelet)
    if numbers and (int(numbers[1]), int(numbers[2])) < (1, 34):
        return (f"node {node}'s kubelet {facts.kubelet} knows no pod-level resources: PodLevelResources is alpha "
                "and off by default before 1.34 (KEP-2837)")
    return None


# feature (as claims name it in needs(...)) -> why a node lacks it, or None
FEATURES: dict[str, Callable[[str, NodeFacts], str | None]] = {
    "image volumes": image_volumes,
    "restart all containers": restart_all_containers,
    "pod-level resources": pod_level_resources,
}


def lacks(feature: str, node: str, facts: NodeFacts) -> str | None:
    """Why `node` cannot have `feature`, or None (it has it, or its facts do not say)."""
    return FEATURES[feature](node, facts)


def needed_by(spec: dict) -> list[str]:
    """The features a pod's spec needs of its node (an image volume: image volumes; a
    RestartAllContainers restart rule: restart all containers; its own resources:
    pod-level resources), as a manifest writes
    it or as the API client's to_dict() gives it (snake_case, None unset)."""
    def field(d: dict, camel: str, snake: str) -> list:
        return d.get(camel) or d.get(snake) or []
    containers = [*field(spec, "containers", "containers"), *field(spec, "initContainers", "init_containers")]
    rules = [r for c in containers for r in field(c, "restartPolicyRules", "restart_policy_rules")]
    return ([*(["image volumes"] if any(v.get("image") for v in field(spec, "volumes", "volumes")) else []),
             *(["restart all containers"] if any(r.get("action") == "RestartAllContainers" for r in rules) else []),
             *(["pod-level resources"] if spec.get("resources") else [])])
