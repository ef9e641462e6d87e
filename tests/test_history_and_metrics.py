"""The trend and the metrics of nightly runs, for real: three runs into one
history store, the middle one with a claim broken through --pod-manifest, must
show that claim newly failing and then recovered; a run's metrics pushed to a
real Pushgateway (Debian's prometheus-pushgateway) are read back from it."""
from __future__ import annotations

import json
import re
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import PROJECT, run_suites

CLAIM = "test_file_written_in_alpha_is_read_byte_exact_in_beta"
SELECTION = ("-m", "volume", "-k", CLAIM)
BROKEN = str(PROJECT / "tests" / "variants" / "split-volumes.yaml")


def run(reports: Path, *extra: str) -> dict:
    done = run_suites("--reports-dir", str(reports), *SELECTION, *extra)
    results = json.loads((reports / "results.json").read_text())
    assert results["run"]["fatal"] is None, done.stdout[-2000:]
    return results


@pytest.mark.usefixtures("kube")
def test_the_trend_shows_a_regression_and_its_recovery(tmp_path):
    store = tmp_path / "history"
    first = run(tmp_path / "1", "--history-dir", str(store))
    broken = run(tmp_path / "2", "--history-dir", str(store), "--pod-manifest", BROKEN)
    fixed = run(tmp_path / "3", "--history-dir", str(store))
    claims = {f"suites/test_volumes.py::{CLAIM}[{v}] @ default" for v in ("disk", "memory")}
    assert {c["outcome"] for c in first["checks"]} == {"passed"} and "changes" in first
    assert broken["changes"] == {c: "newly failing" for c in claims}
    assert fixed["changes"] == {c: "recovered" for c in claims}
    page = (tmp_path / "2" / "report.html").read_text()
    assert page.index("Needs attention (2)") < page.index("<h2>volume")
    assert page.count('<b class="verdict newly-failing">newly failing</b>') >= 2
    page = (tmp_path / "3" / "report.html").read_text()
    strip = '<i class="t passed"[^>]*></i><i class="t failed"[^>]*></i><i class="t passed"[^>]*></i>'
    assert len(re.findall(strip, page)) == 2, "each claim's timeline shows passed, failed, passed"
    # The same store rendered afterwards, as an operator does with a fetched one.
    shown = subprocess.run([str(Path(PROJECT) / ".venv" / "bin" / "podshare"), "history", str(store),
                            "--reports-dir", str(tmp_path / "shown")], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert "recovered: suites/test_volumes.py::" in shown.stdout and "3 runs" in shown.stdout
    assert len(re.findall(strip, (tmp_path / "shown" / "report.html").read_text())) == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def pushgateway(tmp_path):
    """Debian's Pushgateway on a free local port, for this test only."""
    port = _free_port()
    proc = subprocess.Popen(["prometheus-pushgateway", f"--web.listen-address=127.0.0.1:{port}",
                             "--persistence.file="],  # Debian's build persists to /var/lib by default
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "pushgateway.log", "w"))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while True:
        try:
            urllib.request.urlopen(url + "/-/ready", timeout=1).read()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "pushgateway.log").read_text()
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.mark.usefixtures("kube")
def test_metrics_pushed_to_a_pushgateway_are_read_back(tmp_path, pushgateway):
    results = run(tmp_path / "r", "--pushgateway", pushgateway)
    assert results["run"]["pushgateway"].startswith(f"pushed to {pushgateway}/metrics/job/podshare/context/")
    scraped = urllib.request.urlopen(pushgateway + "/metrics", timeout=5).read().decode()
    ours = [line for line in scraped.splitlines() if line.startswith("podshare_claim_passed{")]
    assert len(ours) == 2 and all(line.endswith(" 1") and 'job="podshare"' in line for line in ours), ours
    assert any(f'claim="suites/test_volumes.py::{CLAIM}[disk]"' in line for line in ours), ours
    assert "podshare_run_timestamp_seconds{" in scraped
    written = (tmp_path / "r" / "metrics.prom").read_text()
    assert written.count("podshare_claim_passed{") == 2


@pytest.mark.usefixtures("kube")
def test_a_pushgateway_that_cannot_be_reached_is_said_not_hidden(tmp_path):
    url = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    results = run(tmp_path / "r", "--pushgateway", url)
    assert results["run"]["pushgateway"].startswith(f"NOT pushed: could not push to the Pushgateway at {url}")
    assert {c["outcome"] for c in results["checks"]} == {"passed"}


def test_a_store_name_is_built_only_from_a_valid_run_id_and_start(tmp_path):
    """History.record names a file by the run's start (parsed) and id (checked):
    anything else is not a run, and nothing is written."""
    from podshare.history import History, store_name
    good = {"run": {"id": "20261129-000000-abcdef", "started_at": "2026-11-29T01:02:03+01:00"}, "checks": []}
    assert store_name(good) == "2026-11-29T000203Z-20261129-000000-abcdef.json"
    for run_id, started in (("/etc/passwd", "2026-11-29T00:00:00+00:00"), ("..", "2026-11-29T00:00:00+00:00"),
                            ("a/b", "2026-11-29T00:00:00+00:00"), ("ok-id", "../../x"), ("ok-id", "2026-11-29"),
                            ("ok-id", None), (None, "2026-11-29T00:00:00+00:00"), ("UPPER", "2026-11-29T00:00:00Z")):
        with pytest.raises(ValueError, match="not a run"):
            History.record(tmp_path / "store", {"run": {"id": run_id, "started_at": started}, "checks": []})
    assert list((tmp_path / "store").iterdir()) == []


def test_pushgateway_credentials_are_sent_but_never_recorded(tmp_path):
    """A --pushgateway URL with user:password@: the gateway gets basic auth; the
    report's pytest args, its run.pushgateway and the error say no password."""
    import http.server
    import threading
    from podshare.metrics import push
    from podshare.records import RunInfo
    seen = {}

    class Gateway(http.server.BaseHTTPRequestHandler):
        def do_PUT(self):
            seen["auth"] = self.headers.get("Authorization")
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(401 if seen.get("refuse") else 200)
            self.end_headers()

        def log_message(self, *args):
            pass
    server = http.server.HTTPServer(("127.0.0.1", 0), Gateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://ops:s3cret@127.0.0.1:{server.server_port}"
    try:
        pushed = push(url, "x 1\n", {"context": "c"})
        assert seen["auth"] == "Basic b3BzOnMzY3JldA=="  # ops:s3cret
        seen["refuse"] = True
        with pytest.raises(OSError) as refused:
            push(url, "x 1\n", {"context": "c"})
    finally:
        server.shutdown()
    run = RunInfo(id="r", pytest_args=["--pushgateway", url, f"--pushgateway={url}"])
    run.pushgateway = "pushed to " + pushed
    recorded = json.dumps(run.to_json()) + str(refused.value)
    assert "s3cret" not in recorded and "ops:" not in recorded, recorded
    assert f"http://***@127.0.0.1:{server.server_port}" in run.pytest_args
