"""Every check can fail: the suites run against deliberately broken variants
of the probe pod (--pod-manifest) must fail exactly the claims each variant
breaks, and pass the rest. Needs a cluster, like the suites."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from .conftest import PROJECT

VARIANTS = Path(__file__).resolve().parent / "variants"

VOLUME_SHARING = {f"suites/test_volumes.py::{name}[{vol}]" for vol in ("disk", "memory") for name in (
    "test_file_written_in_alpha_is_read_byte_exact_in_beta", "test_rename_append_and_delete_are_seen_at_once",
    "test_inotify_in_beta_sees_alpha_write", "test_unix_socket_file_in_the_volume_connects",
    "test_shared_mappings_are_coherent")} | {
    f"suites/test_volumes.py::test_lock_held_in_alpha_blocks_beta[{vol}-{kind}]"
    for vol in ("disk", "memory") for kind in ("flock", "fcntl")}


def run_suites(tmp_path: Path, manifest: str, marker: str, *extra: str) -> dict[str, str]:
    """Run the suites in a pytest of their own; return claim id -> outcome. A
    failing run must clean up like a passing one: its namespace is gone after."""
    reports, run_id = tmp_path / "reports", "variant-" + uuid.uuid4().hex[:8]
    subprocess.run([sys.executable, "-m", "pytest", "suites", "-q", "-p", "no:cacheprovider", "-m", marker,
                    "--pod-manifest", str(VARIANTS / manifest), "--reports-dir", str(reports), "--run-id", run_id,
                    *extra], cwd=PROJECT, env=os.environ, capture_output=True, text=True, timeout=600)
    results = json.loads((reports / "results.json").read_text())
    assert results["run"]["leftovers"] == [] and results["run"]["fatal"] is None, results["run"]
    return {c["id"]: c["outcome"] for c in results["checks"]}


@pytest.mark.usefixtures("kube")
def test_split_volumes_fail_exactly_the_volume_sharing_claims(tmp_path):
    outcomes = run_suites(tmp_path, "split-volumes.yaml", "volume")
    failed = {claim for claim, outcome in outcomes.items() if outcome == "failed"}
    assert failed == VOLUME_SHARING
    assert outcomes["suites/test_volumes.py::test_memory_volume_is_tmpfs_and_honours_its_size_limit"] == "passed"


@pytest.mark.usefixtures("kube")
def test_private_dev_shm_fails_the_dev_shm_claims_and_nothing_else(tmp_path):
    outcomes = run_suites(tmp_path, "private-dev-shm.yaml", "posix or ipc")
    failed = {claim.split("::")[1] for claim, outcome in outcomes.items() if outcome == "failed"}
    assert failed == {"test_shm_open_object_written_in_alpha_is_read_in_beta",
                      "test_named_semaphore_created_in_alpha_is_visible_in_beta",
                      "test_dev_shm_is_one_tmpfs_for_the_pod"}
    assert all(outcome == "passed" for claim, outcome in outcomes.items() if "sysv" in claim)
    assert outcomes["suites/test_posix_ipc.py::test_message_queue_opened_in_alpha_delivers_to_beta"] == "passed"


@pytest.mark.usefixtures("kube")
def test_split_pods_fail_every_sharing_claim(tmp_path):
    """alpha and beta in two pods: only the per-container and per-pod claims pass."""
    outcomes = run_suites(tmp_path, "split-pods.yaml", "not pattern")
    passed = {claim.split("::")[1] for claim, outcome in outcomes.items() if outcome == "passed"}
    assert passed == {"test_mount_and_pid_namespaces_are_per_container",
                      "test_volume_and_ipc_objects_survive_a_container_restart",
                      "test_recreated_pod_starts_without_the_old_volume_and_ipc_objects",
                      "test_memory_volume_is_tmpfs_and_honours_its_size_limit"}
    assert all(outcome in ("passed", "failed") for outcome in outcomes.values()), outcomes


# Variants that need host access: a privileged namespace, and the local cluster
# (the test runs on the node, where it prepares and cleans the host's side).
on_the_node = pytest.mark.skipif(not os.environ.get("PODSHARE_LOCAL_CLUSTER"),
                                 reason="needs the bundled local cluster: the test prepares the node itself")
PROBE_UID = 65532


def fails_exactly(outcomes: dict[str, str], expected: set[str]) -> None:
    failed = {claim.split("::")[1] for claim, outcome in outcomes.items() if outcome != "passed"}
    assert failed == expected, outcomes


@on_the_node
@pytest.mark.usefixtures("kube")
def test_host_network_fails_the_hostname_claim_only(tmp_path):
    outcomes = run_suites(tmp_path, "host-network.yaml", "identity or network", "--pod-security", "privileged")
    fails_exactly(outcomes, {"test_hostname_is_the_pod_name_in_every_container"})


def _host_ipc_objects() -> set[tuple[str, str]]:
    """System V objects and /dev/shm files of the probe user on this host."""
    found = set()
    for kind, flag in (("shm", "-m"), ("sem", "-s"), ("msg", "-q")):
        header, *lines = Path(f"/proc/sysvipc/{kind}").read_text().splitlines()
        uid = header.split().index("uid")
        for line in lines:
            fields = line.split()
            if int(fields[uid]) == PROBE_UID:
                found.add((flag, fields[1]))
    found |= {("file", str(p)) for p in Path("/dev/shm").iterdir() if p.stat().st_uid == PROBE_UID}
    return found


@pytest.fixture
def host_ipc_cleanup():
    before = _host_ipc_objects()
    yield
    for flag, ident in _host_ipc_objects() - before:
        if flag == "file":
            Path(ident).unlink(missing_ok=True)
        else:
            subprocess.run(["ipcrm", flag, ident], check=False)


@on_the_node
@pytest.mark.usefixtures("kube", "host_ipc_cleanup")
def test_host_ipc_fails_the_recreated_pod_claim_only(tmp_path):
    outcomes = run_suites(tmp_path, "host-ipc.yaml", "lifecycle or ipc", "--pod-security", "privileged")
    fails_exactly(outcomes, {"test_recreated_pod_starts_without_the_old_volume_and_ipc_objects"})


@pytest.fixture
def host_directory():
    path = Path("/var/lib/podshare/variant-hostpath")
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, PROBE_UID, PROBE_UID)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@on_the_node
@pytest.mark.usefixtures("kube", "host_directory")
def test_host_path_fails_the_recreated_pod_claim_only(tmp_path):
    outcomes = run_suites(tmp_path, "host-path.yaml", "volume or lifecycle", "--pod-security", "privileged")
    fails_exactly(outcomes, {"test_recreated_pod_starts_without_the_old_volume_and_ipc_objects"})
