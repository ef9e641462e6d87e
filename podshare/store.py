"""Reports that outlive the runner pod: one ConfigMap per in-cluster run, in the
runner's own namespace, holding that run's results.json and junit.xml (gzip) and
summary.md; the newest KEEP are kept.

Why ConfigMaps: every cluster has them (a PersistentVolumeClaim needs a
provisioner, which many test clusters and the bundled one lack; an object store
needs credentials and a URL), they need only namespaced RBAC, `kubectl` reads
them, and a run's compressed reports are well below the API's 1 MiB limit on a
ConfigMap's data: 198 KB for every claim on three nodes with every probe
transcript (144 checks). Larger runs (more nodes, classes, dimensions) are
stored in steps until they fit: the summary compressed too, then the evidence
of passed checks left out, then all evidence (outcomes, messages and figures,
which the trend needs, always stay); results.json says what was left out. They
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
from .records import PASSED

LABEL = "podshare.io/report"  # not the gc labels: gc must never collect a report
KEEP = 30
PACKED = ("results.json", "junit.xml")  # gzip in binaryData
PLAIN = ("summary.md",)
LIMIT = 1024 * 1024  # what the API server accepts in a ConfigMap's data and binaryData
BUDGET = LIMIT - 32 * 1024  # headroom for the object's metadata
# How a run too large for one ConfigMap is made to fit, in order (see the docstring).
STEPS = ("everything", "summary compressed", "evidence of passed checks left out", "all evidence left out")


def _name(run_id: str) -> str:
    return f"podshare-run-{run_id}"


def _gz(content: bytes) -> str:
    return base64.b64encode(gzip.compress(content, mtime=0)).decode()


def _stored_as(results: dict[str, Any], step: str) -> bytes:
    """results.json as stored at `step`: what it leaves out of the evidence (passed
    checks' or all), and run.stored saying so (from "summary compressed" on, where
    only summary.md is compressed and nothing of the results is left out)."""
    keep = {"summary compressed": lambda c: True,
            "evidence of passed checks left out": lambda c: c.get("outcome") != PASSED}.get(step, lambda c: False)
    checks = [c if keep(c) else {**c, "evidence": {}, "diagnostics": [], "evidence_left_out": True}
              for c in results.get("checks", [])]
    left_out = "" if step == "summary compressed" else "; the run's own reports directory has every transcript"
    run = {**results.get("run", {}), "stored": f"{step}, to fit one ConfigMap (1 MiB){left_out}"}
    return json.dumps({**results, "run": run, "checks": checks}).encode()


def pack(reports: Path) -> tuple[dict[str, str], dict[str, str], str]:
    """A run's reports as a ConfigMap's binaryData and data, the first step (STEPS)
    at which they fit BUDGET, and that step. ValueError if even the last does not."""
    present = {name: (reports / name).read_bytes() for name in (*PACKED, *PLAIN) if (reports / name).exists()}
    for step in STEPS:
        files = dict(present)
        if step != "everything" and "results.json" in files:
            files["results.json"] = _stored_as(json.loads(files["results.json"]), step)
        plain = PLAIN if step == "everything" else ()
        binary = {f"{n}.gz": _gz(c) for n, c in files.items() if n not in plain}
        data = {n: c.decode() for n, c in files.items() if n in plain}
        size = sum(len(v) for v in binary.values()) + sum(len(v.encode()) for v in data.values())
        if size <= BUDGET:
            return binary, data, step
    raise ValueError(f"the run's reports take {size} bytes even with all evidence left out, more than one "
                     f"ConfigMap holds ({LIMIT} bytes): store fewer dimensions per run")


def save(kube: Kube, namespace: str, reports: Path, run_id: str, keep: int = KEEP) -> str:
    """Store a run's reports as a ConfigMap and drop the oldest beyond `keep`."""
    binary, data, step = pack(reports)
    name = _name(run_id)
    kube.create(namespace, {"apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": name, "labels": {LABEL: "run"},
                                         "annotations": {"podshare.io/stored": step}},
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


def fetch(kube: Kube, namespace: str, directory: Path, skipped: list[str] | None = None) -> list[str]:
    """Every stored run into `directory` as a history store (see podshare.history),
    and the newest run's junit.xml and summary.md beside it; returns the run ids.
    A ConfigMap that does not hold a run (unreadable, or an id or start that is not
    one: anyone with the runner's token can write them) is skipped, and said in
    `skipped`; nothing is written but under `directory`, by names built here."""
    runs = sorted(kube.list_labelled(namespace, "ConfigMap", f"{LABEL}=run"), key=lambda cm: cm.metadata.name)
    directory.mkdir(parents=True, exist_ok=True)
    ids = []
    for configmap in runs:
        try:
            results = _unpack(configmap, "results.json")
            if results is None:
                continue
            path = History.record(directory, json.loads(results))
        except (ValueError, OSError, EOFError) as exc:  # gzip, base64 and JSON errors are ValueErrors or EOF
            (skipped if skipped is not None else []).append(f"configmap/{configmap.metadata.name}: {exc}")
            continue
        ids.append(path.stem.split("Z-", 1)[1])
    if runs:
        for name in ("junit.xml", "summary.md"):
            content = _unpack(runs[-1], name)
            if content is not None:
                (directory / f"newest-{name}").write_bytes(content)
    return ids
