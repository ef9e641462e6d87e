"""The documentation holds together: every relative link in README.md, docs/*.md
and cluster/README.md reaches a file of the repository, every #anchor a heading
of its page (as GitHub makes anchors), no link leaves the repository except to a
public https page, no development machine's path is written anywhere, and the
README stays a screen's worth. Needs no cluster."""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

PROJECT = Path(__file__).resolve().parent.parent
PAGES = [PROJECT / "README.md", PROJECT / "cluster" / "README.md", *sorted((PROJECT / "docs").glob("*.md"))]
README_MAX_LINES = 250

FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
INLINE_CODE = re.compile(r"`+[^`\n]*`+")
# [text](target) and ![alt](target), the target up to the first space or ')'; reference definitions too.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(\S+)", re.M)
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.M)
# Paths of a development machine: a home directory, a workspace, another checkout beside this one.
MACHINE_PATH = re.compile(r"(/work/|/home/[a-z]|/Users/|/root/|\.\./shared\b|[A-Z]:\\\\)")


def prose(text: str) -> str:
    """The text without code blocks and inline code (links there are not links)."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: inline markup dropped, lowercase, punctuation
    dropped (letters, digits, '_', '-' and spaces kept), each space a '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = re.sub(r"<[^>]+>", "", text).lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch in "_- ")
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every anchor of a page; a repeated heading gets -1, -2... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for match in HEADING.finditer(FENCE.sub("", page.read_text())):
        slug = anchor(match[2])
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def links(page: Path) -> list[str]:
    text = prose(page.read_text())
    return [m[1] for m in LINK.finditer(text)] + [m[1] for m in REFERENCE.finditer(text)]


def test_the_anchor_is_githubs():
    assert anchor("Runtimes side by side: `--runtime-class`") == "runtimes-side-by-side---runtime-class"
    assert anchor("How fast the sharing is, per runtime (marker `perf`)") == \
        "how-fast-the-sharing-is-per-runtime-marker-perf"
    assert anchor("What podshare's identity can do") == "what-podshares-identity-can-do"
    assert anchor("Current stack: containerd 2, runc 1.5, Kubernetes 1.37") == \
        "current-stack-containerd-2-runc-15-kubernetes-137"


def test_the_pages_are_there():
    names = {p.name for p in (PROJECT / "docs").glob("*.md")}
    for needed in ("README.md", "quickstart.md", "options.md", "reports.md", "nightly.md", "air-gapped.md",
                   "security.md", "findings.md", "measurements.md", "architecture.md"):
        assert needed in names, needed


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(PROJECT)))
def test_every_link_reaches_its_file_and_heading(page: Path):
    broken = []
    for target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # a scheme: only public https pages may be linked
            if not target.startswith("https://"):
                broken.append(f"{target}: not a public https page")
            continue
        path, _, fragment = target.partition("#")
        dest = (page.parent / unquote(path)).resolve() if path else page
        if not dest.is_relative_to(PROJECT):
            broken.append(f"{target}: outside the repository")
            continue
        if not dest.exists():
            broken.append(f"{target}: no such file")
            continue
        if fragment:
            if dest.suffix != ".md":
                broken.append(f"{target}: an anchor into a file that is not Markdown")
            elif fragment not in anchors(dest):
                broken.append(f"{target}: no heading makes #{fragment} in {dest.relative_to(PROJECT)}")
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(PROJECT)))
def test_no_machine_paths(page: Path):
    found = [line for line in page.read_text().splitlines() if MACHINE_PATH.search(line)]
    assert not found, "\n".join(found)


def test_readme_fits_on_a_few_screens_with_the_two_commands_in_the_first():
    lines = (PROJECT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"
    first_screen = "\n".join(lines[:40])
    assert "make conformance" in first_screen and "make test" in first_screen


def test_every_docs_page_is_in_the_index():
    index = (PROJECT / "docs" / "README.md").read_text()
    missing = [p.name for p in (PROJECT / "docs").glob("*.md") if p.name != "README.md" and f"]({p.name}" not in index]
    assert not missing, missing


def test_the_node_ports_the_security_doc_allows_are_the_quotas():
    """docs/security.md's bound on node ports is manifests/fence.yaml's quota, and the
    quota is what the reverse-proxy pattern takes (one NodePort Service per
    node-and-class group) times the groups --workers runs at once by default."""
    from podshare import fence
    from podshare.manifests import load_manifests
    from podshare.settings import OPTIONS
    said = re.search(r"at most (\d+) node ports per\s+namespace", (PROJECT / "docs" / "security.md").read_text())
    assert said, "docs/security.md no longer says how many node ports a namespace may have"
    quota = next(d for d in fence.documents() if d["kind"] == "ResourceQuota")["spec"]["hard"]
    node_ports = [d for d in load_manifests("patterns/reverse-proxy.yaml")
                  if d["kind"] == "Service" and d["spec"].get("type") == "NodePort"]
    workers = next(o.default for o in OPTIONS if o.flag == "--workers")
    assert int(said[1]) == int(quota["services.nodeports"]) == len(node_ports) * workers
