"""A failed claim on the terminal: a few lines for a person, not a traceback.

pytest prints each failure's traceback and every section a plugin adds: for a
claim, that is the harness's own code and the pods' state, dozens of lines
each (16 claims failing with one EACCES cause printed 1,466 lines). A claim's
failure is its sentence, what broke and where the evidence is; the traceback's
message is kept, the pods' state goes to the reports (results.json's evidence
and diagnostics, junit's properties). `--tb` given explicitly keeps pytest's own
output, for whoever debugs the harness.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from .evidence import Evidence

SHORT = "auto"  # pytest's --tb when nobody asked for a style


def applies(item: pytest.Item) -> bool:
    """A claim of the suites (not a harness test) in a run that asked for no --tb."""
    return item.config.option.tbstyle == SHORT and item.path.parent.name == "suites"


def block(claim: str, check_id: str, message: str, ev: Evidence | None, reports_dir: str) -> str:
    """What broke (first: pytest's short summary shows a failure's first line), the
    claim's sentence, and where its evidence is."""
    answers = len(ev.transcript) if ev is not None else 0
    pods = len(ev.pods) if ev is not None else 0
    where = Path(reports_dir) / "results.json"
    held = f"{answers} probe answer{'s' * (answers != 1)}" + (
        f", the state of {pods} pod{'s' * (pods != 1)}" if pods else "")
    return "\n".join([" ".join(message.split()) or "no message", f"claim: {claim}",
                      f"evidence: {held} in {where} ({check_id}); --tb=short shows the traceback"])
