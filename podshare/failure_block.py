"""A failed claim on the terminal: a few lines for a person, not a traceback.

pytest prints each failure's traceback and every section a plugin adds: for a
claim, that is the harness's own code and the pods' state, dozens of lines
each (16 claims failing with one EACCES cause printed 1,466 lines). A claim's
failure is its sentence, what broke and where the evidence is; the traceback's
message is kept, the pods' state goes to the reports (results.json's evidence
and diagnostics, junit's properties). `--tb` given explicitly keeps pytest's own
output, for whoever debugs the harness.

The block is a `Block`, not a string: pytest's short summary prints a string
longrepr whole where it sees a CI variable (CI, BUILD_NUMBER), every block's
three lines a second time (38 failed claims: 284 lines instead of 208). A
`Block` gives the summary and junit's message attribute its first line.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from .evidence import Evidence

SHORT = "auto"  # pytest's --tb when nobody asked for a style
MARK = "podshare_block"  # a report attribute: its longrepr is a block (it crosses xdist's wire as text)


@dataclass(frozen=True)
class Crash:
    """What pytest reads for a failure's one line (reprcrash): its message."""
    message: str


class Block:
    """A failed claim's longrepr: its lines in the failures section, the first
    one in the short summary and as junit's failure message."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.reprcrash = Crash(lines[0])

    def toterminal(self, tw) -> None:
        for line in self.lines:
            tw.line(line)

    def __str__(self) -> str:
        return "\n".join(self.lines)


def mark(report: pytest.TestReport, longrepr: Block) -> None:
    report.longrepr = longrepr
    setattr(report, MARK, True)


def restore(report: pytest.TestReport) -> None:
    """A worker's block arrives at the controller as text: a block again."""
    if getattr(report, MARK, False) and isinstance(report.longrepr, str):
        report.longrepr = Block(report.longrepr.splitlines())


def applies(item: pytest.Item) -> bool:
    """A claim of the suites (not a harness test) in a run that asked for no --tb."""
    return item.config.option.tbstyle == SHORT and item.path.parent.name == "suites"


def block(claim: str, check_id: str, message: str, ev: Evidence | None, reports_dir: str) -> Block:
    """What broke (first: pytest's short summary shows a failure's first line), the
    claim's sentence, and where its evidence is."""
    answers = len(ev.transcript) if ev is not None else 0
    pods = len(ev.pods) if ev is not None else 0
    where = Path(reports_dir) / "results.json"
    held = f"{answers} probe answer{'s' * (answers != 1)}" + (
        f", the state of {pods} pod{'s' * (pods != 1)}" if pods else "")
    return Block([" ".join(message.split()) or "no message", f"claim: {claim}",
                  f"evidence: {held} in {where} ({check_id}); --tb=short shows the traceback"])
