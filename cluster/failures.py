"""The last lines of `make test`: every failed test of every step, one line each
with the first words of why. CI keeps only the head and tail of a long log, and
a failure named without its reason cannot be acted on.

    python -m cluster.failures reports
"""
from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

WIDTH = 600  # characters of the reason per line: enough for a claim's sentence


def failures(reports: Path) -> list[str]:
    lines = []
    for junit in sorted(reports.glob("*/junit.xml"), key=lambda p: p.stat().st_mtime):
        try:
            root = ET.parse(junit).getroot()
        except ET.ParseError as exc:
            lines.append(f"{junit.parent.name}: unreadable junit.xml ({exc})")
            continue
        for case in root.iter("testcase"):
            bad = case.find("failure") if case.find("failure") is not None else case.find("error")
            if bad is None:
                continue
            why = " ".join((bad.get("message") or bad.text or "").split())
            name = f"{case.get('classname', '')}::{case.get('name', '')}"
            lines.append(f"{junit.parent.name}: {bad.tag} {name}: {why[:WIDTH]}")
    return lines


def main(argv: list[str]) -> int:
    found = failures(Path(argv[0] if argv else "reports"))
    print(f"---- failed, step by step ({len(found)})" if found else "---- no step reported a failed test")
    for line in found:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
