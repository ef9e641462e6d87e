"""A run as Prometheus metrics (text exposition format 0.0.4), written beside
the reports and, with --pushgateway, pushed to a Pushgateway, so a nightly run
ends up on the dashboards and alerts operators already have."""
from __future__ import annotations

import base64
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from .records import (COULD_NOT_CHECK, ERROR, FAILED, INTERRUPTED, KNOWN_DIVERGENCE, PASSED, Check, ClusterFacts,
                      RunInfo, without_credentials)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
HELD = {PASSED: 1, FAILED: 0, ERROR: 0, INTERRUPTED: 0, KNOWN_DIVERGENCE: 0}  # skipped: no sample
# Whether the run checked the claim at all: a claim the cluster moved under
# (could-not-check) or the run stopped in has 0 and says nothing about the promise.
CHECKED = {**{outcome: 1 for outcome in HELD}, INTERRUPTED: 0, COULD_NOT_CHECK: 0}


def _label(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: Any) -> str:
    return "{" + ",".join(f'{k}="{_label(v)}"' for k, v in labels.items()) + "}"


def exposition(run: RunInfo, cluster: ClusterFacts, checks: list[Check]) -> str:
    """podshare_claim_passed, podshare_claim_checked, podshare_claim_duration_seconds
    (per claim, runtime class and node), podshare_figure (the perf suite's medians and p95s) and
    podshare_run_timestamp_seconds."""
    passed, checked, duration, figures = [], [], [], []
    for c in checks:
        node = c.node or cluster.node  # the node its pods ran on, also where the node is not a dimension
        dims = c.dimensions.metrics_labels(node, cluster.nodes[node].pool if node in cluster.nodes else None)
        labels = _labels(claim=c.claim_id or c.id, **dims)
        if c.outcome in CHECKED:
            checked.append(f"podshare_claim_checked{labels} {CHECKED[c.outcome]}")
        if c.outcome not in HELD:
            continue
        passed.append(f"podshare_claim_passed{labels} {HELD[c.outcome]}")
        duration.append(f"podshare_claim_duration_seconds{labels} {c.duration_s:g}")
        for name, figure in (c.figures or {}).items():
            for stat in ("median", "p95"):
                if stat in figure:
                    figures.append("podshare_figure" + _labels(
                        measurement=name, unit=figure["unit"], stat=stat, **dims) + f" {figure[stat]:g}")
    lines = [
        "# HELP podshare_claim_passed 1 if the claim held in the run, 0 if it did not (a known divergence is 0).",
        "# TYPE podshare_claim_passed gauge", *passed,
        "# HELP podshare_claim_checked 1 if the run checked the claim, 0 if the cluster moved under it or the run "
        "stopped in it (then there is no podshare_claim_passed sample for a claim the cluster moved under).",
        "# TYPE podshare_claim_checked gauge", *checked,
        "# HELP podshare_claim_duration_seconds How long checking the claim took.",
        "# TYPE podshare_claim_duration_seconds gauge", *duration,
        "# HELP podshare_figure A perf measurement between two containers of a pod (median or p95).",
        "# TYPE podshare_figure gauge", *figures,
        "# HELP podshare_run_timestamp_seconds When the run started (Unix time).",
        "# TYPE podshare_run_timestamp_seconds gauge",
        f"podshare_run_timestamp_seconds {float(run.started_epoch):.3f}",
        "# HELP podshare_run_fatal 1 if podshare could not check the claims at all.",
        "# TYPE podshare_run_fatal gauge",
        f"podshare_run_fatal {1 if run.fatal else 0}",
    ]
    return "\n".join(lines) + "\n"


def push(url: str, body: str, grouping: dict[str, str], timeout: float = 10.0) -> str:
    """PUT the metrics to a Pushgateway under job=podshare and `grouping`, replacing
    that group's previous push. Returns the URL pushed to; raises OSError with the
    gateway's answer otherwise. Neither says the URL's credentials (records.without_credentials)."""
    path = "/metrics/job/podshare" + "".join(
        f"/{urllib.parse.quote(k, safe='')}/{urllib.parse.quote(v or 'none', safe='')}" for k, v in grouping.items())
    parts = urllib.parse.urlsplit(url)
    headers = {"Content-Type": CONTENT_TYPE}
    if parts.username is not None:  # user:password@ in the URL: basic auth, and out of the URL itself
        credentials = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
        url = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    target = url.rstrip("/") + path
    request = urllib.request.Request(target, data=body.encode(), method="PUT", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            answer.read()
    except urllib.error.HTTPError as exc:
        raise OSError(f"the Pushgateway at {without_credentials(url)} refused the metrics: {exc.code} "
                      f"{exc.read()[:300]!r}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise OSError(without_credentials(f"could not push to the Pushgateway at {url}: "
                                          f"{getattr(exc, 'reason', exc)}")) from None
    return without_credentials(target)
