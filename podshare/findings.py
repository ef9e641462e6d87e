"""What a run's reports say, worked out once: the run's problems, a sentence per
node, what needs attention (a common cause shown once), what could not be
checked, what was re-run, the claim matrix and the table of figures. Each is a
typed value that both renderers, summary.md and report.html, only draw.

Built from the records alone; knows nothing of pytest or Kubernetes."""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from .common_causes import CommonCause, Flagged, common_causes
from .history import History, claim_key
from .records import (AXIS, BROKEN, SKIPPED, COULD_NOT_CHECK, ERROR, FAILED, FLAKY, INTERRUPTED, NEWLY_FAILING, OUTCOMES,
                      PASSED, Check, ClusterFacts, Dimensions, NodeFacts, NotApplicable, RunInfo, nodes_of, runtimes_line,
                      varied)

NEEDS_ATTENTION = (FAILED, ERROR, INTERRUPTED)  # did not hold, and no one accepted it (known divergences are)


def counts(checks: list[Check]) -> dict[str, int]:
    """Checks by outcome, every outcome named, and the total: results.json's summary."""
    tally = Counter(c.outcome for c in checks)
    return {o: tally.get(o, 0) for o in OUTCOMES} | {"total": len(checks)}


def runtimes_lines(cluster: ClusterFacts) -> list[str]:
    """Each node's runtimes in their own words, where its node says them (the
    bundled cluster's annotation); nothing for a node that does not."""
    if cluster.runtimes and cluster.node and cluster.node not in cluster.nodes:
        return [runtimes_line(cluster.node, cluster.runtimes)]
    return [runtimes_line(n, f.runtimes) for n, f in sorted(cluster.nodes.items()) if f.runtimes]


def cluster_line(cluster: ClusterFacts) -> str:
    keys = ("server_version", "context", "node", "os_image", "kernel", "container_runtime", "runtime_class")
    if len(cluster.nodes) > 1:  # each node's facts are in the nodes table
        keys = ("server_version", "context")
    return ", ".join(f"{k.replace('_', ' ')}: {getattr(cluster, k)}" for k in keys if getattr(cluster, k))


@dataclass
class Matrix:
    """Claim (row) x the run's dimensions (column), in run order."""
    title: str
    columns: list[str]
    rows: dict[str, dict[str, Check]]  # claim id -> column -> check
    where: dict[str, Dimensions]  # column -> the place it stands for

    def sentence(self, claim_id: str) -> str:
        return next(iter(self.rows[claim_id].values())).claim


def claim_matrix(checks: list[Check], not_applicable: list[NotApplicable] = ()) -> Matrix | None:
    """The matrix of a run with several nodes, RuntimeClasses or user-namespace settings;
    None when it had one column. A node where a RuntimeClass may not run
    (not_applicable) keeps its column, every cell "not applicable"."""
    axes = varied([c.dimensions for c in checks])
    if not axes:
        return None
    rows: dict[str, dict[str, Check]] = {}
    for c in checks:
        rows.setdefault(c.claim_id or c.id, {})[c.dimensions.column(axes)] = c
    # where a class may not run: its column once for each setting of the other dimensions the run had
    places = [*(c.dimensions for c in checks), *(replace(c.dimensions, node=na.node, runtime_class=na.runtime_class)
                                                 for na in not_applicable if not na.feature for c in checks)]
    where = {d.column(axes): d for d in places}
    title = "Claim x " + " x ".join(AXIS[name].title for name in axes)
    return Matrix(title, sorted(where) if not_applicable else list(where), rows, where)


NOT_APPLICABLE_SKIP = "Skipped: not applicable"


def node_summary(checks: list[Check], cluster: ClusterFacts, history: History | None) -> list[str]:
    """One sentence per kind of node, first: which nodes keep every promise, which
    break which (with the first run that saw it, from the history), which could not
    be checked, and why."""
    per_node = [c for c in checks if c.per_node]
    not_applicable = [f"not applicable: {na.why}" for na in cluster.not_applicable]
    # a claim the place cannot have (its StorageClass makes no ReadWriteMany volume) is said once, not kept
    # and not skipped by the node
    lacked = [c for c in per_node if c.outcome == SKIPPED and c.message.startswith(NOT_APPLICABLE_SKIP)]
    per_node = [c for c in per_node if c not in lacked]
    for why in dict.fromkeys(c.message.removeprefix("Skipped: ") for c in lacked):
        on = _and(list(dict.fromkeys(c.node for c in lacked if c.message.endswith(why))))
        claims_na = len({c.claim_id for c in lacked if c.message.endswith(why)})
        not_applicable.append(f"{why} ({claims_na} claim{'s' * (claims_na != 1)}, on {on})")
    if not per_node:
        return not_applicable
    nodes = list(dict.fromkeys(c.node for c in per_node))
    broken = {n: [c for c in per_node if c.node == n and c.outcome in BROKEN] for n in nodes}
    unchecked = {n: [c for c in per_node if c.node == n and c.outcome == COULD_NOT_CHECK] for n in nodes}
    skipped = {n: [c for c in per_node if c.node == n and c.outcome == SKIPPED] for n in nodes}
    claims = len({c.claim_id for c in per_node})
    # a skip is not a promise kept: a node with one is said apart, with the reason
    keeping = [n for n in nodes if not broken[n] and not unchecked[n] and not skipped[n]]
    lines = [f"{len(nodes)} node{'s' * (len(nodes) != 1)} checked"
             + (f": {_and(keeping)} keep{'s' * (len(keeping) == 1)} "
                + ("the 1 promise" if claims == 1 else f"all {claims} promises") if keeping else "")]
    for n in nodes:
        if broken[n]:
            first = history.first_seen(broken[n]) if history else None
            lines.append(f"{n} breaks {len({c.claim_id for c in broken[n]})}"
                         + (f" (first seen {first})" if first else "") + ": "
                         + "; ".join(sorted({c.claim.rstrip(".") for c in broken[n]})))
        if unchecked[n]:
            lines.append(f"{n} could not be checked ({len(unchecked[n])} claims): {unchecked[n][0].cause}")
        if skipped[n]:
            lines.append(f"{n} skipped {len(skipped[n])} (not counted as kept): "
                         + "; ".join(sorted({f"{c.claim.rstrip('.')} ({c.message})" for c in skipped[n]})))
    lines += not_applicable
    standing = {n: f.stands_for for n, f in nodes_of(cluster).items() if f.stands_for}
    if standing:
        more = sum(map(len, standing.values()))
        lines.append(f"{more} more node{'s' * (more != 1)} not checked, of the same configuration as a checked node "
                     "(--one-per-pool): " + "; ".join(
                         f"{n} stands for {_and(others)}" for n, others in standing.items()))
    return lines


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


class FigureTable(NamedTuple):
    """Measurement (row) x the runtime it ran under (column): each cell a figure and
    the index of the check that took it."""
    columns: list[str]
    rows: dict[str, dict[str, tuple[dict, int]]]


def figure_table(checks: list[Check]) -> FigureTable | None:
    """The run's figures; None when it measured nothing."""
    measured = [(i, c) for i, c in enumerate(checks) if c.figures]
    if not measured:
        return None
    columns = list(dict.fromkeys(c.dimensions.figure_column() for _, c in measured))
    rows: dict[str, dict[str, tuple[dict, int]]] = {}
    for i, c in measured:
        for name, figure in c.figures.items():
            rows.setdefault(name, {})[c.dimensions.figure_column()] = (figure, i)
    return FigureTable(columns, rows)


def format_figure(figure: dict[str, Any]) -> str:
    if not figure.get("samples"):
        return "no samples"
    return f"{_three_digits(figure['median'])} {figure['unit']} (p95 {_three_digits(figure['p95'])}, n={figure['samples']})"


def _three_digits(x: float) -> str:
    """Three significant digits, never in exponent form: 49.2, 1320, 13900."""
    return f"{float(f'{x:.3g}'):g}" if abs(x) < 1000 else f"{round(x, -len(str(int(abs(x)))) + 3):.0f}"


@dataclass
class Attention:
    """The checks a reader must look at first, newly failing first, with their verdict;
    those of one common cause grouped (causes), the others as they are (rest)."""
    flagged: list[Flagged]
    causes: list[CommonCause]
    rest: list[Flagged]

    def __bool__(self) -> bool:
        return bool(self.flagged)


def needs_attention(checks: list[Check], cluster: ClusterFacts, history: History | None) -> Attention:
    """Those that did not hold (not the accepted known divergences), and the passes
    the history calls flaky."""
    verdict = (lambda c: history.verdict(claim_key(c))) if history else (lambda c: None)
    flagged = sorted([(c, verdict(c)) for c in checks if c.outcome in NEEDS_ATTENTION],
                     key=lambda cv: cv[1] != NEWLY_FAILING)
    flagged += [(c, FLAKY) for c in checks if c.outcome == PASSED and verdict(c) == FLAKY]
    return Attention(flagged, *common_causes(cluster, flagged))


def not_checked(checks: list[Check]) -> dict[str, list[Check]]:
    """The claims the cluster moved under, grouped by cause (one disruption, many
    claims): apart from the broken promises, which they are not."""
    groups: dict[str, list[Check]] = {}
    for c in checks:
        if c.outcome == COULD_NOT_CHECK:
            groups.setdefault(c.cause or first_line(c.message), []).append(c)
    return groups


def rerun(checks: list[Check]) -> list[Check]:
    """The claims whose first attempt the cluster disrupted (their probe pod deleted or
    evicted) and that were run again on a fresh pod: their outcome is the re-run's."""
    return [c for c in checks if c.cause and c.outcome != COULD_NOT_CHECK]


def run_problems(run: RunInfo) -> list[str]:
    """What makes the run as a whole untrustworthy or incomplete, one sentence each."""
    problems = []
    if run.interrupted:
        problems.append(f"Interrupted ({run.interrupted}): claims marked {INTERRUPTED} did not finish.")
    if run.fatal:
        problems.append(f"Could not check the claims: {run.fatal}")
    if run.leftovers:
        problems.append(f"Not cleaned up: {', '.join(run.leftovers)}")
    if run.checks_run == 0 and not problems:
        problems.append("No claim ran: the selection (-m, -k, paths) matched none.")
    return problems


def first_line(message: str, limit: int = 200) -> str:
    line = message.strip().splitlines()[0] if message.strip() else ""
    line = re.sub(r"^(AssertionError|Failed): ", "", line)
    return (line[:limit] + "…" if len(line) > limit else line).replace("|", "/")


def short_id(check: Check) -> str:
    """The claim's test name, without its file."""
    return check.id.split("::")[-1]


@dataclass
class Findings:
    """Everything both renderers draw, in the order the reports tell it."""
    run: RunInfo
    cluster: ClusterFacts
    checks: list[Check]
    history: History | None
    summary: dict[str, int]
    problems: list[str]
    cluster_line: str
    runtimes: list[str]  # each node's runtime versions, where the nodes say them
    node_summary: list[str]
    nodes: dict[str, NodeFacts]  # the nodes table, where the node was a dimension of the run
    attention: Attention
    not_checked: dict[str, list[Check]]
    rerun: list[Check]
    since_previous: dict[str, str]  # history key -> recovered or flaky (newly failing is in attention)
    matrix: Matrix | None
    figures: FigureTable | None

    @classmethod
    def of(cls, run: RunInfo, cluster: ClusterFacts, checks: list[Check], history: History | None) -> "Findings":
        return cls(
            run=run, cluster=cluster, checks=checks, history=history, summary=counts(checks),
            problems=run_problems(run), cluster_line=cluster_line(cluster), runtimes=runtimes_lines(cluster),
            node_summary=node_summary(checks, cluster, history),
            nodes=nodes_of(cluster) if any(c.per_node for c in checks) else {},
            attention=needs_attention(checks, cluster, history), not_checked=not_checked(checks),
            rerun=rerun(checks),
            since_previous={k: v for k, v in history.changes().items() if v != NEWLY_FAILING} if history else {},
            matrix=claim_matrix(checks, cluster.not_applicable), figures=figure_table(checks))

    def verdict(self, check: Check) -> str | None:
        return self.history.verdict(claim_key(check)) if self.history else None

    def anchor(self, check: Check) -> str:
        """The check's element in report.html, which the tables link to."""
        return f"check-{self.checks.index(check)}"
