"""Probes delivered by the run, so the default probe image is the public Python
image with nothing to build (--probes-from configmap).

At the start of a run the factory puts the probes package and the posix_ipc
and sysv_ipc wheels shipped inside podshare (podshare/probe_wheels: the
versions and hashes of requirements.lock, CPython 3.11 for x86_64 and aarch64)
into one ConfigMap of the run's namespace. `deliver` then makes unpacking them
the first step of every container of the probe image: its command becomes
podshare/unpack_probes.py (run by the image's python3; the node's machine picks
the wheels), which unpacks into that container's own directory of an emptyDir
of the pod's own, on the container's PYTHONPATH, and then execs the container's
command. It works on the rendered pod, so --pod-manifest variants and the
pattern manifests get it without a line of their own.

Why not an init container: measured on the local cluster, one probe pod took
3.6 s to be ready with an unpacking init container against 1.6 s without (the
kubelet notices a finished init container on its next relist, a second apart),
while the unpacking itself takes about 30 ms; as the containers' first step it
costs those 30 ms, in parallel.

The copy lives in a volume no claim looks at: the claims name their volumes by
mount path (/data/disk, /data/memory, /data, /logs); this one is mounted at
DELIVERED and named after podshare.
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

VOLUME = "podshare-delivered-probes"  # the emptyDir the probes are unpacked into, a directory per container
BUNDLE_VOLUME = "podshare-probes-bundle"  # the ConfigMap, read-only
DELIVERED = "/opt/podshare-delivered"
BUNDLE = "/opt/podshare-bundle"


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


def deliver(spec: dict, image: str, configmap_name: str) -> None:
    """Give a rendered pod spec the delivered probes: every container of `image`
    (init containers too: a native sidecar, a data loader) unpacks them first
    into its own directory, on its PYTHONPATH, then runs its command as before
    (same process). A container without a command of its own is left alone."""
    users = [c for c in spec.get("initContainers", []) + spec.get("containers", [])
             if c.get("image") == image and c.get("command")]
    if not users:
        return
    for c in users:
        where = f"{DELIVERED}/{c['name']}"
        c["command"] = ["python3", f"{BUNDLE}/unpack.py", BUNDLE, where, "--", *c["command"], *(c.get("args") or [])]
        c.pop("args", None)
        # the unpacker's one-line complaint (a wrong Python, an unknown machine) reaches the pod's status
        c["terminationMessagePolicy"] = "FallbackToLogsOnError"
        c["env"] = [e for e in c.get("env") or [] if e.get("name") != "PYTHONPATH"] + [
            {"name": "PYTHONPATH", "value": where}]
        c["volumeMounts"] = [*(c.get("volumeMounts") or []), {"name": VOLUME, "mountPath": DELIVERED},
                             {"name": BUNDLE_VOLUME, "mountPath": BUNDLE, "readOnly": True}]
    spec["volumes"] = [*(spec.get("volumes") or []), {"name": VOLUME, "emptyDir": {"sizeLimit": "32Mi"}},
                       {"name": BUNDLE_VOLUME, "configMap": {"name": configmap_name}}]
