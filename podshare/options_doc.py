"""The options table of docs/options.md, generated from the one table
(podshare.settings.OPTIONS), so the documentation cannot drift from the code:

    python -m podshare.options_doc            rewrite docs/options.md's table in place
    python -m podshare.options_doc --check    exit 1 if it differs (tests do this)
"""
from __future__ import annotations

import sys
from pathlib import Path

from .settings import OPTIONS, Option

BEGIN = "<!-- options: generated from podshare/settings.py by `python -m podshare.options_doc`; do not edit -->"
END = "<!-- /options -->"
DOC = Path(__file__).resolve().parent.parent / "docs" / "options.md"


def _env(o: Option) -> str:
    how = {bool: " (1)", list: " (comma-separated)"}.get(o.type, "")
    return f"{o.env}{how}"


def _default(o: Option) -> str:
    if o.shown_default:
        return o.shown_default
    if o.default is None:
        return "none"
    if o.type is bool:
        return "on" if o.default else "off"
    text = f"{o.default:g}" if isinstance(o.default, float) else str(o.default)
    return f"`{text}`" if "/" in text or ":" in text else text


def _meaning(o: Option) -> str:
    choices = f" ({', '.join(o.choices)})" if o.choices else ""
    return (o.help + choices).replace("|", "\\|")


def table() -> str:
    rows = [f"| `{o.flag}` | {_env(o)} | {o.ini} | {_default(o)} | {_meaning(o)} |" for o in OPTIONS]
    return "\n".join(["| option | env | ini | default | meaning |", "|---|---|---|---|---|", *rows])


def rewritten(text: str) -> str:
    """`text` with the block between the markers replaced by the table."""
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[:start] + "\n" + table() + "\n" + text[end:]


def main(argv: list[str]) -> int:
    text = DOC.read_text()
    fresh = rewritten(text)
    if "--check" in argv:
        if fresh != text:
            print("docs/options.md's options table differs from podshare/settings.py: run python -m podshare.options_doc",
                  file=sys.stderr)
            return 1
        return 0
    DOC.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
