"""Probes delivered by the run, so the default probe image is the public Python
image with nothing to build (--probes-from configmap).

At the start of a run the factory puts the probes package and the posix_ipc
and sysv_ipc wheels shipped inside podshare (podshare/probe_wheels: the
versions and hashes of requirements.lock, CPython 3.11 for x86_64 and aarch64)
into one ConfigMap of the run's namespace. `deliver` then gives every pod whose
containers use the probe image an init container of that same image that
unpacks them (podshare/unpack_probes.py: the node's machine picks the wheels)
into an emptyDir of its own, and puts that on the containers' PYTHONPATH. It
works on the rendered pod, so --pod-manifest variants and the pattern
manifests get it without a line of their own.

The copy lives in a volume no claim looks at: the claims name their volumes by
mount path (/data/disk, /data/memory, /data, /logs); this one is mounted
read-only at DELIVERED and named after podshare.
"""
from __future__ import annotations

import base64
import functools
import importlib.util
import io
import zipfile
from pathlib import Path

from .unpack_probes import PACKAGES, wheel_for

WHEELS = Path(__file__).resolve().parent / "probe_wheels"  # package data, filled by cluster/probe_wheels.py
UNPACK = Path(__file__).resolve().parent / "unpack_probes.py"
MACHINES = ("x86_64", "aarch64")
CONFIGMAP_LIMIT = 1 << 20  # the API's limit on a ConfigMap's data and binaryData together

INIT_CONTAINER = "podshare-unpack-probes"
VOLUME = "podshare-delivered-probes"  # the emptyDir the probes are unpacked into
BUNDLE_VOLUME = "podshare-probes-bundle"  # the ConfigMap, in the init container only
DELIVERED = "/opt/podshare-delivered"
BUNDLE = "/opt/podshare-bundle"
UID = 65532  # the probe pods' user; the init container names it itself, so it is restricted in any variant


def missing_wheels() -> list[str]:
    """The (package, machine) pairs without a shipped wheel, e.g. ["sysv_ipc aarch64"],
    by the pod's own rule for picking one."""
    return [f"{p} {m}" for p in PACKAGES for m in MACHINES if wheel_for(WHEELS, p, m) is None]


def _probes_zip() -> bytes:
    """The probes package's sources, as installed beside podshare (a checkout or a wheel)."""
    source = Path(importlib.util.find_spec("probes").submodule_search_locations[0])
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(source.glob("*.py")):
            info = zipfile.ZipInfo(f"probes/{path.name}", date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr, info.compress_type = 0o644 << 16, zipfile.ZIP_DEFLATED
            z.writestr(info, path.read_bytes())
    return out.getvalue()


@functools.lru_cache(maxsize=1)
def bundle() -> dict[str, bytes]:
    """The ConfigMap's files: the unpacker, the probes and the wheels of both machines."""
    files = {"unpack.py": UNPACK.read_bytes(), "probes.zip": _probes_zip()}
    for wheel in sorted(WHEELS.glob("*.whl")):
        files[wheel.name] = wheel.read_bytes()
    return files


def configmap() -> dict:
    """The ConfigMap template (render names and labels it)."""
    files = bundle()
    size = sum(len(data) for data in files.values())
    if size > CONFIGMAP_LIMIT:  # the API would refuse it with less to say
        raise ValueError(f"the delivered probes are {size} bytes, over a ConfigMap's {CONFIGMAP_LIMIT}")
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "podshare-probes", "annotations": {"podshare.io/bytes": str(size)}},
            "binaryData": {name: base64.b64encode(data).decode() for name, data in files.items()}}


def unpack_container(image: str, pull_policy: str) -> dict:
    return {
        "name": INIT_CONTAINER, "image": image, "imagePullPolicy": pull_policy,
        "command": ["python3", f"{BUNDLE}/unpack.py", BUNDLE, DELIVERED],
        # its one-line complaint (a wrong Python, an unknown machine) reaches the pod's status
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID,
                            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "volumeMounts": [{"name": BUNDLE_VOLUME, "mountPath": BUNDLE, "readOnly": True},
                         {"name": VOLUME, "mountPath": DELIVERED}],
    }


def deliver(spec: dict, image: str, configmap_name: str, pull_policy: str) -> None:
    """Give a rendered pod spec the delivered probes: every container of `image`
    (init containers too: a native sidecar, a data loader) gets the unpacked copy
    read-only and on its PYTHONPATH; the unpacking init container runs first."""
    users = [c for c in spec.get("initContainers", []) + spec.get("containers", []) if c.get("image") == image]
    if not users:
        return
    for c in users:
        c["env"] = [e for e in c.get("env") or [] if e.get("name") != "PYTHONPATH"] + [
            {"name": "PYTHONPATH", "value": DELIVERED}]
        c["volumeMounts"] = [*(c.get("volumeMounts") or []), {"name": VOLUME, "mountPath": DELIVERED, "readOnly": True}]
    spec["volumes"] = [*(spec.get("volumes") or []), {"name": VOLUME, "emptyDir": {"sizeLimit": "16Mi"}},
                       {"name": BUNDLE_VOLUME, "configMap": {"name": configmap_name}}]
    spec["initContainers"] = [unpack_container(image, pull_policy), *(spec.get("initContainers") or [])]
