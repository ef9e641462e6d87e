"""What the local cluster runs on top of Kubernetes, applied by `up` from a
manifest with its placeholders filled: the local-path provisioner, the
default StorageClass (cluster/local-path.yaml), the shared file system's classes
(cluster/shared-sshfs.yaml, and cluster/shared-sshfs-rwx.yaml with its CSIDriver), and GKE Sandbox's emptyDir
hints for RuntimeClass gvisor-hinted (cluster/gvisor-hints.yaml)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import yaml

# kind -> (API path prefix, namespaced): the kinds the add-ons' manifests use
PATHS = {
    "Namespace": ("/api/v1", False), "ServiceAccount": ("/api/v1", True), "ConfigMap": ("/api/v1", True),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", True), "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", True),
    "ClusterRole": ("/apis/rbac.authorization.k8s.io/v1", False),
    "ClusterRoleBinding": ("/apis/rbac.authorization.k8s.io/v1", False),
    "Deployment": ("/apis/apps/v1", True), "StorageClass": ("/apis/storage.k8s.io/v1", False),
    "CSIDriver": ("/apis/storage.k8s.io/v1", False),
    "MutatingAdmissionPolicy": ("/apis/admissionregistration.k8s.io/v1", False),
    "MutatingAdmissionPolicyBinding": ("/apis/admissionregistration.k8s.io/v1", False),
}


class AddonError(Exception):
    pass


def apply(manifest: Path, filled: dict[str, str], post: Callable[[str, dict], tuple[int, dict]]) -> list[str]:
    """Create every object of `manifest` (placeholders replaced by `filled`) through
    `post(path, body)`; returns what it made, as kind/name."""
    text = manifest.read_text()
    for placeholder, value in filled.items():
        text = text.replace(placeholder, value)
    made = []
    for doc in filter(None, yaml.safe_load_all(text)):
        kind, meta = doc["kind"], doc["metadata"]
        prefix, namespaced = PATHS[kind]
        plural = (kind.lower()[:-1] + "ies" if kind.endswith("y") else
                  kind.lower() + ("es" if kind.endswith("s") else "s"))
        path = f"{prefix}/namespaces/{meta['namespace']}/{plural}" if namespaced else f"{prefix}/{plural}"
        code, answer = post(path, doc)
        if code not in (200, 201):
            raise AddonError(f"creating {kind} {meta['name']}: HTTP {code}: {str(answer)[:300]}")
        made.append(f"{kind}/{meta['name']}")
    return made
