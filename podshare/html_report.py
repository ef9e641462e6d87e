"""report.html: the run's findings as one self-contained page; what needs
attention first, then the matrix and the figures (each cell a link to its
check), then every claim with its evidence, grouped by area."""
from __future__ import annotations

import html
import json
from collections import Counter
from string import Template

from .findings import NEEDS_ATTENTION, Findings, first_line, format_figure, short_id
from .history import claim_key
from .records import (COULD_NOT_CHECK, ERROR, FAILED, FLAKY, INTERRUPTED, KNOWN_DIVERGENCE, OUTCOMES, PASSED,
                      RECOVERED, SKIPPED, Check)

e = html.escape  # every value on the page goes through it

# The outcome and verdict classes are the records' words: a renamed outcome keeps its colours.
_CSS = Template("""
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
h1{font-size:1.4em} .meta{color:#555}
.counts span{display:inline-block;margin-right:1em;padding:.2em .6em;border-radius:4px;font-weight:600}
.$passed{background:#e6f4ea}.$failed{background:#fde7e9}.$error{background:#fbe3c6}.$skipped{background:#eceff1}.$interrupted{background:#fff3c4}
details{border:1px solid #ddd;border-radius:4px;margin:.3em 0;padding:.3em .6em}
summary{cursor:pointer} summary .o{display:inline-block;min-width:5.5em;margin-right:.4em;white-space:nowrap;font-weight:600;text-transform:uppercase;font-size:12px}
details.$passed .o{color:#137333} details.$failed .o{color:#c5221f} details.$error .o{color:#b06000} details.$skipped .o{color:#5f6368}
pre{background:#f7f7f7;padding:.6em;overflow:auto;max-height:30em;font-size:12px}
.claim{font-weight:600} .id{color:#777;font-size:12px}
h2{font-size:1.1em;margin:1.2em 0 .3em} h2 .tally{font-weight:400;color:#555;font-size:.85em}
.fatal{background:#fde7e9;padding:.5em;border-radius:4px;font-weight:600}
.$known_divergence{background:#fff0d9} details.$known_divergence .o{color:#a05a00}
.$could_not_check{background:#e3e8fd} details.$could_not_check .o{color:#3c4fb5}
.unchecked{border:2px solid #3c4fb5;border-radius:6px;padding:.2em 1em;margin:1em 0} .unchecked li{margin:.3em 0}
.attention{border:2px solid #c5221f;border-radius:6px;padding:.2em 1em;margin:1em 0} .attention li{margin:.3em 0}
.verdict{color:#c5221f;font-size:12px;text-transform:uppercase} .verdict.$recovered{color:#137333} .verdict.$flaky{color:#b06000}
.timeline .t{display:inline-block;width:8px;height:12px;margin-left:1px;vertical-align:middle;background:#ccc}
.timeline .t.$passed{background:#34a853}.timeline .t.$failed,.timeline .t.$error{background:#ea4335}
.timeline .t.$known_divergence{background:#f6ae2d}.timeline .t.$interrupted{background:#fbbc04}
.timeline .t.$could_not_check{background:#7986cb}
details.fold{border:none;padding:0} details.fold summary{font-weight:600;margin:.6em 0}
table.matrix{border-collapse:collapse;margin:.5em 0} table.matrix td,table.matrix th{border:1px solid #ddd;padding:.2em .5em;font-size:12px}
""").substitute(passed=PASSED, failed=FAILED, error=ERROR, skipped=SKIPPED, interrupted=INTERRUPTED,
               known_divergence=KNOWN_DIVERGENCE, could_not_check=COULD_NOT_CHECK, recovered=RECOVERED, flaky=FLAKY)


def render_html(f: Findings) -> str:
    """One self-contained page: counts, cluster, then every claim with its evidence."""
    s = f.summary
    counts = "".join(f'<span class="{o}">{s[o]} {o}</span>' for o in OUTCOMES)
    areas: dict[str, list[Check]] = {}
    for c in f.checks:  # grouped by area (the claim's marker), in run order
        areas.setdefault(c.markers[0] if c.markers else "other", []).append(c)
    rows = []
    for area, checks in areas.items():
        tally = Counter(c.outcome for c in checks)
        rows.append(f'<h2>{e(area)} <span class="tally">' + ", ".join(
            f"{tally[o]} {o}" for o in OUTCOMES if tally[o]) + "</span></h2>")
        rows += [_check(c, f) for c in checks]
    problems = "".join(f'<p class="fatal">{e(problem)}</p>' for problem in f.problems)
    runtimes = "".join(f'<p class="meta">{e(line)}</p>\n' for line in f.runtimes)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>podshare report {e(f.run.id)}</title>
<style>{_CSS}</style></head><body>
<h1>podshare: do the containers of one pod share what Kubernetes promises?</h1>
<p class="counts">{counts}</p>
<p class="meta">{e(f.cluster_line)}</p>
{runtimes}<p class="meta">run {e(f.run.id)}, started {e(f.run.started_at)},
{f.run.duration_s:.1f}s, podshare {e(f.run.podshare_version)}</p>
{problems}{_attention(f)}{_unchecked(f)}{_rerun(f)}{_matrix(f)}{_figures(f)}{''.join(rows)}
</body></html>
"""


def _link(f: Findings, c: Check) -> str:
    return f'<a href="#{f.anchor(c)}">{e(short_id(c))}</a>'


def _matrix(f: Findings) -> str:
    """The node summary, then claim x column, each cell a link to its check; a node's
    column names its pool, versions and state."""
    matrix = f.matrix
    if not matrix:
        return ""
    nodes = {k: f.nodes[node] for k, where in matrix.where.items() if (node := where.node) in f.nodes}
    head = "".join(f"<th>{e(k)}" + (f'<br><span class="id">{e(nodes[k].line)}</span>' if k in nodes else "")
                   + "</th>" for k in matrix.columns)
    body = "".join(
        f'<tr><td>{e(matrix.sentence(claim_id))} <a class="id" href="#{f.anchor(next(iter(cells.values())))}">'
        f'{e(claim_id.split("::")[-1])}</a></td>' + "".join(
            f'<td class="{cells[k].outcome}"><a href="#{f.anchor(cells[k])}">{e(cells[k].outcome)}</a></td>'
            if k in cells else '<td class="id">not applicable</td>' for k in matrix.columns) + "</tr>"
        for claim_id, cells in matrix.rows.items())
    summary = "".join(f"<li>{e(line)}</li>" for line in f.node_summary)
    return (f"<ul>{summary}</ul>" if summary else "") + \
        f'<h2>{e(matrix.title)}</h2><table class="matrix"><tr><th>claim</th>{head}</tr>{body}</table>'


def _figures(f: Findings) -> str:
    """Measurement x runtime, each cell a link to the check that took the figure."""
    if not f.figures:
        return ""
    columns, rows = f.figures
    head = "".join(f"<th>{e(k)}</th>" for k in columns)
    body = "".join(f'<tr><td class="id">{e(name)}</td>' + "".join(
        f'<td class=""><a href="#check-{cells[k][1]}">{e(format_figure(cells[k][0]))}</a></td>' if k in cells
        else "<td></td>" for k in columns) + "</tr>" for name, cells in rows.items())
    return ('<h2>How fast the sharing is <span class="tally">median (p95, samples)</span></h2>'
            f'<table class="matrix"><tr><th>measurement</th>{head}</tr>{body}</table>')


def _section(kind: str, title: str, items: str) -> str:
    """A framed list above the claims: what needs attention, what could not be checked."""
    return f'<section class="{kind}"><h2>{title}</h2><ul>{items}</ul></section>'


def _flagged(f: Findings, c: Check, verdict: str | None) -> str:
    return _link(f, c) + (f" {_verdict_tag(verdict)}" if verdict else "")


def _attention(f: Findings) -> str:
    if not f.attention:
        return ""
    items = "".join(
        f'<li class="{FAILED}"><b>{e(cause.headline)}</b>: {e(cause.why)}; first: '
        f'{e(first_line(cause.checks[0][0].message))} — ' + ", ".join(_flagged(f, c, v) for c, v in cause.checks)
        + "</li>" for cause in f.attention.causes)
    items += "".join(f'<li class="{c.outcome}">{_flagged(f, c, v)} — {e(first_line(c.message))}</li>'
                     for c, v in f.attention.rest)
    return _section("attention", f"Needs attention ({len(f.attention.flagged)})", items)


def _unchecked(f: Findings) -> str:
    """The claims the cluster moved under, one item per cause, apart from Needs attention."""
    if not f.not_checked:
        return ""
    items = "".join(
        f'<li class="{COULD_NOT_CHECK}">{len(checks)} claim{"s" * (len(checks) != 1)}: {e(cause)} — '
        + ", ".join(_link(f, c) for c in checks) + "</li>" for cause, checks in f.not_checked.items())
    total = sum(len(checks) for checks in f.not_checked.values())
    return _section("unchecked", f"Could not check ({total}): the cluster moved under the run", items)


def _rerun(f: Findings) -> str:
    """The claims run again on a fresh probe pod after a disruption, each with both attempts."""
    if not f.rerun:
        return ""
    items = "".join(f'<li class="{c.outcome}">{_link(f, c)} — {e(first_line(c.message, 400))}</li>' for c in f.rerun)
    return _section("unchecked", f"Disrupted, then re-run on a fresh pod ({len(f.rerun)})", items)


def _timeline(f: Findings, c: Check) -> str:
    """The claim's last runs as small squares, oldest first (hover: run, outcome, time)."""
    if not f.history:
        return ""
    points = f.history.timeline(claim_key(c))
    squares = "".join(f'<i class="t {e(p.outcome)}" title="{e(p.run_id)} {e(p.started_at)}: {e(p.outcome)}, '
                      f'{p.duration_s:.1f}s"></i>' for p in points)
    verdict = f.verdict(c)
    return f' <span class="timeline">{squares}</span>' + (f" {_verdict_tag(verdict)}" if verdict else "")


def _verdict_tag(verdict: str) -> str:
    return f'<b class="verdict {verdict.replace(" ", "-")}">{e(verdict)}</b>'


def _collapsible(title: str, text: str, lines: int = 25) -> str:
    """Short evidence in the open, long evidence folded (the page stays readable)."""
    count = text.count("\n") + 1
    if count <= lines:
        return f"<h4>{title}</h4><pre>{e(text)}</pre>"
    return f"<details class=\"fold\"><summary>{title} ({count} lines)</summary><pre>{e(text)}</pre></details>"


def _check(c: Check, f: Findings) -> str:
    body = []
    if c.message:
        body.append(f"<h4>Message</h4><pre>{e(c.message)}</pre>")
    if c.figures:
        body.append("<h4>Figures</h4><pre>" + e("\n".join(f"{n}: {format_figure(v)}" for n, v in c.figures.items()))
                    + "</pre>")
    if c.evidence:
        facts = {k: v for k, v in c.evidence.items() if k != "transcript"}
        if facts:
            body.append(_collapsible("Evidence", json.dumps(facts, indent=2, default=str)))
        if "transcript" in c.evidence:
            body.append(_collapsible("Probe transcript", json.dumps(c.evidence["transcript"], indent=2, default=str), 0))
    if c.diagnostics:
        body.append(_collapsible("Pod diagnostics", json.dumps(c.diagnostics, indent=2, default=str), 0))
    open_attr = " open" if c.outcome in (*NEEDS_ATTENTION, COULD_NOT_CHECK) else ""
    runtime = f" · {e(c.runtime_class)}" if c.runtime_class else ""
    return (f'<details id="{f.anchor(c)}" class="{c.outcome}"{open_attr}><summary><span class="o">{c.outcome}</span> '
            f'<span class="claim">{e(c.claim)}</span> <span class="id">{e(c.id)}{runtime} · {c.duration_s:.2f}s</span>'
            f'{_timeline(f, c)}</summary>{"".join(body)}</details>')
