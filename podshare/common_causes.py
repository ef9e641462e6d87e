"""Several claims failing with one errno for one container are one cause: shown
once in Needs attention, with what the evidence recorded with the probe pod says
about why (the containers' uids and groups, the refused objects' owners and
modes, the mounts of the places the answers name)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .records import FAILED, Check, ClusterFacts

_ERRNO = re.compile(r"\b(E[A-Z]{2,})\b")
REFUSALS = ("EACCES", "EPERM")  # explained by who the containers run as and who owns what
ABSENCES = ("ENOENT", "EROFS")  # explained by what each container mounts where

Flagged = tuple[Check, "str | None"]  # a check that needs attention, with the history's verdict on it


@dataclass
class CommonCause:
    """Several claims failing with one errno for one container: one cause, shown once."""
    errno: str
    who: str  # the container the messages name first (beta could not open ...)
    checks: list[Flagged]
    why: str  # what the evidence says about it: uids and modes, mounts

    @property
    def headline(self) -> str:
        return f"{len(self.checks)} claims, one cause: {self.who} got {self.errno}"


def common_causes(cluster: ClusterFacts, attention: list[Flagged]) -> tuple[list[CommonCause], list[Flagged]]:
    """Needs attention with failures of one errno for one container (on one node and
    RuntimeClass) grouped: the groups, each with what the evidence says about why,
    and the rest as they were."""
    groups: dict[tuple, list[Flagged]] = {}
    for c, v in attention:
        codes = set(_ERRNO.findall(c.message))
        if c.outcome == FAILED and len(codes) == 1:
            who = c.message.split()[0].removesuffix("'s") if c.message.strip() else ""
            groups.setdefault((codes.pop(), who, c.node, c.runtime_class), []).append((c, v))
    causes = [CommonCause(errno, who, members, _why(cluster, errno, [c for c, _ in members]))
              for (errno, who, _n, _k), members in groups.items() if len(members) > 1]
    grouped = {id(c) for cause in causes for c, _ in cause.checks}
    return causes, [(c, v) for c, v in attention if id(c) not in grouped]


def _answers(checks: list[Check], errno: str) -> list[dict[str, Any]]:
    return [t["result"] for c in checks for t in c.evidence.get("transcript", [])
            if isinstance(t.get("result"), dict) and t["result"].get("errno") == errno]


def _why(cluster: ClusterFacts, errno: str, checks: list[Check]) -> str:
    """The probe containers' uids and groups (refusals), the refused objects' owners
    and modes, and the containers' mounts of the places the answers name (absences,
    read-only file systems), from the evidence recorded with the probe pod."""
    pods = [t["pod"] for c in checks for t in c.evidence.get("transcript", [])]
    known = cluster.probe_containers
    containers = next((known[p] for p in pods if p in known), {})
    answers = _answers(checks, errno)
    parts = []
    if errno in REFUSALS and containers:
        parts.append("; ".join(f"{name} runs as uid {i['uid']}, gid {i['gid']} (groups "
                               f"{', '.join(map(str, i.get('groups') or [])) or 'none'})"
                               for name, i in containers.items()))
    owners = list(dict.fromkeys(_owner(a["object"]) for a in answers if a.get("object"))) \
        if errno in REFUSALS else []
    if owners:
        parts.append("; ".join(owners[:4]) + (f" and {len(owners) - 4} more" if len(owners) > 4 else ""))
    if errno in ABSENCES and containers:
        paths = {a.get("path") or "" for a in answers}
        points = sorted({point for point in _points(containers) for p in paths if p.startswith(point.rstrip("/") + "/")})
        parts += [f"{name} mounts {point} from {m['root']} ({m['fstype']}, device {m['device']}"
                  f"{', read-only' if m.get('read_only') else ''})"
                  for point in points for name, i in containers.items()
                  for m in [(i.get("mounts") or {}).get(point)] if m]
    return "; ".join(parts) or "the evidence of each claim shows the answers"


def _owner(found: dict[str, Any]) -> str:
    """A refused object's owner and mode, as the probe read them."""
    what = found.get("path") or f"the System V {found.get('kind')} of key {found.get('key')}"
    return f"{what} is mode {found['mode']}, owner {found['uid']}:{found['gid']}"


def _points(containers: dict[str, dict]) -> set[str]:
    return {point for i in containers.values() for point in (i.get("mounts") or {})}
