"""Known divergences as configuration: what an operator accepts that a
RuntimeClass, a node pool, a user-namespace setting or a StorageClass breaks (--known-divergences,
a YAML list), both ways: a listed claim that fails where it is listed, the way
its entry says it does (`seen`, podshare.signatures), is a known divergence,
not a failure; one that fails otherwise is a failure; one that holds there
fails the run (the list is out of date), unless its entry says `intermittent:
true`: a race the runtime loses only sometimes, where holding is a pass that
names the entry."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from . import signatures


@dataclass
class KnownDivergences:
    """What an operator accepts that a RuntimeClass, a node pool or a StorageClass
    breaks: claim id (a pattern where * matches anything) x where -> reason. Loaded
    from a YAML list of {claim, reason} with the place: runtime_class, node_selector
    (a label selector), storage_class (a volume claim on a PVC of that class), any of
    them together (all must hold), or `where:` a list of such places (any of them),
    as one runtime is met both as a class and as a pool's default."""
    entries: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, paths: str | Sequence[str] | None) -> "KnownDivergences":
        """One file, or several (a runtime's and a StorageClass's): their entries in
        the order given, as `entry` tries them."""
        if isinstance(paths, str):
            paths = [paths] if paths else []
        entries = []
        for path in paths or ():
            entries += cls._load_one(path)
        return cls(entries)

    @staticmethod
    def _load_one(path: str) -> list[dict[str, Any]]:
        import yaml
        entries = yaml.safe_load(Path(path).read_text()) or []
        if not isinstance(entries, list) or not all(
                isinstance(e, dict) and {"claim", "reason", "seen"} <= set(e) and signatures.valid(e["seen"])
                and isinstance(e.get("intermittent", False), bool) and all(
                    isinstance(p, dict) and p and set(p) <= PLACE_KEYS for p in places(e))
                for e in entries):
            raise ValueError(f"{path}: expected a list of {{claim, reason, seen (what the failure looks like: "
                             "'STEP: ERRNO', 'evidence FIELD: VALUE' or 'message: WORDS', or a list of them), and "
                             "runtime_class, node_selector, user_namespaces and/or storage_class (or where: a list of them), and "
                             "intermittent: true where the divergence comes and goes}}")
        return entries

    def match(self, claim_id: str, runtime_class: str | None, node_labels: dict[str, str] | None = None,
              user_namespaces: bool | None = None, volume: str | None = None) -> str | None:
        """The reason a claim is listed where it ran, or None (see `entry`)."""
        found = self.entry(claim_id, runtime_class, node_labels, user_namespaces, volume)
        return found["reason"] if found else None

    def entry(self, claim_id: str, runtime_class: str | None, node_labels: dict[str, str] | None = None,
              user_namespaces: bool | None = None, volume: str | None = None) -> dict[str, Any] | None:
        """The entry that lists a claim where it ran; in `claim`, only * is a
        wildcard (ids have literal brackets: test_x[disk]); node_selector is
        k=v[,k=v...] (or k: the label is set), matched against the node's labels;
        runtime_class `default` is a pod that names none (the node's own runtime);
        user_namespaces true or false holds only for pods with (or without) user
        namespaces of their own (--user-namespaces), absent for either;
        storage_class holds only for a claim whose volume dimension is a PVC of
        that class (`volume` pvc:<class>; `default` is --storage-class default)."""
        for e in self.entries:
            if not re.fullmatch(re.escape(e["claim"]).replace(r"\*", ".*"), claim_id):
                continue
            for place in places(e):
                if "runtime_class" in place and place["runtime_class"] != (runtime_class or "default"):
                    continue  # "default": the pod named no class, so it ran under the node's default runtime
                if "node_selector" in place and (node_labels is None or not selects(place["node_selector"], node_labels)):
                    continue
                if "user_namespaces" in place and place["user_namespaces"] is not bool(user_namespaces):
                    continue
                if "storage_class" in place and volume != f"pvc:{place['storage_class']}":
                    continue
                return e
        return None

    def __bool__(self) -> bool:
        return bool(self.entries)


PLACE_KEYS = frozenset({"runtime_class", "node_selector", "user_namespaces", "storage_class"})


def places(entry: dict[str, Any]) -> list[dict[str, str]]:
    if "where" in entry:
        return entry["where"] if isinstance(entry["where"], list) else []
    return [{k: entry[k] for k in PLACE_KEYS if k in entry}]


def selects(selector: str, labels: dict[str, str]) -> bool:
    """Equality-based label selector: every k=v holds (a bare k: the label is set)."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        key, eq, value = term.partition("=")
        if key.strip() not in labels or (eq and labels[key.strip()] != value.strip()):
            return False
    return True
