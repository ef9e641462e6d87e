"""Native sidecar: an init container with restartPolicy Always (Kubernetes
1.29+) runs beside the main container for the pod's life. Broken in the wild
by admission webhooks that dropped the unknown restartPolicy field, turning the
sidecar into a plain init container that blocks the pod."""
import re

import pytest

from podshare.evidence import describe

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
