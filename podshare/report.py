"""The report model and its three renderings: results.json, report.html, summary.md.

Built from test outcomes and evidence only; knows nothing of pytest or Kubernetes.
"""
from __future__ import annotations

import html
import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .history import History, claim_key
from .metrics import exposition
from .records import (BROKEN, COULD_NOT_CHECK, FLAKY, INTERRUPTED, KNOWN_DIVERGENCE, NEWLY_FAILING, OUTCOMES,
                      RESULTS_VERSION, Check, NodeFacts, RunInfo, nodes_of)


@dataclass
class KnownDivergences:
    """What an operator accepts that a RuntimeClass or a node pool breaks: claim id
    (a pattern where * matches anything) x where -> reason. Loaded from a YAML list
    of {claim, reason} with the place: runtime_class, node_selector (a label
    selector), both (both must hold), or `where:` a list of such places (any of them),
    as one runtime is met both as a class and as a pool's default."""
    entries: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, path: str | None) -> "KnownDivergences":
        if not path:
            return cls()
        import yaml
        entries = yaml.safe_load(Path(path).read_text()) or []
        if not isinstance(entries, list) or not all(
                isinstance(e, dict) and {"claim", "reason"} <= set(e) and all(
                    isinstance(p, dict) and p and set(p) <= PLACE_KEYS for p in _places(e))
                for e in entries):
            raise ValueError(f"{path}: expected a list of {{claim, reason, and runtime_class, node_selector and/or "
                             "user_namespaces (or where: a list of them)}}")
        return cls(entries)

    def match(self, claim_id: str, runtime_class: str | None, node_labels: dict[str, str] | None = None,
              user_namespaces: bool | None = None) -> str | None:
        """The reason a claim is listed where it ran; in `claim`, only * is a
        wildcard (ids have literal brackets: test_x[disk]); node_selector is
        k=v[,k=v...] (or k: the label is set), matched against the node's labels;
        runtime_class `default` is a pod that names none (the node's own runtime);
        user_namespaces true or false holds only for pods with (or without) user
        namespaces of their own (--user-namespaces), absent for either."""
        for e in self.entries:
            if not re.fullmatch(re.escape(e["claim"]).replace(r"\*", ".*"), claim_id):
                continue
            for place in _places(e):
                if "runtime_class" in place and place["runtime_class"] != (runtime_class or "default"):
                    continue  # "default": the pod named no class, so it ran under the node's default runtime
                if "node_selector" in place and (node_labels is None or not selects(place["node_selector"], node_labels)):
                    continue
                if "user_namespaces" in place and place["user_namespaces"] is not bool(user_namespaces):
                    continue
                return e["reason"]
        return None

    def __bool__(self) -> bool:
        return bool(self.entries)


PLACE_KEYS = frozenset({"runtime_class", "node_selector", "user_namespaces"})


def _places(entry: dict[str, Any]) -> list[dict[str, str]]:
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


@dataclass
class RunReport:
    run: RunInfo
    cluster: dict[str, Any]
    checks: list[Check] = field(default_factory=list)
    history: History | None = None  # past runs with this one last (--history-dir, podshare history)

    def verdict(self, check: Check) -> str | None:
        return self.history.verdict(claim_key(check)) if self.history else None

    @property
    def summary(self) -> dict[str, int]:
        counts = Counter(c.outcome for c in self.checks)
        return {o: counts.get(o, 0) for o in OUTCOMES} | {"total": len(self.checks)}

    def to_json(self) -> dict[str, Any]:
        body = {"version": RESULTS_VERSION, "run": self.run.to_json(), "cluster": self.cluster,
                "checks": [asdict(c) for c in self.checks], "summary": self.summary}
        if self.history:
            body["changes"] = self.history.changes()  # claim @ class -> newly failing / recovered / flaky
        return body

    def write(self, directory: Path) -> list[Path]:
        directory.mkdir(parents=True, exist_ok=True)
        paths = [directory / "results.json", directory / "report.html", directory / "summary.md",
                 directory / "metrics.prom"]
        paths[0].write_text(json.dumps(self.to_json(), indent=2, default=str) + "\n")
        paths[1].write_text(render_html(self))
        paths[2].write_text(render_markdown(self))
        paths[3].write_text(exposition(self.run, self.cluster, self.checks))
        return paths

    @classmethod
    def from_json(cls, results: dict[str, Any], history: History | None = None) -> "RunReport":
        return cls(run=RunInfo.from_json(results["run"]), cluster=results.get("cluster", {}), history=history,
                   checks=[Check.from_json(c) for c in results["checks"]])


_ICON = {"passed": "✅", "failed": "❌", "error": "💥", "skipped": "⏭️", INTERRUPTED: "⏹️",
         KNOWN_DIVERGENCE: "🔶", COULD_NOT_CHECK: "🌀"}


def _cluster_line(cluster: dict[str, Any]) -> str:
    keys = ("server_version", "context", "node", "os_image", "kernel", "container_runtime", "runtime_class")
    if len(cluster.get("nodes", {})) > 1:  # each node's facts are in the nodes table
        keys = ("server_version", "context")
    return ", ".join(f"{k.replace('_', ' ')}: {cluster[k]}" for k in keys if cluster.get(k))


USERNS_COLUMN = {True: "userns", False: "host users"}


@dataclass
class Matrix:
    """Claim (row) x node and/or RuntimeClass (column), in run order."""
    title: str
    columns: list[str]
    rows: dict[str, dict[str, Check]]  # claim id -> column -> check

    def sentence(self, claim_id: str) -> str:
        return next(iter(self.rows[claim_id].values())).claim


def claim_matrix(checks: list[Check], not_applicable: list[dict[str, str]] = ()) -> Matrix | None:
    """The matrix of a run with several nodes, RuntimeClasses or user-namespace settings;
    None when it had one column. A node where a RuntimeClass may not run
    (not_applicable) keeps its column, every cell "not applicable"."""
    per_node, classes = any(c.per_node for c in checks), any(c.runtime_class for c in checks)
    userns = any(c.user_namespaces is not None for c in checks)
    if not (per_node or classes or userns):
        return None

    def column(node: str | None, runtime_class: str | None, user_namespaces: bool | None) -> str:
        return " · ".join([*([node or "?"] if per_node else []), *([runtime_class or "default"] if classes else []),
                           *([USERNS_COLUMN[bool(user_namespaces)]] if userns else [])])
    rows: dict[str, dict[str, Check]] = {}
    for c in checks:
        rows.setdefault(c.claim_id or c.id, {})[column(c.node, c.runtime_class, c.user_namespaces)] = c
    title = "Claim x " + " x ".join(w for w, on in (("node", per_node), ("RuntimeClass", classes),
                                                     ("user namespaces", userns)) if on)
    settings = list(dict.fromkeys(c.user_namespaces for c in checks))
    columns = [*(column(c.node, c.runtime_class, c.user_namespaces) for c in checks),
               *(column(na["node"], na["runtime_class"], u) for na in not_applicable for u in settings)]
    return Matrix(title, sorted(dict.fromkeys(columns)) if not_applicable else list(dict.fromkeys(columns)), rows)


def node_summary(report: "RunReport") -> list[str]:
    """One sentence per kind of node, first: which nodes keep every promise, which
    break which (with the first run that saw it, from the history), which could not
    be checked, and why."""
    per_node = [c for c in report.checks if c.per_node]
    not_applicable = [f"not applicable: {na['why']}" for na in report.cluster.get("not_applicable", [])]
    if not per_node:
        return not_applicable
    nodes = list(dict.fromkeys(c.node for c in per_node))
    broken = {n: [c for c in per_node if c.node == n and c.outcome in BROKEN]
              for n in nodes}
    unchecked = {n: [c for c in per_node if c.node == n and c.outcome == COULD_NOT_CHECK] for n in nodes}
    claims = len({c.claim_id for c in per_node})
    keeping = [n for n in nodes if not broken[n] and not unchecked[n]]
    lines = [f"{len(nodes)} node{'s' * (len(nodes) != 1)} checked"
             + (f": {_and(keeping)} keep{'s' * (len(keeping) == 1)} "
                + ("the 1 promise" if claims == 1 else f"all {claims} promises") if keeping else "")]
    for n in nodes:
        if broken[n]:
            first = report.history.first_seen(broken[n]) if report.history else None
            lines.append(f"{n} breaks {len({c.claim_id for c in broken[n]})}"
                         + (f" (first seen {first})" if first else "") + ": "
                         + "; ".join(sorted({c.claim.rstrip(".") for c in broken[n]})))
        if unchecked[n]:
            lines.append(f"{n} could not be checked ({len(unchecked[n])} claims): {unchecked[n][0].cause}")
    lines += not_applicable
    standing = {n: f.stands_for for n, f in nodes_of(report.cluster).items() if f.stands_for}
    if standing:
        more = sum(map(len, standing.values()))
        lines.append(f"{more} more node{'s' * (more != 1)} not checked, of the same configuration as a checked node "
                     "(--one-per-pool): " + "; ".join(
                         f"{n} stands for {_and(others)}" for n, others in standing.items()))
    return lines


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def node_table(cluster: dict[str, Any]) -> list[tuple[str, NodeFacts]]:
    return list(nodes_of(cluster).items())


def figure_table(checks: list[Check]) -> tuple[list[str], dict[str, dict[str, tuple[dict, int]]]] | None:
    """Measurement (row) x RuntimeClass (column): each cell a figure and the index
    of the check that took it; None when the run measured nothing."""
    measured = [(i, c) for i, c in enumerate(checks) if c.figures]
    if not measured:
        return None
    def column(c: Check) -> str:  # the class, and with --user-namespaces whether the pod had its own
        userns = "" if c.user_namespaces is None else f" · {USERNS_COLUMN[c.user_namespaces]}"
        return (c.runtime_class or "default") + userns
    classes = list(dict.fromkeys(column(c) for _, c in measured))
    rows: dict[str, dict[str, tuple[dict, int]]] = {}
    for i, c in measured:
        for name, figure in c.figures.items():
            rows.setdefault(name, {})[column(c)] = (figure, i)
    return classes, rows


def format_figure(figure: dict[str, Any]) -> str:
    if not figure.get("samples"):
        return "no samples"
    return f"{_three_digits(figure['median'])} {figure['unit']} (p95 {_three_digits(figure['p95'])}, n={figure['samples']})"


def _three_digits(x: float) -> str:
    """Three significant digits, never in exponent form: 49.2, 1320, 13900."""
    return f"{float(f'{x:.3g}'):g}" if abs(x) < 1000 else f"{round(x, -len(str(int(abs(x)))) + 3):.0f}"


def needs_attention(report: RunReport) -> list[tuple[Check, str | None]]:
    """The checks a reader must look at first: those that did not hold (not the
    accepted known divergences), newly failing first, with their verdict."""
    bad = [c for c in report.checks if c.outcome in ("failed", "error", INTERRUPTED)]
    flagged = [(c, report.verdict(c)) for c in bad]
    flaky_passes = [(c, FLAKY) for c in report.checks if c.outcome == "passed" and report.verdict(c) == FLAKY]
    return sorted(flagged, key=lambda cv: cv[1] != NEWLY_FAILING) + flaky_passes


_ERRNO = re.compile(r"\b(E[A-Z]{2,})\b")


@dataclass
class CommonCause:
    """Several claims failing with one errno for one container: one cause, shown once."""
    errno: str
    who: str  # the container the messages name first (beta could not open ...)
    checks: list[tuple[Check, str | None]]
    why: str  # what the evidence says about it: uids and modes, mounts

    @property
    def headline(self) -> str:
        return f"{len(self.checks)} claims, one cause: {self.who} got {self.errno}"


def common_causes(report: RunReport, attention: list[tuple[Check, str | None]]
                  ) -> tuple[list[CommonCause], list[tuple[Check, str | None]]]:
    """Needs attention with failures of one errno for one container (on one node and
    RuntimeClass) grouped: the groups, each with what the evidence says about why,
    and the rest as they were."""
    groups: dict[tuple, list[tuple[Check, str | None]]] = {}
    for c, v in attention:
        codes = set(_ERRNO.findall(c.message))
        if c.outcome == "failed" and len(codes) == 1:
            who = c.message.split()[0].removesuffix("'s") if c.message.strip() else ""
            groups.setdefault((codes.pop(), who, c.node, c.runtime_class), []).append((c, v))
    causes = [CommonCause(errno, who, members, _why(report, errno, [c for c, _ in members]))
              for (errno, who, _n, _k), members in groups.items() if len(members) > 1]
    grouped = {id(c) for cause in causes for c, _ in cause.checks}
    return causes, [(c, v) for c, v in attention if id(c) not in grouped]


def _answers(checks: list[Check], errno: str) -> list[dict[str, Any]]:
    return [t["result"] for c in checks for t in c.evidence.get("transcript", [])
            if isinstance(t.get("result"), dict) and t["result"].get("errno") == errno]


def _why(report: RunReport, errno: str, checks: list[Check]) -> str:
    """The probe containers' uids and groups (refusals), the refused objects' owners
    and modes, and the containers' mounts of the places the answers name (absences,
    read-only file systems), from the evidence recorded with the probe pod."""
    pods = [t["pod"] for c in checks for t in c.evidence.get("transcript", [])]
    known = report.cluster.get("probe_containers", {})
    containers = next((known[p] for p in pods if p in known), {})
    answers = _answers(checks, errno)
    parts = []
    if errno in ("EACCES", "EPERM") and containers:
        parts.append("; ".join(f"{name} runs as uid {i['uid']}, gid {i['gid']} (groups "
                               f"{', '.join(map(str, i.get('groups') or [])) or 'none'})"
                               for name, i in containers.items()))
    owners = list(dict.fromkeys(_owner(a["object"]) for a in answers if a.get("object"))) \
        if errno in ("EACCES", "EPERM") else []
    if owners:
        parts.append("; ".join(owners[:4]) + (f" and {len(owners) - 4} more" if len(owners) > 4 else ""))
    if errno in ("ENOENT", "EROFS") and containers:
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


def not_checked(report: RunReport) -> dict[str, list[Check]]:
    """The claims the cluster moved under, grouped by cause (one disruption, many
    claims): apart from the broken promises, which they are not."""
    groups: dict[str, list[Check]] = {}
    for c in report.checks:
        if c.outcome == COULD_NOT_CHECK:
            groups.setdefault(c.cause or _first_line(c.message), []).append(c)
    return groups


def rerun(report: RunReport) -> list[Check]:
    """The claims whose first attempt the cluster disrupted (their probe pod deleted or
    evicted) and that were run again on a fresh pod: their outcome is the re-run's."""
    return [c for c in report.checks if c.cause and c.outcome != COULD_NOT_CHECK]


def _first_line(message: str, limit: int = 200) -> str:
    line = message.strip().splitlines()[0] if message.strip() else ""
    line = re.sub(r"^(AssertionError|Failed): ", "", line)
    return (line[:limit] + "…" if len(line) > limit else line).replace("|", "/")


def run_problems(run: RunInfo) -> list[str]:
    """What makes the run as a whole untrustworthy or incomplete, one sentence each."""
    problems = []
    if run.interrupted:
        problems.append(f"Interrupted ({run.interrupted}): claims marked interrupted did not finish.")
    if run.fatal:
        problems.append(f"Could not check the claims: {run.fatal}")
    if run.leftovers:
        problems.append(f"Not cleaned up: {', '.join(run.leftovers)}")
    if run.checks_run == 0 and not problems:
        problems.append("No claim ran: the selection (-m, -k, paths) matched none.")
    return problems


def render_markdown(report: RunReport) -> str:
    s = report.summary
    lines = [f"# podshare: {s['passed']} passed, {s['failed']} failed, {s['error']} errors, {s['skipped']} skipped"
             + (f", {s[COULD_NOT_CHECK]} could not check" if s[COULD_NOT_CHECK] else "")
             + (f", {s[INTERRUPTED]} interrupted" if s[INTERRUPTED] else "")
             + (f", {s[KNOWN_DIVERGENCE]} known divergences" if s[KNOWN_DIVERGENCE] else ""), ""]
    for problem in run_problems(report.run):
        lines += [f"**{problem}**", ""]
    lines += [_cluster_line(report.cluster), ""]
    lines += [f"- {line}" for line in node_summary(report)] + ([""] if node_summary(report) else [])
    attention = needs_attention(report)
    if attention:
        causes, rest = common_causes(report, attention)
        lines += ["## Needs attention", ""] + [
            f"- {_ICON['failed']} **{cause.headline}**: {cause.why} "
            f"({', '.join('`' + c.id.split('::')[-1] + '`' for c, _ in cause.checks)}); "
            f"first: {_first_line(cause.checks[0][0].message)}" for cause in causes] + [
            f"- {_ICON.get(c.outcome, '')} `{c.id.split('::')[-1]}`{f' **{v}**' if v else ''}: {_first_line(c.message)}"
            for c, v in rest] + [""]
    unchecked = not_checked(report)
    if unchecked:
        lines += ["## Could not check: the cluster moved under the run", ""] + [
            f"- {_ICON[COULD_NOT_CHECK]} {len(checks)} claim{'s' * (len(checks) != 1)}: {_first_line(cause, 400)} "
            f"({', '.join('`' + c.id.split('::')[-1] + '`' for c in checks)})"
            for cause, checks in unchecked.items()] + [""]
    again = rerun(report)
    if again:
        lines += ["## Disrupted, then re-run on a fresh pod", ""] + [
            f"- {_ICON.get(c.outcome, '')} `{c.id.split('::')[-1]}`: {_first_line(c.message, 400)}" for c in again] + [""]
    recovered = [k for k, v in report.history.changes().items() if v != NEWLY_FAILING] if report.history else []
    if recovered:
        lines += [f"Since the previous run: " + "; ".join(
            f"`{k.split('::')[-1]}` {report.history.verdict(k)}" for k in recovered), ""]
    if report.cluster.get("nodes") and any(c.per_node for c in report.checks):
        lines += ["## Nodes", "", "| node | pool | kubelet | runtime | OS, kernel | taints | state |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {n} | {f.pool or ''} | {f.kubelet} | {f.container_runtime} | "
                  f"{f.os_image}, {f.kernel} | {', '.join(f.taints) or 'none'} | "
                  f"{f.state} |" for n, f in node_table(report.cluster)] + [""]
    matrix = claim_matrix(report.checks, report.cluster.get("not_applicable", []))
    if matrix:  # which node and runtime break which promise, before the detail
        lines += [f"## {matrix.title}", "", "| claim | " + " | ".join(matrix.columns) + " |",
                  "|---|" + "---|" * len(matrix.columns)]
        for claim_id, cells in matrix.rows.items():
            lines.append(f"| {matrix.sentence(claim_id)} (`{claim_id.split('::')[-1]}`) | " + " | ".join(
                f"{_ICON.get(cells[k].outcome, '')} {cells[k].outcome}" if k in cells else "not applicable"
                for k in matrix.columns) + " |")
        lines.append("")
    figures = figure_table(report.checks)
    if figures:
        classes, rows = figures
        lines += ["## How fast the sharing is (median, p95, samples)", "", "| measurement | " + " | ".join(classes)
                  + " |", "|---|" + "---|" * len(classes)]
        lines += [f"| {name} | " + " | ".join(format_figure(cells[k][0]) if k in cells else "" for k in classes)
                  + " |" for name, cells in rows.items()]
        lines.append("")
    lines += ["| | claim | outcome | time | note |", "|---|---|---|---|---|"]
    for c in report.checks:
        note = c.message.splitlines()[0][:160] if c.message else ""
        lines.append(f"| {_ICON.get(c.outcome, '')} | {c.claim} (`{c.id.split('::')[-1]}`) | {c.outcome} "
                     f"| {c.duration_s:.2f}s | {note.replace('|', '/')} |")
    for c in report.checks:
        if c.diagnostics:
            lines += ["", f"<details><summary>{c.outcome}: {c.id} — pod status, events and logs</summary>", "",
                      "```json", json.dumps(c.diagnostics, indent=1, default=str), "```", "</details>"]
    lines.append("")
    lines.append(f"Run {report.run.id} took {report.run.duration_s:.1f}s; "
                 "evidence for every claim is in results.json and report.html.")
    return "\n".join(lines) + "\n"


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
h1{font-size:1.4em} .meta{color:#555}
.counts span{display:inline-block;margin-right:1em;padding:.2em .6em;border-radius:4px;font-weight:600}
.passed{background:#e6f4ea}.failed{background:#fde7e9}.error{background:#fbe3c6}.skipped{background:#eceff1}.interrupted{background:#fff3c4}
details{border:1px solid #ddd;border-radius:4px;margin:.3em 0;padding:.3em .6em}
summary{cursor:pointer} summary .o{display:inline-block;min-width:5.5em;margin-right:.4em;white-space:nowrap;font-weight:600;text-transform:uppercase;font-size:12px}
details.passed .o{color:#137333} details.failed .o{color:#c5221f} details.error .o{color:#b06000} details.skipped .o{color:#5f6368}
pre{background:#f7f7f7;padding:.6em;overflow:auto;max-height:30em;font-size:12px}
.claim{font-weight:600} .id{color:#777;font-size:12px}
h2{font-size:1.1em;margin:1.2em 0 .3em} h2 .tally{font-weight:400;color:#555;font-size:.85em}
.fatal{background:#fde7e9;padding:.5em;border-radius:4px;font-weight:600}
.known-divergence{background:#fff0d9} details.known-divergence .o{color:#a05a00}
.could-not-check{background:#e3e8fd} details.could-not-check .o{color:#3c4fb5}
.unchecked{border:2px solid #3c4fb5;border-radius:6px;padding:.2em 1em;margin:1em 0} .unchecked li{margin:.3em 0}
.attention{border:2px solid #c5221f;border-radius:6px;padding:.2em 1em;margin:1em 0} .attention li{margin:.3em 0}
.verdict{color:#c5221f;font-size:12px;text-transform:uppercase} .verdict.recovered{color:#137333} .verdict.flaky{color:#b06000}
.timeline .t{display:inline-block;width:8px;height:12px;margin-left:1px;vertical-align:middle;background:#ccc}
.timeline .t.passed{background:#34a853}.timeline .t.failed,.timeline .t.error{background:#ea4335}
.timeline .t.known-divergence{background:#f6ae2d}.timeline .t.interrupted{background:#fbbc04}
.timeline .t.could-not-check{background:#7986cb}
details.fold{border:none;padding:0} details.fold summary{font-weight:600;margin:.6em 0}
table.matrix{border-collapse:collapse;margin:.5em 0} table.matrix td,table.matrix th{border:1px solid #ddd;padding:.2em .5em;font-size:12px}
"""


def render_html(report: RunReport) -> str:
    """One self-contained page: counts, cluster, then every claim with its evidence."""
    e = html.escape
    s = report.summary
    counts = "".join(f'<span class="{o}">{s[o]} {o}</span>' for o in OUTCOMES)
    areas: dict[str, list[Check]] = {}
    for c in report.checks:  # grouped by area (the claim's marker), in run order
        areas.setdefault(c.markers[0] if c.markers else "other", []).append(c)
    rows = []
    for area, checks in areas.items():
        tally = Counter(c.outcome for c in checks)
        rows.append(f'<h2>{e(area)} <span class="tally">' + ", ".join(
            f"{tally[o]} {o}" for o in OUTCOMES if tally[o]) + "</span></h2>")
        rows += [_html_check(c, report.checks.index(c), report) for c in checks]
    problems = "".join(f'<p class="fatal">{e(problem)}</p>' for problem in run_problems(report.run))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>podshare report {e(report.run.id)}</title>
<style>{_CSS}</style></head><body>
<h1>podshare: do the containers of one pod share what Kubernetes promises?</h1>
<p class="counts">{counts}</p>
<p class="meta">{e(_cluster_line(report.cluster))}</p>
<p class="meta">run {e(report.run.id)}, started {e(report.run.started_at)},
{report.run.duration_s:.1f}s, podshare {e(report.run.podshare_version)}</p>
{problems}{_html_attention(report)}{_html_unchecked(report)}{_html_rerun(report)}{_html_matrix(report)}{_html_figures(report)}{''.join(rows)}
</body></html>
"""


def _html_by_class(title: str, label: str, classes: list[str], rows: dict[str, dict[str, tuple[str, str, int]]]) -> str:
    """A row x RuntimeClass table; each cell (text, css class, check index) links to its check."""
    e = html.escape
    head = "".join(f"<th>{e(k)}</th>" for k in classes)
    body = "".join(f'<tr><td class="id">{e(name)}</td>' + "".join(
        f'<td class="{cells[k][1]}"><a href="#check-{cells[k][2]}">{e(cells[k][0])}</a></td>' if k in cells
        else "<td></td>" for k in classes) + "</tr>" for name, cells in rows.items())
    return f'<h2>{title}</h2><table class="matrix"><tr><th>{e(label)}</th>{head}</tr>{body}</table>'


def _html_matrix(report: RunReport) -> str:
    matrix = claim_matrix(report.checks, report.cluster.get("not_applicable", []))
    if not matrix:
        return ""
    e = html.escape
    nodes = dict(node_table(report.cluster))
    head = "".join(f"<th>{e(k)}" + (f'<br><span class="id">{e(nodes[k.split(" · ")[0]].line)}</span>'
                                     if k.split(" · ")[0] in nodes else "") + "</th>" for k in matrix.columns)
    body = "".join(
        f'<tr><td>{e(matrix.sentence(claim_id))} <a class="id" href="#check-{report.checks.index(next(iter(cells.values())))}">'
        f'{e(claim_id.split("::")[-1])}</a></td>' + "".join(
            f'<td class="{cells[k].outcome}"><a href="#check-{report.checks.index(cells[k])}">{e(cells[k].outcome)}</a></td>'
            if k in cells else '<td class="id">not applicable</td>' for k in matrix.columns) + "</tr>"
        for claim_id, cells in matrix.rows.items())
    summary = "".join(f"<li>{e(line)}</li>" for line in node_summary(report))
    return (f"<ul>{summary}</ul>" if summary else "") + \
        f'<h2>{e(matrix.title)}</h2><table class="matrix"><tr><th>claim</th>{head}</tr>{body}</table>'


def _html_figures(report: RunReport) -> str:
    figures = figure_table(report.checks)
    if not figures:
        return ""
    classes, rows = figures
    return _html_by_class('How fast the sharing is <span class="tally">median (p95, samples)</span>', "measurement",
                          classes, {name: {k: (format_figure(f), "", i) for k, (f, i) in cells.items()}
                                    for name, cells in rows.items()})


def _html_attention(report: RunReport) -> str:
    attention = needs_attention(report)
    if not attention:
        return ""
    e = html.escape
    causes, rest = common_causes(report, attention)
    items = "".join(
        f'<li class="failed"><b>{e(cause.headline)}</b>: {e(cause.why)}; first: '
        f'{e(_first_line(cause.checks[0][0].message))} — ' + ", ".join(
            f'<a href="#check-{report.checks.index(c)}">{e(c.id.split("::")[-1])}</a>'
            + (f' {_verdict_tag(v)}' if v else "") for c, v in cause.checks) + "</li>" for cause in causes)
    items += "".join(
        f'<li class="{c.outcome}"><a href="#check-{report.checks.index(c)}">{e(c.id.split("::")[-1])}</a>'
        + (f' {_verdict_tag(v)}' if v else "") + f" — {e(_first_line(c.message))}</li>"
        for c, v in rest)
    return f'<section class="attention"><h2>Needs attention ({len(attention)})</h2><ul>{items}</ul></section>'


def _html_unchecked(report: RunReport) -> str:
    """The claims the cluster moved under, one item per cause, apart from Needs attention."""
    groups = not_checked(report)
    if not groups:
        return ""
    e = html.escape
    items = "".join(
        f'<li class="{COULD_NOT_CHECK}">{len(checks)} claim{"s" * (len(checks) != 1)}: {e(cause)} — '
        + ", ".join(f'<a href="#check-{report.checks.index(c)}">{e(c.id.split("::")[-1])}</a>' for c in checks)
        + "</li>" for cause, checks in groups.items())
    total = sum(len(checks) for checks in groups.values())
    return (f'<section class="unchecked"><h2>Could not check ({total}): the cluster moved under the run</h2>'
            f'<ul>{items}</ul></section>')


def _html_rerun(report: RunReport) -> str:
    """The claims run again on a fresh probe pod after a disruption, each with both attempts."""
    again = rerun(report)
    if not again:
        return ""
    e = html.escape
    items = "".join(f'<li class="{c.outcome}"><a href="#check-{report.checks.index(c)}">{e(c.id.split("::")[-1])}'
                    f'</a> — {e(_first_line(c.message, 400))}</li>' for c in again)
    return (f'<section class="unchecked"><h2>Disrupted, then re-run on a fresh pod ({len(again)})</h2>'
            f'<ul>{items}</ul></section>')


def _html_timeline(report: RunReport, c: Check) -> str:
    """The claim's last runs as small squares, oldest first (hover: run, outcome, time)."""
    if not report.history:
        return ""
    e = html.escape
    points = report.history.timeline(claim_key(c))
    squares = "".join(f'<i class="t {e(p.outcome)}" title="{e(p.run_id)} {e(p.started_at)}: {e(p.outcome)}, '
                      f'{p.duration_s:.1f}s"></i>' for p in points)
    verdict = report.verdict(c)
    return f' <span class="timeline">{squares}</span>' + (f" {_verdict_tag(verdict)}" if verdict else "")


def _verdict_tag(verdict: str) -> str:
    return f'<b class="verdict {verdict.replace(" ", "-")}">{html.escape(verdict)}</b>'


def _collapsible(title: str, text: str, lines: int = 25) -> str:
    """Short evidence in the open, long evidence folded (the page stays readable)."""
    e = html.escape
    count = text.count("\n") + 1
    if count <= lines:
        return f"<h4>{title}</h4><pre>{e(text)}</pre>"
    return f"<details class=\"fold\"><summary>{title} ({count} lines)</summary><pre>{e(text)}</pre></details>"


def _html_check(c: Check, index: int = 0, report: RunReport | None = None) -> str:
    e = html.escape
    body = []
    if c.message:
        body.append(f"<h4>Message</h4><pre>{e(c.message)}</pre>")
    if c.figures:
        body.append("<h4>Figures</h4><pre>" + e("\n".join(f"{n}: {format_figure(f)}" for n, f in c.figures.items()))
                    + "</pre>")
    if c.evidence:
        facts = {k: v for k, v in c.evidence.items() if k != "transcript"}
        if facts:
            body.append(_collapsible("Evidence", json.dumps(facts, indent=2, default=str)))
        if "transcript" in c.evidence:
            body.append(_collapsible("Probe transcript", json.dumps(c.evidence["transcript"], indent=2, default=str), 0))
    if c.diagnostics:
        body.append(_collapsible("Pod diagnostics", json.dumps(c.diagnostics, indent=2, default=str), 0))
    open_attr = " open" if c.outcome in ("failed", "error", INTERRUPTED, COULD_NOT_CHECK) else ""
    runtime = f" · {e(c.runtime_class)}" if c.runtime_class else ""
    return (f'<details id="check-{index}" class="{c.outcome}"{open_attr}><summary><span class="o">{c.outcome}</span> '
            f'<span class="claim">{e(c.claim)}</span> <span class="id">{e(c.id)}{runtime} · {c.duration_s:.2f}s</span>'
            f'{_html_timeline(report, c) if report else ""}</summary>{"".join(body)}</details>')
