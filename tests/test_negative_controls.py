"""Every check can fail: the suites run against deliberately broken variants
of the probe pod (--pod-manifest) must fail exactly the claims each variant
breaks, and pass the rest. Needs a cluster, like the suites."""
from __future__ import annotations

import ast
import json
import os
import socket
import re
import shutil
import subprocess
import uuid
from collections import Counter
from pathlib import Path

import pytest

from podshare import RUN_ID_LABEL

from . import conftest
from .conftest import PROJECT

VARIANTS = Path(__file__).resolve().parent / "variants"

VOLUME_SHARING = {f"suites/test_volumes.py::{name}[{vol}]" for vol in ("disk", "memory") for name in (
    "test_file_written_in_alpha_is_read_byte_exact_in_beta", "test_rename_append_and_delete_are_seen_at_once",
    "test_inotify_in_beta_sees_alpha_write", "test_unix_socket_file_in_the_volume_connects",
    "test_shared_mappings_are_coherent")} | {
    f"suites/test_volumes.py::test_lock_held_in_alpha_blocks_beta[{vol}-{kind}]"
    for vol in ("disk", "memory") for kind in ("flock", "fcntl")}


def run_suites(tmp_path: Path, manifest: str | None, marker: str, *extra: str) -> dict[str, str]:
    """Claim id -> outcome of a run of the suites (see run_variant)."""
    return {c["id"]: c["outcome"] for c in run_variant(tmp_path, manifest, marker, *extra)}


def run_variant(tmp_path: Path, manifest: str | None, marker: str, *extra: str, node: str | None = None) -> list[dict]:
    """Run the suites in a pytest of their own; return their checks. Every
    claim that did not pass must say, in a sentence, which promise broke (a crash
    in a claim would otherwise count as the variant being caught), and a failing
    run must clean up like a passing one: checked through the API, not through
    the run's own account of itself."""
    reports, run_id = tmp_path / "reports", "variant-" + uuid.uuid4().hex[:8]
    given = ["--pod-manifest", str(VARIANTS / manifest)] if manifest else []
    if node or os.environ.get("PODSHARE_LOCAL_CLUSTER"):  # the node these tests prepare (host paths, ports): the first
        given += ["--node", node or socket.gethostname().lower()]
    # as on CI, where pytest's short summary prints more of each failure (CI set: its whole message)
    run = conftest.run_suites("-m", marker, *given, "--reports-dir", str(reports), "--run-id", run_id, *extra,
                              env={**os.environ, "CI": "1"})
    results = json.loads((reports / "results.json").read_text())
    assert results["run"]["fatal"] is None and not results["run"]["interrupted"], results["run"]
    for check in results["checks"]:
        if check["outcome"] != "passed":
            assert names_a_promise(check["message"]), f"{check['id']}: {check['message']!r}"
    terminal_is_for_a_person(run.stdout, [c for c in results["checks"] if c["outcome"] == "failed"],
                             sum(c["outcome"] != "passed" for c in results["checks"]))
    assert_nothing_left(run_id)
    return results["checks"]


def terminal_is_for_a_person(output: str, failed: list[dict], not_passed: int) -> None:
    """Each failed claim is a block of three lines on the terminal (what broke, the
    claim, where the evidence is), not a traceback with the pods' state: that is
    in the reports."""
    assert "podshare diagnostics" not in output and "Traceback" not in output, output[-3000:]
    lines = output.splitlines()
    in_blocks = set()
    for check in failed:
        block = [" ".join(check["message"].split()), f"claim: {check['claim']}"]
        at = next((at for at in range(len(lines) - 2) if lines[at:at + 2] == block
                   and lines[at + 2].startswith("evidence: ") and f"({check['id']})" in lines[at + 2]), None)
        assert at is not None, (check["id"], block)
        in_blocks |= {at, at + 1, at + 2}
    # a block and its line in pytest's short summary each, beside the run's own few lines
    kinds = Counter("block" if at in in_blocks else "section" if re.match(r"^(_{2,}|={3,}) .* (_{2,}|={3,})$", line)
                    else "summary" if re.match(r"^(FAILED|ERROR|COULD NOT CHECK|XFAIL|SKIPPED) ", line) else "other"
                    for at, line in enumerate(lines))
    assert len(lines) <= 40 + 6 * not_passed, (
        f"{len(lines)} lines for {not_passed} claims that did not pass ({dict(kinds)}); besides the blocks, "
        "sections and summary lines: " + "\n".join(line for at, line in enumerate(lines) if at not in in_blocks
                                                    and not re.match(r"^(_{2,}|FAILED |ERROR |COULD NOT)", line)))


# Kubernetes' own waiting reasons read like class names but are the API's words for a state.
KUBERNETES_REASONS = re.compile(r"\b(?:RunContainer|CreateContainer|CreateContainerConfig)Error\b")
NOT_PROSE = {
    "an exception class name": re.compile(r"(?:^|[\s(])(?:[\w]+\.)*[A-Z]\w*(?:Error|Exception|Iteration|Interrupt)"
                                         r"(?:[:(]|$)|\b(?:GaveUp|KubeError|ProbeKilled|Disrupted)\b", re.M),
    "a Python dict or list": re.compile(r"[{\[]\s*['\"][^'\"]*['\"]\s*:|\[\{|\{'"),
    "a keyword repr": re.compile(r"\b(?:stdout|stderr|detail|errno)=['\"]"),
    "an unformatted library text": re.compile(r"%[sdoxr](?![\w])"),
    "Python's own error text": re.compile(r"\[Errno \d+\]|Traceback \(most recent call last\)"),
    "pytest's introspection": re.compile(r"^\s*(?:assert |\+\s+where )", re.M),
}


def not_prose(message: str) -> list[str]:
    """What in a message is not a sentence for a reader (the whole message, every line)."""
    text = KUBERNETES_REASONS.sub("", message)
    return [what for what, pattern in NOT_PROSE.items() if pattern.search(text)]


def names_a_promise(message: str) -> bool:
    """A sentence, not a crash: no exception type or Python repr anywhere in it,
    no library's unformatted text, not a bare `assert`."""
    first = message.strip().splitlines()[0] if message.strip() else ""
    return (not not_prose(message) and bool(re.match(r"^(?!assert )[A-Za-z]", first))
            and len(first.split()) >= 4)


def assert_nothing_left(run_id: str) -> None:
    from kubernetes import client, config
    config.load_kube_config()
    core = client.CoreV1Api()
    selector = f"{RUN_ID_LABEL}={run_id}"
    namespaces = [n.metadata.name for n in core.list_namespace(label_selector=selector).items]
    pods = [p.metadata.name for p in core.list_pod_for_all_namespaces(label_selector=selector).items]
    assert namespaces == [] and pods == [], f"run {run_id} left {namespaces} {pods}"


def test_names_a_promise_tells_sentences_from_crashes():
    assert names_a_promise("the recreated pod's disk volume is not empty: 1 file")
    assert names_a_promise("the pod this claim needs never became ready, so ...")
    assert names_a_promise("container alpha of pod p is RunContainerError: exec: python3 not found")
    assert names_a_promise("alpha's probe was killed by SIGBUS while writing the mapped /dev/shm object "
                           "(the tmpfs is full: 512 KiB)")
    assert not names_a_promise("StopIteration")
    assert not names_a_promise("KeyError: 'sizeLimit'")
    assert not names_a_promise("AssertionError: beta cannot read alpha's file")  # the class leaks
    assert not names_a_promise("podshare.errors.KubeError: expected one JSON line from the probe, got 0")
    assert not names_a_promise("assert {'ok': False} == True")
    assert not names_a_promise("")
    # what issue 18 found in the reports, each caught:
    assert not names_a_promise("podshare.errors.KubeError: exec in podshare-probe-x/alpha: 404 pods not found")
    assert not names_a_promise("expected one JSON line from the probe, got 0: stdout='' stderr=''")
    assert not names_a_promise("the probe exited before it was ready: stdout='{\"detail\": \"Permission denied\"}'")
    assert not names_a_promise("beta cannot map alpha's file: {'detail': 'x', 'errno': 'EACCES', 'ok': False}")
    assert not names_a_promise("beta cannot attach alpha's segment: EACCES Permission %o cannot be granted")
    assert not names_a_promise("beta took the flock lock alpha holds on their shared file (EROFS [Errno 30] "
                               "Read-only file system: '/data/disk/x')")
    assert not names_a_promise("beta could not open alpha's lock file: EACCES (Permission denied)\nassert False\n"
                               " +  where False = failed_with({'errno': 'EACCES'}, 'EAGAIN')")
    assert not names_a_promise("read the log: GaveUp: timed out after 120s")


@pytest.mark.usefixtures("kube")
def test_split_volumes_fail_exactly_the_volume_sharing_claims(tmp_path):
    outcomes = run_suites(tmp_path, "split-volumes.yaml", PROBE_POD_ONLY % "volume")
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


# A variant replaces the probe pod: the claims on pods of their own (manifests/patterns/) would
# only pass beside it, each with its pods and waits (a ConfigMap update's sync), so they are left out.
PROBE_POD_ONLY = "(%s) and not manifest"

# Volume claims whose pods come from manifests/patterns/, not the probe pod a variant replaces.
CLAIMS_WITH_PODS_OF_THEIR_OWN = {
    *(f"test_update_reaches_both_containers_whole[{kind}]" for kind in ("configMap", "projected")),
    "test_subpath_copy_keeps_the_old_content", "test_inotify_on_the_mount_sees_the_data_swap",
    "test_same_subpath_is_shared_byte_exact_and_live", "test_different_subpaths_are_isolated_but_both_in_the_full_mount"}


@pytest.mark.usefixtures("kube")
def test_split_pods_fail_every_sharing_claim(tmp_path):
    """alpha and beta in two pods: only the per-container and per-pod claims pass."""
    checks = run_variant(tmp_path, "split-pods.yaml", PROBE_POD_ONLY % "not pattern")
    passed = {c["id"].split("::")[1] for c in checks if c["outcome"] == "passed"}
    passed -= CLAIMS_WITH_PODS_OF_THEIR_OWN
    expected = {"test_mount_and_pid_namespaces_are_per_container",
                "test_volume_and_ipc_objects_survive_a_container_restart",
                "test_recreated_pod_starts_without_the_old_volume_and_ipc_objects",
                "test_memory_volume_is_tmpfs_and_honours_its_size_limit"}
    said = {c["id"]: (c["outcome"], c["message"]) for c in checks
            if (c["id"].split("::")[1] in expected) != (c["outcome"] == "passed")
            or c["outcome"] not in ("passed", "failed")}
    assert passed == expected, said
    assert all(c["outcome"] in ("passed", "failed") for c in checks), said


# Variants that need host access: a privileged namespace, and the local cluster
# (the test runs on the node, where it prepares and cleans the host's side).
on_the_node = pytest.mark.skipif(not os.environ.get("PODSHARE_LOCAL_CLUSTER"),
                                 reason="needs the bundled local cluster: the test prepares the node itself")
PROBE_UID = 65532
SECOND_UID = 65533  # tests/variants/second-uid.yaml's beta


def fails_exactly(outcomes: dict[str, str], expected: set[str]) -> None:
    failed = {claim.split("::")[1] for claim, outcome in outcomes.items() if outcome != "passed"}
    assert failed == expected, outcomes


@on_the_node
@pytest.mark.usefixtures("kube")
def test_host_network_fails_the_hostname_claim_only(tmp_path):
    outcomes = run_suites(tmp_path, "host-network.yaml", "identity or network", "--pod-security", "privileged")
    fails_exactly(outcomes, {"test_hostname_is_the_pod_name_in_every_container"})


@on_the_node
@pytest.mark.usefixtures("kube")
def test_a_lifecycle_pod_that_cannot_schedule_is_could_not_check_and_the_run_goes_on(tmp_path):
    """hostNetwork with container ports: the lifecycle pod's host ports are taken by
    the probe pod on this one node, so it is unschedulable. An unschedulable pod is
    no broken promise: its claims could not be checked, with the scheduler's reason;
    the identity claims still run (only the hostname one fails)."""
    checks = run_variant(tmp_path, "host-network.yaml", "(identity or lifecycle) and not pattern", "--pod-security", "privileged",
                         "--pod-timeout", "30")
    outcomes = {c["id"].split("::")[1]: c["outcome"] for c in checks}
    lifecycle = [c for c in checks if "lifecycle" in c["markers"]]
    assert {outcomes[c["id"].split("::")[1]] for c in lifecycle} == {"could-not-check"}, outcomes
    assert {name for name, o in outcomes.items() if o not in ("passed", "could-not-check")} == {
        "test_hostname_is_the_pod_name_in_every_container"}, outcomes
    assert all("unschedulable" in c["message"] and "ports" in c["message"] for c in lifecycle), [
        c["message"] for c in lifecycle]


@pytest.mark.usefixtures("kube")
def test_volume_names_do_not_matter(tmp_path):
    outcomes = run_suites(tmp_path, "renamed-volumes.yaml", PROBE_POD_ONLY % "volume")
    assert outcomes and set(outcomes.values()) == {"passed"}, outcomes


@pytest.mark.usefixtures("kube")
def test_a_memory_volume_on_disk_fails_the_memory_claims_with_a_sentence(tmp_path):
    """The Memory emptyDir without its medium: not a tmpfs of its sizeLimit, and
    alpha's 4 MiB there are page cache, not shmem charged to it (only /dev/shm's are)."""
    outcomes = run_suites(tmp_path, "memory-without-medium.yaml", PROBE_POD_ONLY % "volume or memory")
    fails_exactly(outcomes, {"test_memory_volume_is_tmpfs_and_honours_its_size_limit",
                             "test_tmpfs_pages_are_charged_to_the_writer_not_the_reader"})


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
    outcomes = run_suites(tmp_path, "host-ipc.yaml", "(lifecycle or ipc) and not pattern", "--pod-security", "privileged")
    fails_exactly(outcomes, {"test_recreated_pod_starts_without_the_old_volume_and_ipc_objects"})


def _marked(node: ast.FunctionDef, marker: str) -> bool:
    return any(isinstance(d, ast.Attribute) and d.attr == marker for d in node.decorator_list)


def claims_with_a_stranger_check() -> set[str]:
    """The sharing claims that also look from the stranger pod (they take the
    stranger fixture): read from the suites, so a new one is covered at once.
    Those about pods in user namespaces run only with --user-namespaces."""
    found = set()
    for module in (PROJECT / "suites").glob("test_*.py"):
        if "pattern" in module.name:  # there the stranger is a client from outside, not a control
            continue
        if "pytest.mark.manifest(" in module.read_text():
            continue  # claims on a pattern pod's volumes (ConfigMap, subPath): a stranger sharing the probe pod's has none
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_") and (
                    {"stranger", "stranger_pod"} & {a.arg for a in node.args.args}) \
                    and not _marked(node, "user_namespaced"):
                found.add(node.name)
    return found


@pytest.fixture
def stranger_shared_directories():
    from tests.variants.generate import STRANGER_SHARED
    for name in ("disk", "memory"):
        path = Path(STRANGER_SHARED) / name
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, PROBE_UID, PROBE_UID)
    yield
    shutil.rmtree(STRANGER_SHARED, ignore_errors=True)


@on_the_node
@pytest.mark.usefixtures("kube", "host_ipc_cleanup", "stranger_shared_directories")
def test_a_stranger_that_shares_fails_every_stranger_check(tmp_path):
    """The negative control can fail too: a stranger pod in the probe pod's
    network and IPC namespaces, on the same host directories, makes every claim
    that checks from the stranger fail, and the message names the stranger."""
    checks = run_variant(tmp_path, "stranger-shares.yaml", "not pattern and not lifecycle and not perf and not memory",
                         "--pod-security", "privileged")
    expected = claims_with_a_stranger_check()
    assert len(expected) >= 12, expected
    by_claim: dict[str, list[dict]] = {}
    for check in checks:
        by_claim.setdefault(check["id"].split("::")[1].split("[")[0], []).append(check)
    assert expected <= set(by_claim), expected - set(by_claim)
    for claim in expected:
        for check in by_claim[claim]:
            assert check["outcome"] == "failed", (check["id"], check["outcome"])
            if claim != "test_hostname_is_the_pod_name_in_every_container":  # the node's hostname fails first
                assert "stranger" in check["message"], (check["id"], check["message"])
    others_failed = {c for c, cs in by_claim.items() if c not in expected and any(x["outcome"] != "passed" for x in cs)}
    assert others_failed == {"test_memory_volume_is_tmpfs_and_honours_its_size_limit"}  # a hostPath is no tmpfs


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
    outcomes = run_suites(tmp_path, "host-path.yaml", PROBE_POD_ONLY % "volume or lifecycle", "--pod-security", "privileged")
    fails_exactly(outcomes, {"test_recreated_pod_starts_without_the_old_volume_and_ipc_objects"})


PATTERN_CLAIMS_BROKEN = {
    "test_pattern_reverse_proxy.py": None,  # every claim: nginx never gets ready
    "test_pattern_log_watcher.py": None,
    "test_pattern_native_sidecar.py": None,  # the pod stalls in init
    "test_pattern_data_loader.py": {"test_main_containers_read_the_data_set_byte_exact_at_start"},
    "test_pattern_sqlite.py": {f"{claim}[{volume}]" for volume in ("disk", "memory") for claim in (
        "test_every_row_the_app_commits_is_read_back_exactly_by_the_sidecar",
        "test_integrity_check_is_ok_in_both_containers_after_the_run",
        "test_the_sidecars_backup_restores_every_committed_row_in_the_app",
        "test_a_write_transaction_open_in_the_app_holds_off_the_sidecars")},  # nothing contends: none refused
}


@pytest.mark.usefixtures("kube")
def test_broken_patterns_fail_their_claims_and_the_run_goes_on(tmp_path):
    """Each pattern with the promise it relies on broken (--patterns-dir): its
    claims fail with the reason, quickly, and the claims after it still run."""
    outcomes = run_suites(tmp_path, None, "pattern", "--patterns-dir", str(VARIANTS / "broken-patterns"),
                          "--pod-timeout", "20")
    for module, broken in PATTERN_CLAIMS_BROKEN.items():
        mine = {claim.split("::")[1]: o for claim, o in outcomes.items() if claim.split("::")[0].endswith(module)}
        assert mine, f"no claim of {module} ran"
        expected = set(mine) if broken is None else broken
        assert {c for c, o in mine.items() if o == "failed"} == expected, (module, mine)
        assert all(o == "passed" for c, o in mine.items() if c not in expected), (module, mine)


@pytest.mark.usefixtures("kube")
def test_an_update_that_never_reaches_beta_and_a_subpath_not_shared_fail_at_their_step(tmp_path):
    """The broken configmap-updates and subpaths patterns (--patterns-dir): beta's
    ConfigMap volumes come from a copy the harness never updates, and beta mounts
    another subPath where alpha mounts `same`. Exactly the update claims and the
    shared-subPath claim fail, each message naming beta, the step and the errno
    that beta's answer in the evidence shows; the subPath-copy, inotify and
    isolation claims pass."""
    checks = run_variant(tmp_path, None, "volume", "--patterns-dir", str(VARIANTS / "broken-patterns"),
                         "-k", "configmap_volumes or subpaths")
    got = failing(checks)
    update = {kind: f"test_update_reaches_both_containers_whole[{kind}]" for kind in ("configMap", "projected")}
    assert set(got) == {*update.values(), "test_same_subpath_is_shared_byte_exact_and_live"}, got
    assert len(checks) == 6, [c["id"] for c in checks]
    for kind, path in (("configMap", "/config"), ("projected", "/projected")):
        check = got[update[kind]]
        assert check["message"].startswith(f"beta never saw the update in the {kind} volume at {path}: wait-update "
                                           "failed with ETIMEDOUT"), check["message"]
        assert (check["evidence"]["beta"]["step"], check["evidence"]["beta"]["errno"]) == ("wait-update", "ETIMEDOUT")
    shared = got["test_same_subpath_is_shared_byte_exact_and_live"]
    assert shared["message"] == ("beta could not open alpha's file in the subPath both mount (/sub/same): "
                                 "ENOENT (No such file or directory)"), shared["message"]
    evidence_shows(shared, shared["message"])


# ------------------------------------------------------------------ variants that put each message to the test
# Each failing claim's message is checked word by word, and against the evidence:
# the container it names answered, in the transcript, with the step and errno it says.

def claim_name(check: dict) -> str:
    return check["id"].split("::")[1]


def evidence_shows(check: dict, message: str) -> None:
    """The container a message names answered with the errno (and step) it says."""
    who = message.split()[0].removesuffix("'s")
    errno = re.search(r"\b(E[A-Z]{2,})\b", message).group(1)
    steps = ("open", "lock", "map", "write", "read", "connect", "receive", "send", "bind", "listen", "truncate")
    said = re.search(r"(\w+) failed with ", message) or re.search(r"could not (\w+) ", message)
    step = said.group(1) if said and said.group(1) in steps else None
    answers = [t["result"] for t in check["evidence"]["transcript"] if t["container"] == who]
    assert any(a.get("errno") == errno and (step is None or a.get("step") == step) for a in answers), (
        check["id"], message, answers)


def failing(checks: list[dict]) -> dict[str, dict]:
    return {claim_name(c): c for c in checks if c["outcome"] != "passed"}


VOLUMES_BOTH = ("disk", "memory")


@pytest.mark.usefixtures("kube")
def test_a_shared_file_beta_cannot_open_fails_saying_so_at_the_open(tmp_path):
    """beta mounts the shared volumes read-only: it reads alpha's files, but every
    open for writing is EROFS. The claims where beta writes, locks or maps fail
    saying that beta could not open (or rename) the file, never that a lock or a
    mapping crossed or not; nothing else fails."""
    said = "EROFS (Read-only file system)"
    expected = {
        **{f"test_rename_append_and_delete_are_seen_at_once[{v}]": f"beta could not rename alpha's file: {said}"
           for v in VOLUMES_BOTH},
        **{f"test_lock_held_in_alpha_blocks_beta[{v}-{k}]": f"beta could not open alpha's lock file: {said}"
           for v in VOLUMES_BOTH for k in ("flock", "fcntl")},
        **{f"test_shared_mappings_are_coherent[{v}]": f"beta could not open alpha's mapped file: {said}"
           for v in VOLUMES_BOTH},
        "test_memory_volume_is_tmpfs_and_honours_its_size_limit":
            f"beta could not open a file in the memory volume: {said}",
    }
    got = failing(run_variant(tmp_path, "read-only-for-beta.yaml", PROBE_POD_ONLY % "volume"))
    assert {name: c["message"] for name, c in got.items()} == expected
    for check in got.values():
        evidence_shows(check, check["message"])
    # one cause, shown once, with the mounts that explain it
    attention = needs_attention_of(tmp_path)
    assert attention[0].startswith(f"- ❌ **{len(expected)} claims, one cause: beta got EROFS**: alpha mounts /data/disk "
                                   "from "), attention
    assert re.search(r"beta mounts /data/disk from \S+/volumes/kubernetes.io~empty-dir/disk \(\w+, device [\d:]+, "
                     r"read-only\)", attention[0]) and "beta mounts /data/memory from " in attention[0], attention[0]
    assert len(attention) == 1, attention


def needs_attention_of(tmp_path: Path) -> list[str]:
    """The items of summary.md's Needs attention."""
    summary = (tmp_path / "reports" / "summary.md").read_text()
    section = summary.split("## Needs attention\n\n", 1)[1].split("\n\n", 1)[0]
    return section.splitlines()


@pytest.mark.usefixtures("kube")
def test_beta_as_a_second_uid_fails_each_claim_at_its_step_with_eacces(tmp_path):
    """beta runs as uid 65533: alpha's 0644 files and 0600 IPC objects are alpha's
    own. Each claim where beta needs them fails naming beta, the step (open,
    connect) and EACCES; System V's library text ("Permission %o cannot be
    granted") does not reach a message; rename in the Memory volume (a sticky
    tmpfs) is EPERM. Claims where beta only reads pass."""
    denied = "EACCES (Permission denied)"
    expected = {
        "test_shm_open_object_written_in_alpha_is_read_in_beta":
            f"beta could not open alpha's shared memory object: {denied}",
        "test_named_semaphore_created_in_alpha_is_visible_in_beta": f"beta could not open alpha's named semaphore: {denied}",
        "test_message_queue_opened_in_alpha_delivers_to_beta":
            f"beta did not receive alpha's message: open failed with {denied}",
        "test_semaphore_created_in_alpha_is_visible_in_beta_with_its_value":
            f"beta does not see alpha's semaphore: open failed with {denied}",
        "test_shared_memory_written_in_alpha_is_read_byte_exact_in_beta":
            f"beta cannot attach alpha's segment: open failed with {denied}",
        "test_message_queue_carries_a_message_from_alpha_to_beta":
            f"beta did not receive alpha's message: open failed with {denied}",
        "test_rename_append_and_delete_are_seen_at_once[memory]":
            "beta could not rename alpha's file: EPERM (Operation not permitted)",
        **{f"test_lock_held_in_alpha_blocks_beta[{v}-{k}]": f"beta could not open alpha's lock file: {denied}"
           for v in VOLUMES_BOTH for k in ("flock", "fcntl")},
        **{f"test_unix_socket_file_in_the_volume_connects[{v}]":
           f"beta cannot connect to the unix socket alpha bound in the volume: connect failed with {denied}"
           for v in VOLUMES_BOTH},
        **{f"test_shared_mappings_are_coherent[{v}]": f"beta could not open alpha's mapped file: {denied}"
           for v in VOLUMES_BOTH},
    }
    got = failing(run_variant(tmp_path, "second-uid.yaml", PROBE_POD_ONLY % "volume or ipc or posix"))
    grouped = len(got) - 1  # every failure but the rename (EPERM) is one EACCES cause
    semop = got.pop("test_semop_blocked_in_beta_is_released_by_alpha")  # its waiter fails before it is ready
    key = next(t["command"].split("--key ")[1].split()[0] for t in semop["evidence"]["transcript"]
               if t["container"] == "alpha")
    assert semop["message"] == f"beta could not open the System V object of key {key}: {denied}", semop["message"]
    assert {name: c["message"] for name, c in got.items()} == expected
    for check in got.values():
        evidence_shows(check, check["message"])
    # the EACCES failures are one cause, with each container's ids and the refused objects' modes
    attention = needs_attention_of(tmp_path)
    assert len(attention) == 2 and "EPERM" in attention[1], attention
    assert attention[0].startswith(f"- ❌ **{grouped} claims, one cause: beta got EACCES**: alpha runs as uid "
                                   f"65532, gid 65532 (groups 65532); beta runs as uid {SECOND_UID}, gid {SECOND_UID} "
                                   f"(groups 65532, {SECOND_UID}); "), attention[0]
    assert re.search(r"/data/disk/podshare-\w+\.lock is mode 0644, owner 65532:65532", attention[0]), attention[0]
    assert re.search(r"the System V sem of key \d+ is mode 0600, owner 65532:65532", attention[0]), attention[0]


@pytest.mark.usefixtures("kube")
def test_a_full_dev_shm_kills_alpha_s_probe_with_sigbus_and_says_so(tmp_path):
    """/dev/shm is a 512 KiB tmpfs shared by both containers: alpha's 1 MiB shm_open
    object is mapped and written, and the write past the end of the full tmpfs
    kills alpha's probe with SIGBUS. The claim says exactly that, with the tmpfs's
    size read from the container; the claims after it find /dev/shm full (ENOSPC)."""
    got = failing(run_variant(tmp_path, "full-dev-shm.yaml", "posix"))
    assert {name: c["message"] for name, c in got.items()} == {
        "test_shm_open_object_written_in_alpha_is_read_in_beta":
            "alpha's probe was killed by SIGBUS while writing the mapped /dev/shm object (the tmpfs is full: 512 KiB)",
        "test_named_semaphore_created_in_alpha_is_visible_in_beta":
            "alpha could not create a POSIX named semaphore: open failed with ENOSPC (No space left on device)",
        "test_dev_shm_is_one_tmpfs_for_the_pod": "alpha cannot write a file in /dev/shm: ENOSPC (No space left on device)",
    }
    killed = next(t["result"] for t in got["test_shm_open_object_written_in_alpha_is_read_in_beta"]["evidence"][
        "transcript"] if t["result"].get("killed_by"))
    assert killed["killed_by"] == "SIGBUS" and killed["step"]["step"] == "write" and killed["step"]["mapped"]
    assert killed["filesystem"]["fstype"] == "tmpfs" and killed["filesystem"]["size_bytes"] == 512 << 10
    assert killed["filesystem"]["free_bytes"] == 0
    evidence_shows(got["test_named_semaphore_created_in_alpha_is_visible_in_beta"],
                   got["test_named_semaphore_created_in_alpha_is_visible_in_beta"]["message"])


def test_a_runtime_class_set_by_the_manifest_is_named_in_the_results_and_the_header(tmp_path, kube):
    """The manifest itself sets runtimeClassName: gvisor (no --runtime-class): the
    class and its handler, read back from the API, are in results.json (the
    cluster and every check) and in both reports' headers, so gVisor's known
    divergences are matched and reported as such, none as failed."""
    # the probe pod's claims: a pattern pod (ConfigMap, subPath) is its own manifest, without the class
    # on the bundled cluster, the pool whose RuntimeClass gvisor admits it (gVisor's shim needs containerd 2)
    plain = [n.metadata.name for n in kube.nodes("podshare.io/gvisor=plain")] if os.environ.get(
        "PODSHARE_LOCAL_CLUSTER") else []
    checks = run_variant(tmp_path, "runtime-class-in-manifest.yaml", "(volume or posix) and not manifest",
                         "--known-divergences",
                         str(PROJECT / "cluster" / "gvisor-known-divergences.yaml"), node=plain[0] if plain else None)
    reports = tmp_path / "reports"
    results = json.loads((reports / "results.json").read_text())
    assert results["cluster"]["runtime_class"] == "gvisor (handler gvisor)", results["cluster"]
    assert {c["runtime_class"] for c in checks} == {"gvisor"}
    outcomes = {c["outcome"] for c in checks}
    assert outcomes == {"passed", "known-divergence"}, [(c["id"], c["outcome"], c["message"]) for c in checks]
    assert "runtime class: gvisor (handler gvisor)" in (reports / "report.html").read_text()
    assert "runtime class: gvisor (handler gvisor)" in (reports / "summary.md").read_text()


@pytest.mark.usefixtures("kube")
def test_a_listed_claim_failing_another_way_is_a_failure_not_its_known_divergence(tmp_path):
    """A known divergence is the divergence it lists: the lock claims listed as
    "beta takes the lock alpha holds" (evidence beta_while_held.ok: true) fail here
    because beta cannot open the file at all (EROFS). That is reported as a
    failure naming both, never as the listed divergence."""
    known = tmp_path / "known.yaml"
    known.write_text('- claim: "suites/test_volumes.py::test_lock_held_in_alpha_blocks_beta[*]"\n'
                     "  runtime_class: default\n  reason: locks do not cross the containers\n"
                     '  seen: "evidence beta_while_held.ok: true"\n')
    checks = run_variant(tmp_path, "read-only-for-beta.yaml", "volume", "-k", "lock_held",
                         "--known-divergences", str(known))
    assert len(checks) == 4 and {c["outcome"] for c in checks} == {"failed"}, [(c["id"], c["outcome"]) for c in checks]
    for c in checks:  # "on node N" where the run was pinned to one (--node: the local cluster's first)
        assert re.match(r"listed as a known divergence( on node \S+)? for evidence beta_while_held\.ok: true, but saw "
                        r"open: EROFS: beta could not open alpha's lock file: EROFS", c["message"]), c["message"]


@pytest.mark.usefixtures("kube")
def test_a_listed_claim_that_holds_fails_the_run_unless_its_entry_is_intermittent(tmp_path):
    """Both ways strict: the hostname claim, listed as a divergence on the default
    runtime, holds there, and that fails the run (the list is out of date). The
    namespace claim, listed the same way but `intermittent: true` (a race the
    runtime loses only sometimes), holds too: a pass that names its entry."""
    known = tmp_path / "known.yaml"
    known.write_text('- claim: "suites/test_identity.py::test_hostname_is_the_pod_name_in_every_container*"\n'
                     "  runtime_class: default\n  reason: the hostname is the node's\n"
                     '  seen: "evidence alpha_hostname: vm"\n'
                     '- claim: "suites/test_identity.py::test_net_ipc_and_uts_namespaces_are_shared_within_the_pod_only*"\n'
                     "  runtime_class: default\n  reason: a race in the namespaces\n  intermittent: true\n"
                     '  seen: "evidence alpha.ipc: none"\n')
    checks = {c["id"].split("::")[1].split("[")[0]: c
              for c in run_variant(tmp_path, None, "identity", "-k", "hostname or namespaces_are_shared",
                                   "--known-divergences", str(known))}
    strict, intermittent = (checks["test_hostname_is_the_pod_name_in_every_container"],
                            checks["test_net_ipc_and_uts_namespaces_are_shared_within_the_pod_only"])
    assert strict["outcome"] == "failed" and "the claim now holds: update the known-divergences file" in strict[
        "message"], strict
    assert intermittent["outcome"] == "passed" and intermittent["message"].startswith(
        "held this time; listed as a known divergence") and "a race in the namespaces" in intermittent[
        "message"], intermittent


def test_an_exit_without_a_restart_all_rule_restarts_one_container_and_fails_the_claim(tmp_path, kube):
    """The broken restart-all pattern (--patterns-dir): alpha has no RestartAllContainers
    rule, so its exit with 42 restarts alpha alone (the pod's restartPolicy Always), on
    the current pool, whose kubelet has the gate. The claim that every container
    restarts fails naming beta's unchanged boot id; what the containers share still
    survives. On the first node (kubelet 1.35) the claims are one not-applicable line."""
    current = _node_of_pool(kube, "current")
    checks = run_variant(tmp_path, None, "lifecycle", "--patterns-dir", str(VARIANTS / "broken-patterns"),
                         "-k", "restart_all and not sidecar", node=current)
    outcomes = {c["id"].split("::")[1].split("[")[0]: c for c in checks}
    assert set(outcomes) == {"test_an_exit_its_rule_names_restarts_every_container_in_the_same_pod",
                             "test_what_the_containers_share_survives_a_restart_of_all_containers"}, list(outcomes)
    broken = outcomes["test_an_exit_its_rule_names_restarts_every_container_in_the_same_pod"]
    assert broken["outcome"] == "failed" and broken["message"].startswith("beta was not restarted"), broken["message"]
    assert outcomes["test_what_the_containers_share_survives_a_restart_of_all_containers"]["outcome"] == "passed"
    first = run_variant(tmp_path / "first", None, "lifecycle", "-k", "restart_all and not sidecar")
    assert first == [], [c["id"] for c in first]
    said = json.loads((tmp_path / "first" / "reports" / "results.json").read_text())["cluster"]["not_applicable"]
    assert [na["feature"] for na in said] == ["restart all containers"], said


@pytest.mark.usefixtures("kube")
def test_sidecars_that_are_plain_containers_stop_with_main_and_a_crash_without_restart_fails(tmp_path):
    """The native-sidecar pattern with its sidecars as plain containers and the
    pod's restartPolicy Never (--patterns-dir): on deletion every container gets
    its SIGTERM at once, so the order claim fails naming sidecar2's SIGTERM before
    main's exit (main lingers 2 s after its own); in a run of its own, main's
    crash is not restarted and the restart claim fails saying so."""
    variant = str(VARIANTS / "sidecars-as-containers")
    order = run_variant(tmp_path / "order", None, "pattern", "--patterns-dir", variant, "-k", "on_deletion and not shared_pid")
    assert [c["outcome"] for c in order] == ["failed"], [(c["id"], c["outcome"], c["message"]) for c in order]
    assert re.match(r"sidecar2's SIGTERM came \d+ ms before main's exit: ", order[0]["message"]), order[0]["message"]
    crash = run_variant(tmp_path / "crash", None, "pattern", "--patterns-dir", variant, "-k", "crashes",
                        "--pod-timeout", "20")
    assert [c["outcome"] for c in crash] == ["failed"], [(c["id"], c["outcome"], c["message"]) for c in crash]
    assert crash[0]["message"].startswith("main, which crashed (exit code 1) beside its running sidecars, was not "
                                          "restarted: "), crash[0]["message"]


@pytest.mark.usefixtures("kube")
def test_memory_volumes_that_lost_their_medium_fail_the_size_claims(tmp_path):
    """The broken memory-sizes pattern (--patterns-dir): its emptyDirs have no
    medium, so they are the node's disk: both size claims fail naming the disk's
    size and file system, where the pod's memory limit was promised."""
    checks = run_variant(tmp_path, None, "memory", "--patterns-dir", str(VARIANTS / "broken-patterns"),
                         "-k", "memory_sizes")
    assert sorted(claim_name(c) for c in checks) == [
        "test_a_memory_volume_without_a_size_limit_is_sized_to_the_pods_memory_limit",
        "test_with_pod_level_resources_the_pods_own_limit_sizes_the_volume"], [c["id"] for c in checks]
    for check in checks:
        assert check["outcome"] == "failed" and re.match(
            r"alpha's Memory emptyDir at /data/unbounded \(no sizeLimit\) holds [\d.]+ MiB \((?!tmpfs)\S+\), not "
            r"(384|320) MiB, the pod's", check["message"]), check["message"]


@pytest.mark.usefixtures("kube")
def test_a_volume_smaller_than_the_writers_limit_fails_the_oom_claim_naming_enospc(tmp_path):
    """The broken memory-limit pattern (--patterns-dir): its Memory emptyDir has a
    16Mi sizeLimit, below alpha's 64Mi limit, so alpha's write meets ENOSPC at
    16 MiB, not the OOM killer: the OOM claim fails saying ENOSPC and both sizes."""
    checks = run_variant(tmp_path, None, "memory", "--patterns-dir", str(VARIANTS / "broken-patterns"),
                         "-k", "memory_limits")
    assert [claim_name(c) for c in checks] == ["test_a_writer_past_its_memory_limit_meets_the_oom_killer_not_enospc"], [
        c["id"] for c in checks]
    got = failing(checks)
    assert list(got) == ["test_a_writer_past_its_memory_limit_meets_the_oom_killer_not_enospc"], [
        (c["id"], c["outcome"], c["message"]) for c in checks]
    check = got["test_a_writer_past_its_memory_limit_meets_the_oom_killer_not_enospc"]
    assert check["outcome"] == "failed" and re.match(
        r"alpha met ENOSPC after 1[56] MiB: the volume \(16 MiB, tmpfs\) was full before alpha reached its memory "
        r"limit \(64 MiB\), so a writer here meets ENOSPC, not the OOM killer", check["message"]), check["message"]


@pytest.mark.usefixtures("kube")
def test_a_sidecar_beside_the_oom_killed_container_ends_its_loop_and_the_claim_says_so(tmp_path):
    """The broken oom-loop pattern (--patterns-dir): a second container beside
    alpha makes the pod's limit the sum, so the pages alpha left when its own
    limit killed it leave room for the restarted alpha: it comes back, and the
    loop claim fails naming the pages still in the volume and alpha's new cgroup."""
    checks = run_variant(tmp_path, None, "memory", "--patterns-dir", str(VARIANTS / "broken-patterns"),
                         "-k", "memory_restart")
    got = failing(checks)
    assert list(got) == ["test_a_container_alone_with_the_pages_it_left_is_oom_killed_again_at_each_restart"], [
        (c["id"], c["outcome"], c["message"]) for c in checks]
    check = got["test_a_container_alone_with_the_pages_it_left_is_oom_killed_again_at_each_restart"]
    assert re.match(r"alpha came back after its OOM kill on the Memory emptyDir and runs \(restart 1, ends since: "
                    r"OOMKilled \(exit code 137\)\), with 1[45]\d MiB of its pages still in the volume; its cgroup: "
                    r"usage \d+ MiB, shmem 0 MiB: the pod's limit leaves the restarted container room", check["message"]), (
        check["message"])


def _node_of_pool(kube, pool: str) -> str:
    nodes = [n.metadata.name for n in kube.nodes(f"podshare.io/pool={pool}")]
    if not nodes:
        pytest.fail(f"the local cluster has no {pool} pool (PODSHARE_NODES=3 brings one up)")
    return nodes[0]


@pytest.mark.usefixtures("kube")
def test_an_image_volume_that_is_not_one_tree_fails_at_each_claim(tmp_path, kube):
    """The broken image-volume pattern (--patterns-dir): beta mounts an emptyDir
    where alpha mounts the image, on the containerd 2 node that can mount image
    volumes. The one-tree claim fails at beta's walk (no usr/bin there), beta's
    read-only claim says beta wrote, the subPath claim names beta's empty tree;
    alpha's read-only claim passes. On the containerd 1.6 node the same claims
    are one not-applicable line, and the run beside them is unchanged."""
    current = _node_of_pool(kube, "current")
    checks = run_variant(tmp_path, None, "volume", "--patterns-dir", str(VARIANTS / "broken-patterns"),
                         "-k", "image_volumes", "--node", current)
    got = failing(checks)
    assert set(got) == {"test_image_volume_is_one_tree_in_both_containers", "test_image_volume_is_read_only[beta]",
                        "test_image_volume_subpath_is_the_image_directory"}, [c["id"] for c in checks]
    assert len(checks) == 4, [c["id"] for c in checks]
    one_tree = got["test_image_volume_is_one_tree_in_both_containers"]
    assert one_tree["message"] == ("beta could not walk the image volume's /image/usr/bin: ENOENT "
                                   "(No such file or directory)"), one_tree["message"]
    evidence_shows(one_tree, one_tree["message"])
    assert got["test_image_volume_is_read_only[beta]"]["message"] == (
        "beta wrote into the image volume at /image: it is not read-only")
    assert got["test_image_volume_subpath_is_the_image_directory"]["message"].startswith(
        "beta's subPath mount /image-etc is not the image's etc/: 0 files against ")

    first = socket.gethostname().lower()  # the first node: containerd 1.6
    lacking = tmp_path / "lacking"
    lacking.mkdir()
    results = conftest.run_suites("-m", "volume", "-k", "image_volumes or subpaths", "--node", first,
                                  "--reports-dir", str(lacking))
    assert results.returncode == 0, results.stdout[-3000:]
    ran = json.loads((lacking / "results.json").read_text())
    assert {c["id"].split("::")[0] for c in ran["checks"]} == {"suites/test_subpaths.py"}, ran["checks"]
    assert ran["cluster"]["not_applicable"] == [{
        "node": first, "runtime_class": "", "feature": "image volumes",
        "why": f"node {first}'s containerd 1.6.20 cannot mount image volumes (containerd 2.1 added them: "
               "containerd/containerd#10579)"}], ran["cluster"]
    summary = (lacking / "summary.md").read_text()
    assert f"- not applicable: node {first}'s containerd 1.6.20 cannot mount image volumes" in summary, summary


@pytest.mark.usefixtures("kube")
def test_containers_without_a_shared_process_namespace_fail_the_pid_claim_only(tmp_path):
    """The broken shared-pid pattern (--patterns-dir): without shareProcessNamespace
    each container's PID 1 is its own agent, so the claim that PID 1 is the pod's
    sandbox fails saying what each container sees; the SIGTERM claim still holds."""
    checks = run_variant(tmp_path, None, "lifecycle", "--patterns-dir", str(VARIANTS / "broken-patterns"),
                         "-k", "shared_pid")
    outcomes = {c["id"].split("::")[1].split("[")[0]: c for c in checks}
    broken = outcomes["test_pid_1_is_the_sandbox_and_each_container_sees_the_others_processes"]
    assert broken["outcome"] == "failed" and broken["message"].startswith(
        "PID 1 is not the pod's sandbox in both containers: alpha sees 'python3 -m probes agent'"), broken["message"]
    assert outcomes["test_on_deletion_each_containers_own_process_gets_the_sigterm"]["outcome"] == "passed"


def test_a_sidecars_exit_without_its_restart_all_rule_restarts_the_sidecar_alone(tmp_path, kube):
    """The broken restart-all-sidecar pattern (--patterns-dir): the sidecar has no
    RestartAllContainers rule, so its exit with 42 restarts it alone (restartPolicy
    Always): the claim fails naming alpha's and beta's unchanged boot ids."""
    checks = run_variant(tmp_path, None, "lifecycle", "--patterns-dir", str(VARIANTS / "broken-patterns"),
                         "-k", "restart_all_sidecar", node=_node_of_pool(kube, "current"))
    assert [c["outcome"] for c in checks] == ["failed"], [(c["id"], c["outcome"], c["message"]) for c in checks]
    assert checks[0]["message"].startswith("alpha and beta kept their boot id across the sidecar's exit with 42"), \
        checks[0]["message"]
