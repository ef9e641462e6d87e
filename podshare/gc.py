"""Garbage collection of what killed runs left behind (SIGKILL, a lost node,
a CI runner that vanished). Only objects with podshare's labels are touched:
the managed-by label AND a run id, older than the given age."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from . import MANAGED_BY, RUN_ID_LABEL
from .kube import Kube

SELECTOR = ",".join(f"{k}={v}" for k, v in MANAGED_BY.items()) + f",{RUN_ID_LABEL}"
KINDS = ("Pod", "Service", "ConfigMap")


@dataclass
class Orphan:
    kind: str
    name: str
    namespace: str | None
    run_id: str
    age_s: float

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind.lower()} {where}{self.name} (run {self.run_id}, {self.age_s / 60:.0f} min old)"


def _age(created: dt.datetime) -> float:
    return (dt.datetime.now(dt.timezone.utc) - created).total_seconds()


def find_orphans(kube: Kube, older_than_s: float, namespace: str | None = None,
                 run_id: str | None = None) -> list[Orphan]:
    """Generated namespaces of earlier runs, or, inside a given namespace, the
    pods, services and config maps of earlier runs."""
    found = []
    selector = SELECTOR if run_id is None else SELECTOR.replace(RUN_ID_LABEL, f"{RUN_ID_LABEL}={run_id}")
    if namespace is None:
        for ns in kube.list_namespaces(selector):
            found.append(Orphan("Namespace", ns.metadata.name, None, ns.metadata.labels[RUN_ID_LABEL],
                                _age(ns.metadata.creation_timestamp)))
    else:
        for kind in KINDS:
            for obj in kube.list_labelled(namespace, kind, selector):
                found.append(Orphan(kind, obj.metadata.name, namespace, obj.metadata.labels[RUN_ID_LABEL],
                                    _age(obj.metadata.creation_timestamp)))
    return [o for o in found if o.age_s >= older_than_s]


def collect(kube: Kube, orphans: list[Orphan], timeout: float) -> list[str]:
    """Delete the orphans; returns what could not be removed in time."""
    remaining = []
    for o in orphans:
        if o.kind == "Namespace":
            remaining += kube.delete_namespace(o.name, timeout=timeout)
        else:
            kube.delete(o.namespace, o.kind, o.name)
    return remaining
