"""The last lines of `make test`: every failed test of every step, one line each
with the first words of why. CI keeps only the head and tail of a long log, and
a failure named without its reason cannot be acted on.

    python -m cluster.failures reports [--unchecked-expected STEP ...]

A step whose could-not-checks are expected (userns: the nodes and classes that
refuse user namespaces; the harness checks exactly which) lists only its
failures. Claims that failed with the same words are one line; a step shows at
most PER_STEP lines, and says how many more its summary.md has.
"""
from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

WIDTH = 400  # characters of the reason per line: enough for a claim's sentence
PER_STEP = 12


def failures(reports: Path, unchecked_expected: frozenset[str] = frozenset()) -> list[str]:
    lines = []
    for junit in sorted(reports.glob("*/junit.xml"), key=lambda p: p.stat().st_mtime):
        step = junit.parent.name
        try:
            root = ET.parse(junit).getroot()
        except ET.ParseError as exc:
            lines.append(f"{step}: unreadable junit.xml ({exc})")
            continue
        by_reason: dict[str, list[str]] = {}
        for case in root.iter("testcase"):
            bad = case.find("failure") if case.find("failure") is not None else case.find("error")
            if bad is None:
                continue
            why = " ".join((bad.get("message") or bad.text or "").split())[:WIDTH]
            if step in unchecked_expected and why.startswith("could not check"):
                continue
            by_reason.setdefault(f"{bad.tag}: {why}", []).append(f"{case.get('classname', '')}::{case.get('name', '')}")
        shown = [f"{step}: {names[0]}{f' and {len(names) - 1} more' if len(names) > 1 else ''}: {reason}"
                 for reason, names in by_reason.items()]
        lines += shown[:PER_STEP]
        if len(shown) > PER_STEP:
            lines.append(f"{step}: {len(shown) - PER_STEP} more reasons in reports/{step}/summary.md")
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.failures")
    parser.add_argument("reports", nargs="?", default="reports")
    parser.add_argument("--unchecked-expected", action="append", default=[], metavar="STEP")
    args = parser.parse_args(argv)
    found = failures(Path(args.reports), frozenset(args.unchecked_expected))
    print(f"---- failed, step by step ({len(found)} lines)" if found else "---- no step reported a failed test")
    for line in found:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
