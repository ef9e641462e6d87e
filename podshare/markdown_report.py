"""summary.md: the run's findings as Markdown, for a CI job's summary or a pull
request; what needs attention first, then the tables, then every claim."""
from __future__ import annotations

import json

from .findings import Findings, first_line, format_figure, short_id
from .records import COULD_NOT_CHECK, ERROR, FAILED, INTERRUPTED, KNOWN_DIVERGENCE, PASSED, SKIPPED, Check

ICON = {PASSED: "✅", FAILED: "❌", ERROR: "💥", SKIPPED: "⏭️", INTERRUPTED: "⏹️",
        KNOWN_DIVERGENCE: "🔶", COULD_NOT_CHECK: "🌀"}


def _icon(check: Check) -> str:
    return ICON.get(check.outcome, "")


def _ids(checks: list[Check]) -> str:
    return ", ".join(f"`{short_id(c)}`" for c in checks)


def render_markdown(f: Findings) -> str:
    s = f.summary
    lines = [f"# podshare: {s[PASSED]} {PASSED}, {s[FAILED]} {FAILED}, {s[ERROR]} {ERROR}s, {s[SKIPPED]} {SKIPPED}"
             + (f", {s[COULD_NOT_CHECK]} could not check" if s[COULD_NOT_CHECK] else "")
             + (f", {s[INTERRUPTED]} {INTERRUPTED}" if s[INTERRUPTED] else "")
             + (f", {s[KNOWN_DIVERGENCE]} known divergences" if s[KNOWN_DIVERGENCE] else ""), ""]
    for problem in f.problems:
        lines += [f"**{problem}**", ""]
    lines += [f.cluster_line, ""]
    lines += [f"- {line}" for line in f.runtimes] + ([""] if f.runtimes else [])
    lines += [f"- {line}" for line in f.node_summary] + ([""] if f.node_summary else [])
    lines += _attention(f) + _unchecked(f)
    if f.since_previous:
        lines += ["Since the previous run: " + "; ".join(
            f"`{key.split('::')[-1]}` {verdict}" for key, verdict in f.since_previous.items()), ""]
    lines += _nodes(f) + _matrix(f) + _figures(f) + _checks(f)
    lines.append(f"Run {f.run.id} took {f.run.duration_s:.1f}s; "
                 "evidence for every claim is in results.json and report.html.")
    return "\n".join(lines) + "\n"


def _attention(f: Findings) -> list[str]:
    if not f.attention:
        return []
    return ["## Needs attention", ""] + [
        f"- {ICON[FAILED]} **{cause.headline}**: {cause.why} ({_ids([c for c, _ in cause.checks])}); "
        f"first: {first_line(cause.checks[0][0].message)}" for cause in f.attention.causes] + [
        f"- {_icon(c)} `{short_id(c)}`{f' **{v}**' if v else ''}: {first_line(c.message)}"
        for c, v in f.attention.rest] + [""]


def _unchecked(f: Findings) -> list[str]:
    """Could not check, one item per cause, and the claims re-run after a disruption."""
    lines = []
    if f.not_checked:
        lines += ["## Could not check: the cluster moved under the run", ""] + [
            f"- {ICON[COULD_NOT_CHECK]} {len(checks)} claim{'s' * (len(checks) != 1)}: {first_line(cause, 400)} "
            f"({_ids(checks)})" for cause, checks in f.not_checked.items()] + [""]
    if f.rerun:
        lines += ["## Disrupted, then re-run on a fresh pod", ""] + [
            f"- {_icon(c)} `{short_id(c)}`: {first_line(c.message, 400)}" for c in f.rerun] + [""]
    return lines


def _nodes(f: Findings) -> list[str]:
    if not f.nodes:
        return []
    return ["## Nodes", "", "| node | pool | kubelet | runtime | OS, kernel | taints | state |",
            "|---|---|---|---|---|---|---|"] + [
        f"| {n} | {facts.pool or ''} | {facts.kubelet} | {facts.container_runtime} | "
        f"{facts.os_image}, {facts.kernel} | {', '.join(facts.taints) or 'none'} | "
        f"{facts.state} |" for n, facts in f.nodes.items()] + [""]


def _matrix(f: Findings) -> list[str]:
    """Which node and runtime break which promise, before the detail."""
    matrix = f.matrix
    if not matrix:
        return []
    lines = [f"## {matrix.title}", "", "| claim | " + " | ".join(matrix.columns) + " |",
             "|---|" + "---|" * len(matrix.columns)]
    for claim_id, cells in matrix.rows.items():
        lines.append(f"| {matrix.sentence(claim_id)} (`{claim_id.split('::')[-1]}`) | " + " | ".join(
            f"{_icon(cells[k])} {cells[k].outcome}" if k in cells else "not applicable"
            for k in matrix.columns) + " |")
    return lines + [""]


def _figures(f: Findings) -> list[str]:
    if not f.figures:
        return []
    columns, rows = f.figures
    return ["## How fast the sharing is (median, p95, samples)", "", "| measurement | " + " | ".join(columns) + " |",
            "|---|" + "---|" * len(columns)] + [
        f"| {name} | " + " | ".join(format_figure(cells[k][0]) if k in cells else "" for k in columns) + " |"
        for name, cells in rows.items()] + [""]


def _checks(f: Findings) -> list[str]:
    """Every claim in a row, then the pod diagnostics of those that have them."""
    lines = ["| | claim | outcome | time | note |", "|---|---|---|---|---|"]
    for c in f.checks:
        note = c.message.splitlines()[0][:160] if c.message else ""
        lines.append(f"| {_icon(c)} | {c.claim} (`{short_id(c)}`) | {c.outcome} "
                     f"| {c.duration_s:.2f}s | {note.replace('|', '/')} |")
    for c in f.checks:
        if c.diagnostics:
            lines += ["", f"<details><summary>{c.outcome}: {c.id} — pod status, events and logs</summary>", "",
                      "```json", json.dumps(c.diagnostics, indent=1, default=str), "```", "</details>"]
    return lines + [""]
