"""Log watcher sidecar: the app appends to a log file on a shared emptyDir and
a watcher container follows it with inotify. Broken in the wild where inotify
events do not cross containers (gVisor on shared volumes)."""
import pytest

from podshare.evidence import describe
from podshare.retry import GaveUp, NotYet, wait_until

pytestmark = [pytest.mark.pattern, pytest.mark.manifest("patterns/log-watcher.yaml")]

LINES, ROTATE_AT = 1000, 500


@pytest.fixture(scope="module")
def logs_pod(pattern_pods):
    return pattern_pods["Pod/podshare-logs"]


def test_watcher_receives_every_line_in_order_across_a_rotation(logs_pod, evidence):
    """Every line the app writes arrives at the watcher, in order, none lost or
    repeated, while the app rotates the file once (rename + new file), each read at
    a wake-up by the log's own inotify events."""
    app = logs_pod.container("app")
    written = app.run("write-log", path="/logs/app.log", lines=LINES, rotate_at=ROTATE_AT)
    # the watcher's own file, once the app is done: its event wakes the watcher, so what
    # the app's events did not bring shows at once, as lines read without their wake-up
    marked = logs_pod.container("watcher").run("write", path="/logs/after-the-app", size=1, seed="after")
    expected = [f"line {n:06d}" for n in range(1, LINES + 1)]

    def watcher_caught_up():
        seen = app.run("connect", port=7010)  # the watcher's port, over the shared localhost
        if not seen["ok"] or len(seen["peer"]["lines"]) < LINES:
            raise NotYet(f"watcher has {len(seen.get('peer', {}).get('lines', []))} of {LINES} lines")
        return seen["peer"]
    try:
        seen = wait_until(watcher_caught_up, timeout=30, what="the watcher to see every line")
    except GaveUp as exc:
        pytest.fail(f"the app's writes to the shared volume did not all reach the watcher: {exc}", pytrace=False)
    lines = seen["lines"]
    first_bad = next((i for i, (a, b) in enumerate(zip(lines, expected)) if a != b),
                     None if len(lines) == len(expected) else min(len(lines), len(expected)))
    evidence.update(writer=written, watcher_container=seen["container"], lines_seen=len(lines),
                    rotations_seen=seen["rotations"], first_mismatch=first_bad,
                    inotify_wakeups=seen["inotify_wakeups"], lines_without_wakeup=seen["lines_without_wakeup"],
                    other_wakeups=seen.get("other_wakeups"), marker=marked,
                    around_rotation=lines[ROTATE_AT - 2:ROTATE_AT + 2])
    # The transcript would repeat every line; the counts above are the evidence.
    evidence.transcript[:] = [t for t in evidence.transcript if "connect" not in t["command"]]
    assert written["ok"] and written["rotated_to"] == "/logs/app.log.1", (
        f"the app could not write its log: {describe(written)}" if not written["ok"] else
        f"the app rotated its log to {written.get('rotated_to')}, not /logs/app.log.1")
    assert seen["container"] == "watcher", f"port 7010 on localhost is {seen['container']!r}, not the watcher"
    assert lines == expected, (f"the watcher's copy of the log differs from line {first_bad + 1} on: it has "
                               f"{len(lines)} lines for the {LINES} the app wrote")
    assert seen["rotations"] == 1, f"the watcher saw {seen['rotations']} rotations, not 1"
    assert seen["inotify_wakeups"] >= 1 and seen["lines_without_wakeup"] == 0, (
        "inotify events in the shared volume did not carry the app's writes to the watcher: "
        f"{seen['lines_without_wakeup']} lines arrived without a wake-up by the log's own events "
        f"({seen['inotify_wakeups']} such wake-ups; {seen.get('other_wakeups')} by the watcher's own file only)")
