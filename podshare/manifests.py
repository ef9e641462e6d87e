"""The manifests the pod layer renders: manifests/ (shipped inside the package
in a wheel), a --pod-manifest's checks, and the one render that fills a
template with this run's names, labels, images, node and RuntimeClass.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

from . import MANAGED_BY, POD_LABEL, RUN_ID_LABEL
from .delivery import deliver
from .records import volume_id, volume_path

# Inside the package when installed from a wheel; at the top of a checkout otherwise.
MANIFESTS = next(p for p in (Path(__file__).resolve().parent / "manifests",
                             Path(__file__).resolve().parent.parent / "manifests") if p.is_dir())


def fill(text: str, values: dict[str, str]) -> str:
    """A template's placeholders (whole words, not a YAML key) replaced, comments kept for the reader."""
    return re.sub(r"\b(" + "|".join(values) + r")\b(?!:)", lambda m: values[m[1]], text)


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


def keep_off_nodes(spec: dict, nodes: list[str]) -> None:
    """Keep a pod the scheduler places off these nodes (by name, through the scheduler)."""
    spec.setdefault("affinity", {})["nodeAffinity"] = {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            # one requirement per node (ANDed): a field selector's NotIn takes one value
            {"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": [n]} for n in sorted(nodes)]}]}}


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
        sources = [volume] + (volume.get("projected") or {}).get("sources", [])
        for source in (s["configMap"] for s in sources if "configMap" in s):
            source["name"] = renamed.get(source["name"], source["name"])
    images = {"PROBE_IMAGE": settings.probe_image, "NGINX_IMAGE": settings.nginx_image}  # the manifests' placeholders
    for c in spec.get("initContainers", []) + spec.get("containers", []):
        c["image"] = images.get(c.get("image"), c.get("image"))
        c["imagePullPolicy"] = settings.image_pull_policy
    for volume in spec.get("volumes", []):  # image volumes (KEP-4639) of the same images, pulled alike
        if "image" in volume and volume["image"].get("reference") in images:
            volume["image"] = {"reference": images[volume["image"]["reference"]],
                               "pullPolicy": settings.image_pull_policy}
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


# What a probe pod asks of a StorageClass: small (the claims write a few MiB), one node.
CLAIM_SIZE = "64Mi"


def with_volume_claim(manifest: dict, kind: str, run_id: str) -> dict:
    """A probe pod template with a PersistentVolumeClaim of `kind` ("pvc:<class>",
    "pvc:default" for the cluster's default class) as a generic ephemeral volume,
    mounted in every container where volume claims look for it: made with the pod,
    gone with it, so nothing outlives the run."""
    body = copy.deepcopy(manifest)
    storage_class = kind.removeprefix("pvc:")
    spec = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": CLAIM_SIZE}}}
    if storage_class != "default":  # none named: the API server's DefaultStorageClass admission fills it in
        spec["storageClassName"] = storage_class
    name = volume_id(kind)
    body["spec"].setdefault("volumes", []).append({"name": name, "ephemeral": {"volumeClaimTemplate": {
        "metadata": {"labels": {**MANAGED_BY, RUN_ID_LABEL: run_id}}, "spec": spec}}})
    for c in body["spec"]["containers"]:  # a new list each: YAML aliases share the template's between containers
        c["volumeMounts"] = [*c.get("volumeMounts", []), {"name": name, "mountPath": volume_path(kind)}]
    return body
