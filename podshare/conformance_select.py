"""Which claims a conformance-image run checks (E2E_FOCUS, E2E_SKIP), and the
lines Hydrophone reads its progress from. A pytest plugin loaded only by the
conformance image's entrypoint (`-p podshare.conformance_select`, see
conformance_image.py), so a plain `podshare run` is untouched.

Ginkgo matches --focus and --skip against a spec's full text, labels included;
pytest's -k takes no regex, so each claim gets a text of the same kind and the
regexes select items here:

    [podshare] [Conformance] [identity] suites/test_identity.py::test_x[...] The claim's sentence.

Every claim carries `[Conformance]`, so Hydrophone's default focus
(`\\[Conformance\\]`, cmd/root.go) selects them all.
"""
from __future__ import annotations

import os
import re

import pytest

from . import dimensions, outcomes
from .markers import MARKERS

FOCUS_ENV, SKIP_ENV = "E2E_FOCUS", "E2E_SKIP"
TOTAL = pytest.StashKey[int]()


def spec_text(check_id: str, markers: list[str], sentence: str) -> str:
    labels = "".join(f" [{m}]" for m in sorted(markers))
    return f"[podshare] [Conformance]{labels} {check_id} {sentence}"


def selected(spec: str, focus: re.Pattern | None, skip: re.Pattern | None) -> bool:
    """As Ginkgo: focused (or no focus) and not skipped; a search, not a full match."""
    return (focus is None or bool(focus.search(spec))) and not (skip is not None and skip.search(spec))


def pattern(name: str, env=os.environ) -> re.Pattern | None:
    """An empty or absent variable selects nothing away (Hydrophone sends E2E_SKIP="")."""
    text = env.get(name, "")
    return re.compile(text) if text else None


def item_spec(item: pytest.Item) -> str:
    markers = [m.name for m in item.iter_markers() if m.name in MARKERS]
    return spec_text(dimensions.check_id(item), markers, outcomes.claim_of(item))


@pytest.hookimpl(tryfirst=True)  # before -m, -k and podshare's own: the total is what was collected
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    config.stash[TOTAL] = len(items)
    focus, skip = pattern(FOCUS_ENV), pattern(SKIP_ENV)
    dimensions.deselect(config, items, lambda i: not selected(item_spec(i), focus, skip))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Hydrophone polls e2e.log for Ginkgo's `Will run N of M specs` and counts
    the `•` after it (pkg/conformance/client/logs.go, parseTestProgress); a log
    without that line stops it (log.Fatal), so the entrypoint prints this one
    from a collection made before the run."""
    terminal = session.config.pluginmanager.get_plugin("terminalreporter")
    if terminal is not None:
        terminal.write_line(f"Will run {len(session.items)} of {session.config.stash.get(TOTAL, 0)} specs")


class Progress:
    """One `•` per claim that ended (Ginkgo prints one per spec), so Hydrophone's
    progress counts up; in an xdist controller too, which replays the workers' reports."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        terminal = self.config.pluginmanager.get_plugin("terminalreporter")
        if report.when == "teardown" and terminal is not None:
            terminal.write("\u2022")


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # a worker's terminal is nobody's
        config.pluginmanager.register(Progress(config), "podshare-conformance-progress")
