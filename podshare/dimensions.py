"""Where each claim runs, as pytest sees it: the run's dimensions (records.AXES)
become session-scoped parameters of the claims, and each collected claim reads
its Dimensions back from its parameters, never from its id.

A claim's id carries one segment per dimension (test_x[disk-vm-current-gvisor]);
the matrix row (claim id) is that id without them. Node names may hold dashes,
so a dimension's segment is removed as a whole run of "-"-separated tokens.
"""
from __future__ import annotations

import math

import pytest

from .records import AXES, EMPTY_DIR, MEMORY, Dimensions, NotApplicable
from .settings import USER_NAMESPACE_MODES, Settings


def of_item(item: pytest.Item) -> Dimensions:
    """The claim's dimensions, from its parameters (None where one is not a dimension of the run)."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    found = {a.name: params.get(a.name) for a in AXES}
    closest = getattr(item, "get_closest_marker", None)  # an item as pytest makes it (a stand-in may lack it)
    marked = closest("volume_kind") if closest else None  # a claim on a volume kind of its own (image, configMap...)
    if found["volume"] is None and marked is not None:
        found["volume"] = marked.args[0]
    return Dimensions(**found)


def run_values(settings: Settings, nodes: list[str] | None) -> dict[str, list]:
    """Each dimension's values in this run, by Axis name (none: not a dimension of
    the run): the one place a dimension's values come from."""
    return {"node": list(nodes or []), "runtime_class": list(settings.runtime_class),
            "user_namespaces": list(USER_NAMESPACE_MODES[settings.user_namespaces]),
            "volume": volume_kinds(settings)}


def parametrize(metafunc: pytest.Metafunc, settings: Settings, nodes: list[str] | None) -> None:
    """Every claim once per node (`nodes`, for --all-nodes and --node-selector), per
    --runtime-class and per --user-namespaces setting: session-scoped parameters,
    so each combination gets its own pods and the claims are grouped by them; and
    every volume claim once per volume kind (the emptyDirs, a PVC per --storage-class),
    which share those pods."""
    values = run_values(settings, nodes)
    if claims_only(metafunc.definition):  # pods that mount one claim together, a claim's size: --storage-class
        values["volume"] = [v for v in values["volume"] if v.startswith("pvc:")]
    per_module = metafunc.definition.get_closest_marker("volume_per_module") is not None
    for axis in AXES:
        if values[axis.name] and axis.name in metafunc.fixturenames:
            scope = "session" if axis.splits else "module" if axis.name == "volume" and per_module else "function"
            metafunc.parametrize(axis.name, values[axis.name], indirect=True, scope=scope,
                                 ids=[axis.id(v) for v in values[axis.name]])


def volume_kinds(settings: Settings) -> list[str]:
    """The kinds of shared volume a volume claim runs on."""
    return [EMPTY_DIR, MEMORY, *(f"pvc:{c}" for c in settings.storage_class)]


def segments_of_run(settings: Settings, nodes: list[str]) -> list[str]:
    """Every id segment of a dimension that splits the run's pods (a worker's group)."""
    values = run_values(settings, nodes)
    return [axis.id(v) for axis in AXES if axis.splits for v in values[axis.name]]


def groups_of_run(settings: Settings, nodes: list[str]) -> int:
    """How many sets of pods the run's dimensions make (each a worker's at most)."""
    values = run_values(settings, nodes)
    return math.prod(len(values[axis.name]) or 1 for axis in AXES if axis.splits)


def _without(tokens: list[str], segment: str) -> tuple[list[str], bool]:
    """`tokens` with the last whole run of `segment`'s tokens removed (vm-current is not vm)."""
    wanted = segment.split("-")
    for start in range(len(tokens) - len(wanted), -1, -1):
        if tokens[start:start + len(wanted)] == wanted:
            return tokens[:start] + tokens[start + len(wanted):], True
    return tokens, False


def _params(nodeid: str) -> tuple[str, list[str]]:
    if not nodeid.endswith("]") or "[" not in nodeid:
        return nodeid, []
    base, ids = nodeid[:-1].split("[", 1)
    return base, ids.split("-")


def check_id(item: pytest.Item) -> str:
    """The claim's id as a checkout names it (suites/test_x.py::test_y[...]), also
    when the installed suites run (`podshare run`, the runner image), so known
    divergences and a history match across the two."""
    _, _, rest = item.nodeid.partition("::")
    return f"suites/{item.path.name}::{rest}" if item.path.parent.name == "suites" and rest else item.nodeid


def claim_id(item: pytest.Item) -> str:
    """The claim without its dimensions: one row of the matrix
    (test_x[disk-node-b-gvisor-userns] -> test_x[disk]; a session-scoped parameter
    may also come first: test_y[gvisor-unix] -> test_y[unix])."""
    base, tokens = _params(check_id(item))
    for segment in reversed(of_item(item).id_segments()):
        tokens, _ = _without(tokens, segment)
    return f"{base}[{'-'.join(tokens)}]" if tokens else base


def group_of(nodeid: str, segments: list[str]) -> str:
    """The side-by-side group of a claim's id (its dimensions' segments, sorted), for
    the xdist controller, which sees ids only; longest segments are taken first."""
    _, tokens = _params(nodeid)
    found = []
    for segment in sorted(segments, key=len, reverse=True):
        tokens, there = _without(tokens, segment)
        if there:
            found.append(segment)
    return "|".join(sorted(found)) or "default"


def deselect(config: pytest.Config, items: list[pytest.Item], drop) -> list[pytest.Item]:
    """Like -m: the items `drop` says no to are deselected (and returned)."""
    dropped = [i for i in items if drop(i)]
    if dropped:
        items[:] = [i for i in items if not drop(i)]
        config.hook.pytest_deselected(items=dropped)
    return dropped


def claims_only(item) -> bool:
    """A claim about PersistentVolumeClaims only: the across-pod claims, and those
    marked pvc_only (a claim's size)."""
    return "across" in getattr(item, "fixturenames", ()) or item.get_closest_marker("pvc_only") is not None


def across_without_a_class(item: pytest.Item) -> bool:
    """A claim about PersistentVolumeClaims needs one (--storage-class): without
    one it is not collected, as a volume kind the run does not have."""
    return claims_only(item) and of_item(item).volume is None


def user_namespaced_elsewhere(item: pytest.Item) -> bool:
    """A claim about pods in user namespaces of their own says nothing about pods in
    the host's: collected only for pods with hostUsers: false, so runs without user
    namespaces stay as they were."""
    return item.get_closest_marker("user_namespaced") is not None and not of_item(item).user_namespaces


def not_applicable(items: list[pytest.Item], default_node: str | None, excludes) -> list[NotApplicable]:
    """The nodes where a RuntimeClass may not run (`excludes(class, node)` says why,
    or None), among the places the items would run."""
    found: dict[tuple[str, str], str | None] = {}
    for item in items:
        where = of_item(item)
        place = (where.node or default_node, where.runtime_class)
        if place[0] and place[1] and place not in found:
            found[place] = excludes(place[1], place[0])
    return [NotApplicable(node, runtime_class, why) for (node, runtime_class), why in found.items() if why]


def needed_features(item: pytest.Item) -> list[str]:
    """What the claim needs of its node (its `needs` markers), podshare.node_features."""
    return [m.args[0] for m in item.iter_markers("needs")]


def lacking(items: list[pytest.Item], default_node: str | None, lacks) -> list[NotApplicable]:
    """The nodes, among the places the items would run, that lack a feature some of
    them need (`lacks(feature, node)` says why, or None); one entry per node and
    feature. A run whose node is the scheduler's choice is not decided here."""
    found: dict[tuple[str, str], str | None] = {}
    for item in items:
        node = of_item(item).node or default_node
        for feature in needed_features(item) if node else ():
            if (node, feature) not in found:
                found[(node, feature)] = lacks(feature, node)
    return [NotApplicable(node, "", why, feature) for (node, feature), why in found.items() if why]

