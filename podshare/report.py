"""A run's report: results.json, the record every reader reads back, and beside it
report.html, summary.md and metrics.prom. What they say is worked out once
(podshare.findings); each rendering has a module of its own.

Built from test outcomes and evidence only; knows nothing of pytest or Kubernetes.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .findings import Findings, counts
from .history import History
from .html_report import render_html
from .markdown_report import render_markdown
from .metrics import exposition
from .records import RESULTS_VERSION, Check, ClusterFacts, RunInfo


@dataclass
class RunReport:
    run: RunInfo
    cluster: ClusterFacts
    checks: list[Check] = field(default_factory=list)
    history: History | None = None  # past runs with this one last (--history-dir, podshare history)

    def __post_init__(self) -> None:
        if isinstance(self.cluster, dict):  # the plugin's facts, as long as it keeps them as results.json has them
            self.cluster = ClusterFacts.from_json(self.cluster)

    @property
    def summary(self) -> dict[str, int]:
        return counts(self.checks)

    def findings(self) -> Findings:
        return Findings.of(self.run, self.cluster, self.checks, self.history)

    def to_json(self) -> dict[str, Any]:
        body = {"version": RESULTS_VERSION, "run": self.run.to_json(), "cluster": self.cluster.to_json(),
                "checks": [asdict(c) for c in self.checks], "summary": self.summary}
        if self.history:
            body["changes"] = self.history.changes()  # claim @ class -> newly failing / recovered / flaky
        return body

    def write(self, directory: Path) -> list[Path]:
        directory.mkdir(parents=True, exist_ok=True)
        paths = [directory / "results.json", directory / "report.html", directory / "summary.md",
                 directory / "metrics.prom"]
        findings = self.findings()
        paths[0].write_text(json.dumps(self.to_json(), indent=2, default=str) + "\n")
        paths[1].write_text(render_html(findings))
        paths[2].write_text(render_markdown(findings))
        paths[3].write_text(exposition(self.run, self.cluster, self.checks))
        return paths

    @classmethod
    def from_json(cls, results: dict[str, Any], history: History | None = None) -> "RunReport":
        return cls(run=RunInfo.from_json(results["run"]), cluster=ClusterFacts.from_json(results.get("cluster", {})),
                   history=history, checks=[Check.from_json(c) for c in results["checks"]])
