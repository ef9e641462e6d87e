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


# feature (as claims name it in needs(...)) -> why a node lacks it, or None
FEATURES: dict[str, Callable[[str, NodeFacts], str | None]] = {
    "image volumes": image_volumes,
}


def lacks(feature: str, node: str, facts: NodeFacts) -> str | None:
    """Why `node` cannot have `feature`, or None (it has it, or its facts do not say)."""
    return FEATURES[feature](node, facts)


def needed_by(volumes: list[dict]) -> list[str]:
    """The features a pod's volumes need of its node (an image volume: image volumes),
    as a manifest writes them or as the API client's to_dict() gives them (None unset)."""
    return ["image volumes"] if any(v.get("image") for v in volumes) else []
