"""Reports that outlive the runner pod: one ConfigMap per in-cluster run, in the
runner's own namespace, holding that run's results.json and junit.xml (gzip) and
summary.md; the newest KEEP are kept.

Why ConfigMaps: every cluster has them (a PersistentVolumeClaim needs a
provisioner, which many test clusters and the bundled one lack; an object store
needs credentials and a URL), they need only namespaced RBAC, `kubectl` reads
them, and a run's compressed results are far below the 1 MiB limit (about 110
KiB for all claims on three RuntimeClasses with every probe transcript). They
are also the history: the next run reads them back for its trend, and
`podshare fetch` gives an operator the same store on disk."""
from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path
from typing import Any

from .history import History
from .kube import Kube

LABEL = "podshare.io/report"  # not the gc labels: gc must never collect a report
KEEP = 30
PACKED = ("results.json", "junit.xml")  # gzip in binaryData
PLAIN = ("summary.md",)


def _name(run_id: str) -> str:
    return f"podshare-run-{run_id}"


def save(kube: Kube, namespace: str, reports: Path, run_id: str, keep: int = KEEP) -> str:
    """Store a run's reports as a ConfigMap and drop the oldest beyond `keep`."""
    binary = {f"{name}.gz": base64.b64encode(gzip.compress((reports / name).read_bytes(), mtime=0)).decode()
              for name in PACKED if (reports / name).exists()}
    data = {name: (reports / name).read_text() for name in PLAIN if (reports / name).exists()}
    name = _name(run_id)
    kube.create(namespace, {"apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": name, "labels": {LABEL: "run"}},
                            "binaryData": binary, "data": data})
    stored = sorted(cm.metadata.name for cm in kube.list_labelled(namespace, "ConfigMap", f"{LABEL}=run"))
    for old in stored[:-keep] if keep else []:  # run ids begin with the time: oldest first
        kube.delete(namespace, "ConfigMap", old)
    return name


def _unpack(configmap: Any, name: str) -> bytes | None:
    packed = (configmap.binary_data or {}).get(f"{name}.gz")
    if packed is not None:
        return gzip.decompress(base64.b64decode(packed))
    plain = (configmap.data or {}).get(name)
    return plain.encode() if plain is not None else None


def fetch(kube: Kube, namespace: str, directory: Path) -> list[str]:
    """Every stored run into `directory` as a history store (see podshare.history),
    and the newest run's junit.xml and summary.md beside it; returns the run ids."""
    runs = sorted(kube.list_labelled(namespace, "ConfigMap", f"{LABEL}=run"), key=lambda cm: cm.metadata.name)
    directory.mkdir(parents=True, exist_ok=True)
    ids = []
    for configmap in runs:
        results = _unpack(configmap, "results.json")
        if results is None:
            continue
        History.record(directory, json.loads(results))
        ids.append(configmap.metadata.name.removeprefix("podshare-run-"))
    if runs:
        for name in ("junit.xml", "summary.md"):
            content = _unpack(runs[-1], name)
            if content is not None:
                (directory / f"newest-{name}").write_bytes(content)
    return ids
