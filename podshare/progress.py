"""Live progress on a terminal: claims done of each group (node, RuntimeClass,
user-namespace setting) and what did not pass so far, on one line rewritten in
place, as pytest writes its "collecting ..." line; pytest's per-claim letters give
way to it. Not on a terminal (CI logs, pipes), or with -v, pytest's own
line-oriented output stays as it is.

    vm 50/50 | vm-current/gvisor 31/50, 2 failed | vm-sandboxed 12/50   93/150 in 2m41s

The controller of a side-by-side run sees test ids only (as xdist's scheduler):
each claim's group is read from its id's dimension segments, the same way.
"""
from __future__ import annotations

import shutil
import time
from collections import Counter
from typing import Callable

import pytest

from . import dimensions, junit

SEPARATOR = " | "


def label(group: str, segments: list[str]) -> str:
    """A group as people name it: node first, then class, then user namespaces."""
    if group == "default":
        return "claims"
    return "/".join(sorted(group.split("|"), key=segments.index))


def line(totals: dict[str, int], done: Counter, bad: dict[str, Counter], seconds: float, width: int) -> str:
    """The status line, at most `width` wide: finished groups give way first, then it is cut.
    `bad` counts, by what happened (failed, error, could not check), the claims of each group."""
    def part(group: str) -> str:
        said = [f"{bad[what][group]} {what}" for what in bad if bad[what][group]]
        return f"{group} {done[group]}/{totals[group]}" + (", " + ", ".join(said) if said else "")

    minutes, secs = divmod(int(seconds), 60)
    groups = list(totals)
    tail = (f"   {sum(done.values())}/{sum(totals.values())}" if len(groups) > 1 else "") + \
        f" in {minutes}m{secs:02d}s"
    shown = SEPARATOR.join(part(g) for g in groups)
    if len(shown) + len(tail) > width:
        ended = [g for g in groups if done[g] >= totals[g]]
        shown = SEPARATOR.join([part(g) for g in groups if g not in ended] +
                               [f"{len(ended)} done"] * bool(ended))
    return (shown + tail)[:max(width, 0)]


class Progress:
    """Registered in the controller or a single process; active on a terminal only."""

    def __init__(self, config: pytest.Config, segments: Callable[[], list[str]]) -> None:
        self.config = config
        self.segments = segments
        self.on_terminal = self.active = self.logging = False
        self.started = 0.0
        self.group_of: dict[str, str] = {}  # test id -> label
        self.totals: dict[str, int] = {}
        self.done = Counter()
        self.bad: dict[str, Counter] = {what: Counter() for what in ("failed", "error", "could not check")}
        self.seen_bad: set[str] = set()

    @property
    def terminal(self):
        return self.config.pluginmanager.get_plugin("terminalreporter")

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        terminal = self.terminal
        self.on_terminal = (terminal is not None and terminal.isatty() and not self.config.option.collectonly
                            and self.config.get_verbosity() <= 0)

    def start(self, ids: list[str]) -> None:
        segments = self.segments()
        self.group_of = {i: label(dimensions.group_of(i, segments), segments) for i in ids}
        self.totals = dict(Counter(self.group_of.values()))
        self.active, self.started = True, time.monotonic()
        self.terminal.showfspath = False  # the status line says where the run is

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """The suites' claims only: the harness's own tests keep pytest's letters."""
        if self.on_terminal and any(i.path.parent.name == "suites" for i in session.items):
            self.start([i.nodeid for i in session.items])

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node, ids: list[str]) -> None:
        if self.on_terminal and not self.active:  # every worker collects the same claims
            self.start(list(ids))  # shown from the first claim's end: xdist is still writing "bringing up nodes"

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> None:
        if self.active:  # the groups and their totals before the first pods start
            self.show()

    @pytest.hookimpl(wrapper=True)
    def pytest_report_teststatus(self, report: pytest.TestReport, config: pytest.Config):
        """No letter while pytest's terminal logs a report (the status line says it);
        the short summary's words stay."""
        category, letter, word = yield
        return (category, "", "") if self.active and self.logging else (category, letter, word)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport):
        self.logging = True
        try:
            return (yield)
        finally:
            self.logging = False
            if self.active and report.nodeid in self.group_of:
                self.tally(report)

    def tally(self, report: pytest.TestReport) -> None:
        group = self.group_of[report.nodeid]
        if report.failed and report.nodeid not in self.seen_bad:
            self.seen_bad.add(report.nodeid)
            what = "could not check" if junit.could_not_check(report) else "failed" if report.when == "call" else "error"
            self.bad[what][group] += 1
        if report.when == "teardown":
            self.done[group] += 1
            self.show()

    def show(self) -> None:
        terminal = self.terminal
        terminal.rewrite(line(self.totals, self.done, self.bad,
                              time.monotonic() - self.started, shutil.get_terminal_size().columns - 1), erase=True)
        terminal.flush()
        # as xdist's reporter does: whoever writes a line next starts it on a line of its own
        terminal.currentfspath = -2
