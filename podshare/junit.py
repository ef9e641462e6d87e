"""junit.xml in podshare's words: a claim that could not be checked is an
<error> naming the cause, not a <failure> (CI systems count failures as broken
promises). junitxml writes a failed call as a <failure> and offers no public
way to change an element's tag (user_properties only add <property>
elements), so the element is retagged right after junitxml wrote it, with the
counts; this object is all that touches junitxml's internals."""
from __future__ import annotations

from typing import Iterator

import pytest
from _pytest import junitxml

from .records import COULD_NOT_CHECK

# Where a report carries the could-not-check sentence (a call report's own
# user_properties: junitxml writes only the teardown report's as <property>).
MARK = "podshare_could_not_check"


def mark(report: pytest.TestReport, message: str) -> None:
    report.user_properties.append((MARK, message))


def could_not_check(report: pytest.TestReport) -> str | None:
    return next((value for name, value in getattr(report, "user_properties", ()) if name == MARK), None)


class CouldNotCheckAsError:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> Iterator[None]:
        result = yield
        message = could_not_check(report)
        xml = self.config.stash.get(junitxml.xml_key, None)
        if not message or xml is None:
            return result
        for node in xml.node_reporter(report).nodes:
            if node.tag == "failure" and report.when == "call":
                node.tag = "error"
                xml.stats["failure"] -= 1
                xml.stats["error"] += 1
            if node.tag == "error":  # setup: already an <error>; either way it names the cause
                node.set("message", junitxml.bin_xml_escape(message))
                node.set("type", COULD_NOT_CHECK)
        return result
