"""Native sidecar: an init container with restartPolicy Always (Kubernetes
1.29+) runs beside the main container for the pod's life. Broken in the wild
by admission webhooks that dropped the unknown restartPolicy field, turning the
sidecar into a plain init container that blocks the pod; by a 1.35 kubelet that
left crashed main containers unrestarted beside a running sidecar
(kubernetes#136969); and, before kubernetes#125935, by the SIGTERM order of
several sidecars. The last two claims change the pod (a crash, then its
deletion): they run last, in this order."""
import re

import pytest

from podshare.errors import KubeError, PodNotReady
from podshare.evidence import could_not, describe
from podshare.retry import GaveUp
from podshare.term_log import read_while_terminating

pytestmark = [pytest.mark.pattern, pytest.mark.manifest("patterns/native-sidecar.yaml")]


@pytest.fixture(scope="module")
def sidecar_pod(pattern_pods, podshare_session):
    version = podshare_session.cluster.facts.server_version or ""
    found = re.match(r"v?(\d+)\.(\d+)", version)
    if found and (int(found[1]), int(found[2])) < (1, 29):
        pytest.skip(f"native sidecars need Kubernetes 1.29+, the server is {version}")
    return pattern_pods["Pod/podshare-sidecar"]


def test_restart_policy_always_survived_admission(sidecar_pod, evidence):
    """Read back from the API, the sidecar init container still has restartPolicy Always."""
    spec = next(c for c in sidecar_pod.read().spec.init_containers if c.name == "sidecar")
    evidence.update(init_container=spec.name, restart_policy=spec.restart_policy)
    assert spec.restart_policy == "Always", (
        f"the sidecar's restartPolicy read back as {spec.restart_policy!r}: admission dropped or changed it")


def test_sidecar_runs_before_the_main_container_starts_and_the_pod_is_ready(sidecar_pod, evidence):
    """The sidecar is running (started) and was started before the main container;
    the pod is Ready. The order comes from the containers' own readings of the
    kernel's boot clock (the API's timestamps, one-second resolution, are evidence)."""
    status = sidecar_pod.read().status
    sidecar = next(s for s in status.init_container_statuses if s.name == "sidecar")
    main = status.container_statuses[0]
    ready = next(c.status for c in status.conditions if c.type == "Ready")
    sidecar_agent = sidecar_pod.container("main").run("connect", port=7005)
    main_agent = sidecar_pod.container("sidecar").run("connect", port=7001)
    evidence.update(sidecar_started_at=sidecar.state.running and sidecar.state.running.started_at.isoformat(),
                    main_started_at=main.state.running and main.state.running.started_at.isoformat(),
                    sidecar_started=sidecar.started, pod_ready=ready,
                    started_boottime_ns={"sidecar": sidecar_agent.get("peer", {}).get("started_boottime_ns"),
                                         "main": main_agent.get("peer", {}).get("started_boottime_ns")})
    assert sidecar.state.running is not None and sidecar.started, "the sidecar is not running beside the main container"
    assert sidecar_agent["ok"] and main_agent["ok"], "the sidecar and the main container cannot reach each other"
    lead_ms = (main_agent["peer"]["started_boottime_ns"] - sidecar_agent["peer"]["started_boottime_ns"]) / 1e6
    assert lead_ms > 0, f"the main container started {-lead_ms:.1f} ms before its sidecar"
    assert ready == "True", "the pod with a native sidecar is not Ready"


def test_sidecar_shares_localhost_ipc_and_volume_with_the_main_container(sidecar_pod, ipc_key, ipc_name, evidence):
    """The sidecar and the main container reach each other on 127.0.0.1, see each
    other's System V semaphore and read each other's files in the emptyDir."""
    sidecar, main = sidecar_pod.container("sidecar"), sidecar_pod.container("main")
    checks = {
        "main_to_sidecar": main.run("connect", port=7005),
        "sidecar_to_main": sidecar.run("connect", port=7001),
        "sem_created": sidecar.run("sysv-sem-create", key=ipc_key, value=4),
        "sem_seen": main.run("sysv-sem-info", key=ipc_key),
        "file_written": sidecar.run("write", path=f"/data/disk/{ipc_name}", size=65536, seed=ipc_name),
        "file_read": main.run("read", path=f"/data/disk/{ipc_name}"),
    }
    evidence.update(checks)
    assert checks["main_to_sidecar"]["ok"] and checks["main_to_sidecar"]["peer"]["container"] == "sidecar", (
        f"the main container cannot reach the sidecar on 127.0.0.1: {describe(checks['main_to_sidecar'])}")
    assert checks["sidecar_to_main"]["ok"] and checks["sidecar_to_main"]["peer"]["container"] == "main", (
        f"the sidecar cannot reach the main container on 127.0.0.1: {describe(checks['sidecar_to_main'])}")
    assert checks["sem_seen"]["ok"] and checks["sem_seen"]["value"] == 4, (
        f"the main container does not see the sidecar's System V semaphore: {describe(checks['sem_seen'])}")
    assert checks["file_read"]["ok"] and checks["file_read"]["sha256"] == checks["file_written"]["sha256"], (
        f"the main container does not read the sidecar's file in the emptyDir: {describe(checks['file_read'])}")


PORTS = {"sidecar": 7005, "sidecar2": 7006, "main": 7001}  # manifests/patterns/native-sidecar.yaml
SIDECARS = ("sidecar", "sidecar2")  # in start order
TERM_LOG = "/data/disk/terminations.jsonl"  # where each agent notes its SIGTERM and exit
CRASH = 1  # the exit code stop-agent gives a crash (probes/agent.py's CRASH_EXIT_CODE)
# what the term log holds once sidecar, the last to stop, has its SIGTERM, in the order promised
EXPECTED = [("main", "sigterm"), ("main", "exit"), ("sidecar2", "sigterm"), ("sidecar2", "exit"), ("sidecar", "sigterm")]


def _state(pod) -> dict:
    """Each container's boot id (its agent's, new at every start) and restart count."""
    status = pod.read().status
    counts = {s.name: s.restart_count for s in (status.init_container_statuses or []) + (status.container_statuses or [])}
    ids = {}
    for name, port in PORTS.items():
        try:
            answer = pod.container(name).run("connect", port=port)
        except KubeError:  # a container that is not running takes no exec
            answer = {"ok": False}
        ids[name] = answer["peer"]["boot_id"] if answer["ok"] else None
    return {"boot_ids": ids, "restart_counts": counts,
            "ready": next((c.status for c in status.conditions or [] if c.type == "Ready"), None)}


def test_a_main_container_that_crashes_is_restarted_while_its_sidecars_keep_running(sidecar_pod, evidence):
    """main, the pod's only regular container, exits with 1 (a crash) while both
    sidecars run: the kubelet restarts it (a new boot id, its restartCount up)
    and the pod is Ready again; the sidecars ran on through it (the same boot
    ids, their restart counts unchanged). A 1.35 kubelet left such a container
    exited with restartCount 0 for good (kubernetes#136969, fixed by #137146)."""
    before = _state(sidecar_pod)
    try:
        sidecar_pod.restart_container("main", exit_code=CRASH)
        stuck = None
    except (GaveUp, PodNotReady) as exc:  # waited out, or the pod ended without it
        stuck = str(exc)
    after = _state(sidecar_pod)
    evidence.update(before=before, after=after, waited=stuck)
    silent = [name for name, boot_id in before["boot_ids"].items() if not boot_id]
    assert not silent, f"{' and '.join(silent)}'s agent did not answer on its port before the crash"
    counts = ", ".join(f"{name} {count}" for name, count in after["restart_counts"].items())
    assert stuck is None, (
        f"main, which crashed (exit code {CRASH}) beside its running sidecars, was not restarted: {stuck} "
        f"(restart counts: {counts}; kubernetes#136969)")
    assert after["boot_ids"]["main"] not in (None, before["boot_ids"]["main"]), "main's agent did not start again"
    for name in SIDECARS:
        assert after["boot_ids"][name] == before["boot_ids"][name], (
            f"{name} did not keep running while main was restarted: its agent answers with the boot id "
            f"{after['boot_ids'][name]}, not {before['boot_ids'][name]} (restart count "
            f"{before['restart_counts'][name]} before, {after['restart_counts'][name]} after)")
        assert after["restart_counts"][name] == before["restart_counts"][name], (
            f"{name}'s restartCount went from {before['restart_counts'][name]} to {after['restart_counts'][name]} "
            "when main crashed")
    assert after["ready"] == "True", f"the pod is not Ready after main's restart (Ready is {after['ready']})"


def test_on_deletion_main_stops_before_its_sidecars_and_they_stop_in_reverse_order(sidecar_pod, evidence):
    """When the pod is deleted, main gets its SIGTERM first and has exited before
    any sidecar gets one; then the sidecars stop in the reverse of their start
    order: sidecar2, started last, has exited before sidecar gets its SIGTERM.
    Every agent notes its SIGTERM and its exit on the pod's boot clock in the
    shared volume; sidecar, the last to stop, lingers 3 s so the record is read
    from it. Kubernetes documents this order from 1.29 (KEP-753); with several
    sidecars it was broken before kubernetes#125935."""
    first = sidecar_pod.container("sidecar")
    first.run("read", path=TERM_LOG, text=True)  # its channel opened now: no new exec into a terminating pod
    sidecar_pod.begin_deletion()
    seen = read_while_terminating(first, TERM_LOG, set(EXPECTED), within=60.0)  # the pod's 15 s of grace, and more
    events, ended = seen.events, seen.ended
    evidence.update(term_log=seen.last, reads=seen.reads, channel_ended=ended, events_ms=seen.events_ms())
    assert seen.last is not None, could_not("sidecar", f"the pod's term log {TERM_LOG} while the pod terminated",
                                            {"ok": False, "detail": ended or "no read answered"})
    missing = [f"{c}'s {_said(e)}" for c, e in EXPECTED if (c, e) not in events]
    assert not missing, (f"the term log read from sidecar while the pod terminated lacks {', '.join(missing)} "
                         f"(it holds {', '.join(f'{c} {_said(e)}' for c, e in events) or 'nothing'}): "
                         + ("sidecar stopped before it could be read" if ended else "no such SIGTERM came"))
    for (a, what_a), (b, what_b) in zip(EXPECTED, EXPECTED[1:]):
        gap_ms = (events[(b, what_b)] - events[(a, what_a)]) / 1e6
        assert gap_ms >= 0, (
            f"{b}'s {_said(what_b)} came {-gap_ms:.0f} ms before {a}'s {_said(what_a)}: on deletion the main "
            "container stops first, then the sidecars in the reverse of their start order")


def _said(event: str) -> str:
    return "SIGTERM" if event == "sigterm" else event
