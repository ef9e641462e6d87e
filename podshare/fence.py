"""A podshare namespace's fence and quota (manifests/fence.yaml): the
NetworkPolicy that keeps the run's pods to themselves, the ResourceQuota and
LimitRange that bound what a run (or a stolen token) can take. The run makes
them in the namespace it makes, before any pod: in a namespace labelled
podshare.io/fenced=true the admission policies podshare-fence and podshare-quota
refuse every pod until they exist (docs/security.md)."""
from __future__ import annotations

from .errors import KubeError
from .kube import Kube
from .manifests import load_manifests
from .retry import NotYet, wait_until

FENCED_LABEL = "podshare.io/fenced"
FENCED = {FENCED_LABEL: "true"}
QUOTA = "podshare-quota"


def pod_security(level: str) -> dict[str, str]:
    """The Pod Security labels that enforce one level on a namespace (and warn and audit it)."""
    return {f"pod-security.kubernetes.io/{mode}": level for mode in ("enforce", "warn", "audit")}


def documents() -> list[dict]:
    return load_manifests("fence.yaml")


def install(kube: Kube, namespace: str, timeout: float = 30) -> None:
    """Create the fence, the quota and the limits in `namespace` (one that exists
    already: kept, it is the namespace's), then wait until the quota counts."""
    for doc in documents():
        try:
            kube.create(namespace, doc)
        except KubeError as exc:
            if exc.status != 409:
                raise

    def counting():
        if not kube.quota_counting(namespace, QUOTA):
            raise NotYet(f"the ResourceQuota {QUOTA} in {namespace} has not counted yet")
    wait_until(counting, timeout=timeout, what=f"the ResourceQuota {QUOTA} in {namespace} to count")
