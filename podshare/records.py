"""What a run is made of, defined once: the words for outcomes and verdicts, a
check, a node's facts and the run itself. The plugin and the cluster write
these; the reports, metrics, history and store read them. results.json is
their JSON (RESULTS_VERSION); an older results.json, from before the version
field, reads into them too (what it lacks takes its default), so a history
store spanning podshare versions stays one trend.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable

# 1: no version field, no nodes, no API cost (podshare before 2026-11-29); 2: no volume per check
RESULTS_VERSION = 3

# Outcomes of a check.
PASSED, FAILED, ERROR, SKIPPED, INTERRUPTED = "passed", "failed", "error", "skipped", "interrupted"
KNOWN_DIVERGENCE = "known-divergence"  # failed where the known-divergences file says it does
# The cluster moved under the claim (its pod deleted or evicted, its node NotReady
# or its kubelet not answering, the API gone): not checked, not broken.
COULD_NOT_CHECK = "could-not-check"
OUTCOMES = (PASSED, FAILED, ERROR, SKIPPED, INTERRUPTED, KNOWN_DIVERGENCE, COULD_NOT_CHECK)
BROKEN = (FAILED, ERROR, KNOWN_DIVERGENCE)  # the promise was seen not to hold

# Verdicts of the history on a claim.
NEWLY_FAILING, RECOVERED, FLAKY = "newly failing", "recovered", "flaky"


def without_credentials(text: str) -> str:
    """A URL (or a line holding URLs) with any user and password taken out: a
    --pushgateway https://user:token@host must not end up in results.json, the
    nightly's ConfigMaps or the terminal."""
    return re.sub(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]*@", r"\1***@", text)


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The fields of `cls` in a JSON object: a newer file's extra keys are dropped,
    an older file's missing ones take their defaults."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


@dataclass(frozen=True)
class Axis:
    """One dimension of a run, and the one way it prints itself in each place."""
    name: str  # the Dimensions field, its fixture, its results.json key
    title: str  # in the matrix's title
    id: Callable[[Any], str]  # its test-id segment
    column: Callable[[Any], str]  # its report column (a value of None: the run's default)
    label: Callable[[Any], str | None]  # its metrics label value, None where it is no label
    key: Callable[[Any], str | None]  # its history-key segment, None where it adds none
    tag: Callable[[Any], str | None]  # its mark in pod names (63 characters at most), None where it adds none
    figure: Callable[[Any], str | None]  # its part of the figure table's column, None where it adds none
    # False: its values share the same pods and worker (a kind of volume of the probe pod)
    splits: bool = True
    # True: its segment stays in the claim id, a row of the matrix (test_x[disk]), not a column
    in_claim: bool = False


def _node_tag(node: str) -> str:
    """A short, stable stand-in for a node's name in pod names."""
    return "n" + hashlib.sha1(node.encode()).hexdigest()[:5]


USERNS_IDS = {True: "userns", False: "hostusers"}
# The volume kinds every run checks; a PersistentVolumeClaim of a StorageClass is "pvc:<class>".
EMPTY_DIR, MEMORY = "emptyDir", "emptyDir:Memory"
VOLUME_IDS = {EMPTY_DIR: "disk", MEMORY: "memory"}  # the ids they have had since the first run


def volume_id(kind: str) -> str:
    return VOLUME_IDS.get(kind) or kind.replace(":", "-")


def volume_path(kind: str) -> str:
    """Where the probe containers mount a volume of this kind."""
    return f"/data/{volume_id(kind)}"
USERNS_COLUMNS = {True: "userns", False: "host users"}

# The dimensions, in the order they compose a column, a key and a tag. Adding one:
# a field of Dimensions and an Axis here (and its fixture, parametrized by the plugin).
AXES = (
    Axis("node", "node", id=str, column=lambda v: v or "?", label=lambda v: v or "",
         key=lambda v: v, tag=lambda v: _node_tag(v) if v else None,
         figure=lambda v: None),  # a measurement is the runtime's: one column for every node
    Axis("runtime_class", "RuntimeClass", id=str, column=lambda v: v or "default", label=lambda v: v or "default",
         key=lambda v: v or "default", tag=lambda v: v, figure=lambda v: v or "default"),
    Axis("user_namespaces", "user namespaces", id=lambda v: USERNS_IDS[bool(v)],
         column=lambda v: USERNS_COLUMNS[bool(v)], label=lambda v: None if v is None else str(v).lower(),
         key=lambda v: "userns" if v else None, tag=lambda v: "u" if v else None,
         figure=lambda v: None if v is None else USERNS_COLUMNS[v]),
    Axis("volume", "volume", id=volume_id, column=str, label=lambda v: v, key=lambda v: None,
         tag=lambda v: None, figure=lambda v: None, splits=False, in_claim=True),
)
AXIS = {a.name: a for a in AXES}


@dataclass(frozen=True)
class Dimensions:
    """Where a claim ran. A field is None where it is not a dimension of the run
    (one node, the cluster's default class, no --user-namespaces); each prints
    itself one way per place through its Axis."""
    node: str | None = None
    runtime_class: str | None = None
    user_namespaces: bool | None = None
    volume: str | None = None  # the kind of the shared volume a volume claim ran on

    def values(self) -> dict[str, Any]:
        return {a.name: getattr(self, a.name) for a in AXES}

    def id_segments(self) -> list[str]:
        """What the claim's test id carries of each dimension that is one of the run
        and not part of the claim itself (in_claim)."""
        return [a.id(v) for a in AXES if not a.in_claim and (v := getattr(self, a.name)) is not None]

    def column(self, axes: tuple[str, ...]) -> str:
        """The report column, for the dimensions the run varied (`varied`)."""
        return " · ".join(AXIS[name].column(getattr(self, name)) for name in axes)

    def history_key(self, claim_id: str) -> str:
        """One row of the history: the claim on its class (default where none), then
        each other dimension that adds a segment; the node goes last, as the key has
        read since the first history store."""
        ordered = sorted(AXES, key=lambda a: a.name == "node")
        return " @ ".join([claim_id, *(k for a in ordered if (k := a.key(getattr(self, a.name))))])

    def pod_tag(self) -> str:
        """The mark pod names carry of where their claims run (empty where nothing varies)."""
        return "-".join(t for a in AXES if (v := getattr(self, a.name)) and (t := a.tag(v)))

    def figure_column(self) -> str:
        """Its column in the table of figures (median, p95) of the run."""
        return " · ".join(p for a in AXES if (p := a.figure(getattr(self, a.name))) is not None)

    def metrics_labels(self, node: str | None, pool: str | None) -> dict[str, str]:
        """Every sample's labels: the class, the node the pods ran on and its pool,
        then each other dimension where it is one of the run."""
        labels = {"runtime_class": AXIS["runtime_class"].label(self.runtime_class), "node": node or "",
                  "pool": pool or ""}
        labels.update({a.name: label for a in AXES if a.name not in labels
                       and (label := a.label(getattr(self, a.name))) is not None})
        return labels


def varied(dimensions: "list[Dimensions]") -> tuple[str, ...]:
    """The dimensions that are dimensions of the run (set on some check) and columns
    of the matrix (not part of the claim), in AXES order."""
    return tuple(a.name for a in AXES if not a.in_claim and any(getattr(d, a.name) is not None for d in dimensions))


@dataclass
class Check:
    id: str
    claim: str
    outcome: str
    duration_s: float
    evidence: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    markers: list[str] = field(default_factory=list)
    diagnostics: list[dict[str, Any]] = field(default_factory=list)
    claim_id: str = ""  # the id without its node and RuntimeClass: a row of the matrix
    runtime_class: str | None = None
    user_namespaces: bool | None = None  # hostUsers: false (True) or not (False); None: not a dimension of the run
    volume: str | None = None  # a volume claim's volume kind (emptyDir, emptyDir:Memory, pvc:<class>)
    node: str | None = None  # where its pods ran
    per_node: bool = False  # the node is a dimension of the run (--all-nodes, --node-selector): part of its key
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> unit, median, p95, ...
    # could-not-check: the disruption and its source, the same for every claim it took; for a
    # claim re-run on a fresh probe pod (podshare.recovery), what its first attempt met
    cause: str = ""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Check":
        return cls(**_known(cls, data))

    @property
    def dimensions(self) -> Dimensions:
        """Its dimensions: the node only where the run checked each node."""
        return Dimensions(**{a.name: getattr(self, a.name) for a in AXES if a.name != "node"},
                          node=self.node if self.per_node else None)


# A node's runtimes in their own words (each handler's binary version, shim,
# gVisor's platform and hints), as the bundled cluster annotates its nodes
# (cluster/runtime_versions.py); a real cluster's nodes have no such annotation.
RUNTIMES_ANNOTATION = "podshare.io/runtimes"


@dataclass
class NodeFacts:
    """What the reports say about a node: its pool, versions, OS and kernel, its
    taints, whether it takes pods, the runtime handlers it reports (and, where
    the node says, each handler's version: `runtimes`), and with --one-per-pool
    which nodes it stands for (or which node stands for it)."""
    pool: str | None = None
    labels: dict[str, str] = field(default_factory=dict)  # the pool-like ones, for the reader
    all_labels: dict[str, str] = field(default_factory=dict)  # what known divergences' node_selector matches
    kubelet: str = ""
    container_runtime: str = ""
    os_image: str = ""
    kernel: str = ""
    architecture: str = ""
    runtime_handlers: list[str] = field(default_factory=list)
    taints: list[str] = field(default_factory=list)
    unschedulable: bool = False
    ready: str = "Unknown"
    stands_for: list[str] = field(default_factory=list)
    represented_by: str | None = None
    # {"default": handler, "handlers": {name: {"version", "shim", ...}}}; None: the node does not say
    runtimes: dict[str, Any] | None = None
    declared_features: list[str] = field(default_factory=list)  # status.declaredFeatures (kubelets from 1.36)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "NodeFacts":
        return cls(**_known(cls, data))

    def to_json(self) -> dict[str, Any]:
        """As results.json has it; runtimes and declared features only where the node said them."""
        data = asdict(self)
        if self.runtimes is None:
            del data["runtimes"]
        if not self.declared_features:
            del data["declared_features"]
        return data

    @property
    def state(self) -> str:
        if self.represented_by:
            return f"not checked: {self.represented_by} stands for it"
        if self.unschedulable:
            return "cordoned"
        return "Ready" if self.ready == "True" else "NotReady"

    @property
    def line(self) -> str:
        return (f"pool {self.pool or '-'}; kubelet {self.kubelet}; {self.container_runtime}; {self.os_image}, "
                f"kernel {self.kernel}; taints: {', '.join(self.taints) or 'none'}; {self.state}")


def nodes_of(cluster: "dict[str, Any] | ClusterFacts") -> dict[str, NodeFacts]:
    """The cluster section's nodes, by name."""
    if isinstance(cluster, ClusterFacts):
        return dict(cluster.nodes)
    return {name: NodeFacts.from_json(facts) for name, facts in cluster.get("nodes", {}).items()}


@dataclass(frozen=True)
class NotApplicable:
    """A node where a RuntimeClass may not run (its scheduling.nodeSelector), or
    where a feature some claims need is missing (`feature`: those claims only), and why."""
    node: str
    runtime_class: str
    why: str
    feature: str | None = None


def runtimes_line(node: str, runtimes: dict[str, Any]) -> str:
    """The header's words for one node's runtimes, as the node says them."""
    handlers = []
    for name, h in sorted(runtimes.get("handlers", {}).items()):
        extra = [h.get("shim", "?")] + [f"{k} {h[k]}" for k in ("shim_version", "platform", "hints", "via") if h.get(k)]
        handlers.append(f"{name}: {h.get('version', '?')} ({', '.join(extra)})")
    default = f" (default {runtimes['default']})" if runtimes.get("default") else ""
    return f"runtimes of {node}{default}: " + "; ".join(handlers)


def runtime_classes_line(classes: dict[str, str]) -> str:
    """The header's words for the classes the run's pods ran under."""
    return ", ".join(f"{name} (handler {handler})" for name, handler in sorted(classes.items()))


@dataclass
class ClusterFacts:
    """The run's cluster as the reports tell it (results.json: "cluster"): the
    connection, the one node of a single-node run, the RuntimeClasses with their
    handlers, every node checked, where a class does not apply, and each probe
    container's identity and mounts (by pod)."""
    context: str | None = None
    server: str | None = None
    server_version: str | None = None
    node: str | None = None  # the node of a run on one node, with its facts below
    os_image: str | None = None
    kernel: str | None = None
    container_runtime: str | None = None
    kubelet: str | None = None
    node_info: str | None = None  # why the node's facts are missing
    runtimes: dict[str, Any] | None = None  # the one node's runtimes, where it says (NodeFacts.runtimes)
    runtime_classes: dict[str, str] = field(default_factory=dict)  # name -> handler
    nodes: dict[str, NodeFacts] = field(default_factory=dict)
    not_applicable: list[NotApplicable] = field(default_factory=list)
    probe_containers: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # pod -> container -> id
    # the StorageClasses volume claims ran on: provisioner, parameters, binding mode, default or not
    storage_classes: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def runtime_class(self) -> str | None:
        """The header's line: every class the run's pods ran under, with its handler."""
        return runtime_classes_line(self.runtime_classes) if self.runtime_classes else None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ClusterFacts":
        known = _known(cls, data)
        classes = {name: (c.get("handler", "?") if isinstance(c, dict) else str(c))
                   for name, c in known.pop("runtime_classes", {}).items()}
        return cls(**{**known, "runtime_classes": classes,
                      "nodes": {n: NodeFacts.from_json(f) for n, f in known.get("nodes", {}).items()},
                      "not_applicable": [NotApplicable(**na) for na in known.get("not_applicable", [])]})

    def to_json(self) -> dict[str, Any]:
        """As results.json has it since version 2: what is unknown is left out."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or value == {} or value == []:
                continue
            if f.name == "runtime_classes":
                value = {name: {"handler": handler} for name, handler in value.items()}
                out["runtime_class"] = self.runtime_class
            elif f.name == "nodes":
                value = {name: facts.to_json() for name, facts in value.items()}
            elif f.name == "not_applicable":
                value = [{k: v for k, v in asdict(na).items() if v is not None} for na in value]  # feature: only its own
            out[f.name] = value
        return out

    def merge(self, other: "ClusterFacts") -> None:
        """A worker's facts joining the controller's: what the controller lacks, and
        every worker's nodes, classes and probe containers."""
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if theirs is None:  # the worker does not know it (a node it never read): the controller's stands
                continue
            if isinstance(mine, dict):
                mine.update(theirs)
            elif isinstance(mine, list):
                mine.extend(x for x in theirs if x not in mine)
            elif mine is None:
                setattr(self, f.name, theirs)


@dataclass
class RunInfo:
    """The run: when, how long, how it ended, what it left, what it cost."""
    id: str
    started_at: str = ""
    started_epoch: float = 0.0
    fatal: str | None = None  # why no claim could be checked
    interrupted: str | None = None  # Ctrl-C or SIGTERM, with what it said
    exit_status: int | None = None
    duration_s: float = 0.0
    podshare_version: str = ""
    pytest_args: list[str] = field(default_factory=list)
    namespace: str | None = None
    leftovers: list[str] = field(default_factory=list)
    checks_run: int | None = None
    api_warnings: list[str] = field(default_factory=list)
    workers: int | None = None  # side by side: how many pytest-xdist workers
    api_cost: dict[str, float] = field(default_factory=dict)  # requests, execs and objects, in all and per node
    pushgateway: str | None = None  # what became of --pushgateway
    stored: str | None = None  # what the nightly's store left out to fit one ConfigMap
    # "confined: ...", "unconfined: cluster administrator" or "unconfined: --unconfined (why)"
    confinement: str | None = None

    def __post_init__(self) -> None:
        self.pytest_args = [without_credentials(str(a)) for a in self.pytest_args]
        self.pushgateway = without_credentials(self.pushgateway) if self.pushgateway else self.pushgateway

    def __setattr__(self, name: str, value: Any) -> None:  # run.pushgateway is set after the run
        if name in ("pushgateway",) and isinstance(value, str):
            value = without_credentials(value)
        super().__setattr__(name, value)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunInfo":
        return cls(**{"id": "run", **_known(cls, data)})

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
