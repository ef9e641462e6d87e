"""What a run is made of, defined once: the words for outcomes and verdicts, a
check, a node's facts and the run itself. The plugin and the cluster write
these; the reports, metrics, history and store read them. results.json is
their JSON (RESULTS_VERSION); an older results.json, from before the version
field, reads into them too (what it lacks takes its default), so a history
store spanning podshare versions stays one trend.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

RESULTS_VERSION = 2  # 1: no version field, no nodes, no API cost (podshare before 2026-11-29)

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


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The fields of `cls` in a JSON object: a newer file's extra keys are dropped,
    an older file's missing ones take their defaults."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


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
    node: str | None = None  # where its pods ran
    per_node: bool = False  # the node is a dimension of the run (--all-nodes, --node-selector): part of its key
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> unit, median, p95, ...
    # could-not-check: the disruption and its source, the same for every claim it took; for a
    # claim re-run on a fresh probe pod (podshare.recovery), what its first attempt met
    cause: str = ""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Check":
        return cls(**_known(cls, data))


@dataclass
class NodeFacts:
    """What the reports say about a node: its pool, versions, OS and kernel, its
    taints, whether it takes pods, the runtime handlers it reports, and with
    --one-per-pool which nodes it stands for (or which node stands for it)."""
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

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "NodeFacts":
        return cls(**_known(cls, data))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

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


def nodes_of(cluster: dict[str, Any]) -> dict[str, NodeFacts]:
    """The cluster section's nodes, by name."""
    return {name: NodeFacts.from_json(facts) for name, facts in cluster.get("nodes", {}).items()}


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

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunInfo":
        return cls(**{"id": "run", **_known(cls, data)})

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
