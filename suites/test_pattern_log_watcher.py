"""Log watcher sidecar: the app appends to a log file on a shared emptyDir and
a watcher container follows it with inotify. Broken in the wild where inotify
events do not cross containers (gVisor on shared volumes)."""
import pytest

from podshare.retry import NotYet, wait_until

pytestmark = pytest.mark.pattern

LINES, ROTATE_AT = 1000, 500


@pytest.fixture(scope="module")
def logs_pod(pod_factory):
    pod = pod_factory.apply("patterns/log-watcher.yaml")["Pod/podshare-logs"]
    pod_factory.start(pod)
    return pod


def test_watcher_receives_every_line_in_order_across_a_rotation(logs_pod, evidence):
    """Every line the app writes arrives at the watcher, in order, none lost or
    repeated, while the app rotates the file once (rename + new file)."""
    app = logs_pod.container("app")
    written = app.run("write-log", path="/logs/app.log", lines=LINES, rotate_at=ROTATE_AT)
    expected = [f"line {n:06d}" for n in range(1, LINES + 1)]

    def watcher_caught_up():
        seen = app.run("connect", port=7010)  # the watcher's port, over the shared localhost
        if not seen["ok"] or len(seen["peer"]["lines"]) < LINES:
            raise NotYet(f"watcher has {len(seen.get('peer', {}).get('lines', []))} of {LINES} lines")
        return seen["peer"]
    seen = wait_until(watcher_caught_up, timeout=30, what="the watcher to see every line")
    lines = seen["lines"]
    first_bad = next((i for i, (a, b) in enumerate(zip(lines, expected)) if a != b), None)
    evidence.update(writer=written, watcher_container=seen["container"], lines_seen=len(lines),
                    rotations_seen=seen["rotations"], first_mismatch=first_bad,
                    around_rotation=lines[ROTATE_AT - 2:ROTATE_AT + 2])
    # The transcript would repeat every line; the counts above are the evidence.
    evidence.transcript[:] = [t for t in evidence.transcript if "connect" not in t["command"]]
    assert written["ok"] and written["rotated_to"] == "/logs/app.log.1"
    assert seen["container"] == "watcher"
    assert lines == expected, f"lines differ from line {first_bad}"
    assert seen["rotations"] == 1
