"""How big a Memory emptyDir is when its sizeLimit does not say. The kubelet
sizes the tmpfs to the pod's memory limit (the sum of its containers' limits,
or the pod's own limit, KEP-2837), at most the node's allocatable memory; a
sizeLimit counts only below that (kubernetes#76263, #108291). A runtime that
mounts the volume its own way may size it otherwise: a tmpfs sized to the node
is one a container can fill the node's memory with, whatever its limit."""
from __future__ import annotations

import pytest
from kubernetes.utils import parse_quantity

from podshare.evidence import describe

pytestmark = [pytest.mark.memory, pytest.mark.manifest("patterns/memory-sizes.yaml")]

MIB = 1 << 20
VOLUMES = {"/data/unbounded": "no sizeLimit", "/data/roomy": "a sizeLimit of 1Gi"}
CONTAINERS = ("alpha", "beta")


def _sizes(pod) -> dict[str, dict[str, dict]]:
    """Each container's statfs of each volume."""
    return {c: {path: pod.container(c).run("filesystem", path=path) for path in VOLUMES} for c in CONTAINERS}


def _limits(pod) -> dict[str, int]:
    """The memory limits the API has for the pod's containers, and the pod's own, in bytes."""
    spec = pod.read().spec
    limits = {c.name: int(parse_quantity((c.resources.limits or {})["memory"]))
              for c in spec.containers if c.resources and (c.resources.limits or {}).get("memory")}
    own = getattr(spec, "resources", None)
    if own is not None and (own.limits or {}).get("memory"):
        limits["pod"] = int(parse_quantity(own.limits["memory"]))
    return limits


def _check(sizes: dict, expected: int, because: str) -> None:
    for container, answers in sizes.items():
        for path, fs in answers.items():
            assert fs.get("ok"), f"{container} cannot stat the Memory emptyDir at {path}: {describe(fs)}"
            # the medium itself is test_volumes' claim (gVisor shows the host's tmpfs through its gofer, as 9p)
            assert fs["size_bytes"] == expected, (
                f"{container}'s Memory emptyDir at {path} ({VOLUMES[path]}) holds {fs['size_bytes'] / MIB:.1f} MiB "
                f"({fs['fstype']}), not {expected / MIB:.0f} MiB, {because}"
                + (": more than the pod may use, so a writer meets its memory limit before the volume's end"
                   if fs["size_bytes"] > expected else ""))


def test_a_memory_volume_without_a_size_limit_is_sized_to_the_pods_memory_limit(pattern_pods, evidence):
    """alpha (limit 256Mi) and beta (128Mi): both Memory emptyDirs, the one without
    a sizeLimit and the one whose 1Gi exceeds the pod's memory, are 384 MiB (as
    statfs tells) in both containers, the sum of the containers' limits."""
    pod = pattern_pods["Pod/podshare-memsize"]
    limits, sizes = _limits(pod), _sizes(pod)
    evidence.update(memory_limits=limits, filesystems=sizes)
    expected = sum(limits[c] for c in CONTAINERS)
    _check(sizes, expected, "the pod's memory limit (alpha's " + f"{limits['alpha'] / MIB:.0f} Mi + beta's "
           f"{limits['beta'] / MIB:.0f} Mi)")


@pytest.mark.needs("pod-level resources")
def test_with_pod_level_resources_the_pods_own_limit_sizes_the_volume(pattern_pods, evidence):
    """A pod-level memory limit of 320Mi over containers limited to 256Mi each:
    both Memory emptyDirs are 320 MiB (as statfs tells) in both containers, the pod's own
    limit, not the 512 MiB its containers' limits add up to."""
    pod = pattern_pods["Pod/podshare-memsize-pod-level"]
    limits, sizes = _limits(pod), _sizes(pod)
    evidence.update(memory_limits=limits, filesystems=sizes)
    assert "pod" in limits, ("the API server dropped the pod's own resources (spec.resources): it knows no "
                             "pod-level resources, so the pod is limited by its containers")
    _check(sizes, limits["pod"], f"the pod's own memory limit ({limits['pod'] / MIB:.0f} Mi; its containers' add "
           f"up to {sum(limits[c] for c in CONTAINERS) / MIB:.0f} Mi)")
