"""User namespaces as a dimension (--user-namespaces off|on|both): every pod
with hostUsers: false, ids and reports carrying it, a node or runtime that
cannot run such pods reported in one line with the kubelet's reason, and the
claims that show the pods really are in user namespaces. The harness's logic
first; then the runs on the local cluster, where only the current pool's runc
(containerd 2.4, runc 1.5) supports them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace as NS

import pytest

from podshare.metrics import exposition
from podshare.findings import claim_matrix, figure_table
from podshare.known_divergences import KnownDivergences
from podshare.records import Check, ClusterFacts, RunInfo

from .conftest import PROJECT, run_suites

NO_CLUSTER = {**os.environ, "KUBECONFIG": "/nonexistent/kubeconfig"}


def _collect(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "suites", "--collect-only",
                           "-q", *args], cwd=PROJECT, capture_output=True, text=True, env=env or NO_CLUSTER,
                          timeout=120)


def _ids(out: subprocess.CompletedProcess) -> list[str]:
    assert out.returncode == 0, out.stdout + out.stderr
    return [line for line in out.stdout.splitlines() if "::" in line]


def test_user_namespaces_is_a_dimension_of_every_claim_with_its_id():
    """off: ids as before; on: every claim once, `userns` in its id; both: every
    claim twice (hostusers and userns), composed with the RuntimeClass; the env
    variable and the ini twin set it too, and a wrong value is one line."""
    off = _ids(_collect())
    on = _ids(_collect("--user-namespaces", "on"))
    both = _ids(_collect("--user-namespaces", "both", "--runtime-class", "runc"))
    namespaced = {"test_every_container_is_in_a_user_namespace_not_the_hosts", "test_one_user_namespace_per_pod"}
    assert not any("userns" in i or "hostusers" in i for i in off)
    assert not any(i.split("::")[1].split("[")[0] in namespaced for i in off)  # about hostUsers: false pods only
    assert len(on) == len(off) + 2 and all(i.endswith("userns]") or "-userns-" in i or "[userns-" in i for i in on)
    assert len(both) == 2 * len(off) + 2 and not any(
        i.split("::")[1].split("[")[0] in namespaced for i in both if "hostusers" in i)
    assert "suites/test_identity.py::test_hostname_is_the_pod_name_in_every_container[runc-userns]" in both
    assert "suites/test_identity.py::test_hostname_is_the_pod_name_in_every_container[runc-hostusers]" in both
    assert _ids(_collect(env={**NO_CLUSTER, "PODSHARE_USER_NAMESPACES": "on"})) == on
    ini = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "suites", "--collect-only", "-q",
                          "-o", "podshare_user_namespaces=on"], cwd=PROJECT, capture_output=True, text=True,
                         env=NO_CLUSTER, timeout=120)
    assert _ids(ini) == on
    wrong = _collect("--user-namespaces", "maybe")
    assert wrong.returncode == 4 and "--user-namespaces must be one of off, on, both, not 'maybe'" in wrong.stderr


def test_every_pod_gets_host_users_false_unless_its_manifest_says_otherwise():
    from podshare.manifests import load_manifest, render
    settings = NS(probe_image="img", nginx_image="nginx", image_pull_policy="Never", image_pull_secret=None,
                  tolerate=(), probes_from="image")
    probe = load_manifest("probe-pod.yaml")
    assert render(probe, name="p", settings=settings, run_id="r", user_namespaces=True)["spec"]["hostUsers"] is False
    assert "hostUsers" not in render(probe, name="p", settings=settings, run_id="r")["spec"]
    kept = {**probe, "spec": {**probe["spec"], "hostUsers": True}}  # a variant keeping the host's (negative control)
    assert render(kept, name="p", settings=settings, run_id="r", user_namespaces=True)["spec"]["hostUsers"] is True


def test_the_pods_of_each_setting_have_names_of_their_own():
    from podshare.factory import PodFactory
    cluster = NS(kube=None, namespace="ns")
    settings = NS(node=None)
    assert PodFactory(cluster, settings, "abc123", "runc", None, True).suffix == "runc-u-abc123"
    assert PodFactory(cluster, settings, "abc123", "runc", None, False).suffix == "runc-abc123"


def test_claim_ids_lose_the_setting_and_the_groups_keep_it():
    from podshare.dimensions import claim_id as _claim_id, group_of as dimension_group
    item = NS(nodeid="suites/test_v.py::test_x[disk-vm-current-runc-userns]",
              path=NS(name="test_v.py", parent=NS(name="suites")),
              callspec=NS(params={"node": "vm-current", "runtime_class": "runc", "user_namespaces": True}))
    assert _claim_id(item) == "suites/test_v.py::test_x[disk]"
    item.nodeid, item.callspec.params = "suites/test_v.py::test_y[hostusers]", {"user_namespaces": False}
    assert _claim_id(item) == "suites/test_v.py::test_y"
    values = sorted(["vm", "vm-current", "runc", "crun", "userns", "hostusers"], key=len, reverse=True)
    assert dimension_group("s.py::t[disk-vm-current-runc-userns]", values) == "runc|userns|vm-current"
    assert dimension_group("s.py::t[disk-vm-current-runc-hostusers]", values) == "hostusers|runc|vm-current"


def _check(column: bool | None, outcome="passed", runtime_class="runc", figures=None) -> Check:
    return Check(id="s.py::t", claim="claim t", outcome=outcome, duration_s=1, claim_id="s.py::t",
                 runtime_class=runtime_class, user_namespaces=column, figures=figures or {})


def test_the_matrix_the_figures_and_the_metrics_carry_the_setting():
    checks = [_check(False), _check(True, "known-divergence")]
    matrix = claim_matrix(checks)
    assert matrix.title == "Claim x RuntimeClass x user namespaces"
    assert matrix.columns == ["runc · host users", "runc · userns"]
    assert claim_matrix([_check(None, runtime_class=None)]) is None  # one column: no matrix, as before
    figure = {"unit": "µs", "median": 1.0, "p95": 2.0, "samples": 10}
    columns, _ = figure_table([_check(False, figures={"f": figure}), _check(True, figures={"f": figure})])
    assert columns == ["runc · host users", "runc · userns"]
    text = exposition(RunInfo(id="r"), ClusterFacts(), checks)
    assert 'podshare_claim_passed{claim="s.py::t",runtime_class="runc",node="",pool="",user_namespaces="false"} 1' in text
    assert 'user_namespaces="true"} 0' in text
    assert "user_namespaces" not in exposition(RunInfo(id="r"), ClusterFacts(), [_check(None)])  # not a dimension of the run: no label


def test_known_divergences_can_name_pods_in_user_namespaces():
    listed = KnownDivergences([{"claim": "s.py::t", "reason": "userns", "where": [
        {"runtime_class": "runc", "node_selector": "podshare.io/pool=current", "user_namespaces": True}]}])
    current = {"podshare.io/pool": "current"}
    assert listed.match("s.py::t", "runc", current, True) == "userns"
    assert listed.match("s.py::t", "runc", current, False) is None  # the same pods without: still a promise
    assert listed.match("s.py::t", "runc", current) is None
    assert listed.match("s.py::t", "crun", current, True) is None


def test_the_probe_tells_the_hosts_user_namespace_from_its_own(tmp_path):
    """On this host: the identity map outside any user namespace; under `unshare
    --user --map-root-user` the map unshare wrote (uid 0 inside is this uid
    outside, one id) and another /proc/self/ns/user; `owner` reads a file's ids."""
    from .conftest import probe
    host = probe("user-namespace")
    inside = probe("user-namespace", prefix=("unshare", "--user", "--map-root-user"))
    assert host["ok"] and host["uid_map"] == host["gid_map"] == [[0, 0, 4294967295]], host
    assert inside["ok"] and inside["uid_map"] == [[0, os.getuid(), 1]] and inside["uid"] == 0, inside
    assert inside["user_namespace"] != host["user_namespace"]
    (tmp_path / "f").write_text("x")
    owned = probe("owner", "--path", str(tmp_path / "f"))
    assert owned["ok"] and (owned["uid"], owned["gid"]) == (os.getuid(), os.getgid()), owned
    assert probe("owner", "--path", str(tmp_path / "missing"))["errno"] == "ENOENT"


# ------------------------------------------------------------------ on the local cluster

needs_nodes = pytest.mark.skipif(int(os.environ.get("PODSHARE_NODES", "1")) < 3,
                                 reason="needs the local cluster with its three pools (PODSHARE_NODES=3)")
KNOWN = "cluster/gvisor-known-divergences.yaml"
CLASSES = ("runc", "crun", "youki", "gvisor")
# make test's user-namespace run (cluster/test-all.sh): the current pool (containerd 2, runc 1.5,
# kubelet 1.37) with its four classes, and the default pool (containerd 1.6: runc, crun and youki;
# the RuntimeClass gvisor selects the current pool), every pod hostUsers: false
USERNS_RUN = ("--user-namespaces", "on", "--node-selector", "podshare.io/pool in (default,current)",
              *(f"--runtime-class={c}" for c in CLASSES), "--known-divergences", KNOWN)


@pytest.fixture(scope="module")
def userns_run(tmp_path_factory) -> dict:
    """make test's run (handed over in PODSHARE_USERNS_RESULTS); run alone, this runs it."""
    given = os.environ.get("PODSHARE_USERNS_RESULTS")
    if given:
        return json.loads(Path(given).read_text())
    reports = tmp_path_factory.mktemp("userns")
    run = run_suites(*USERNS_RUN, "--reports-dir", str(reports), timeout=1800)
    assert run.returncode == 2, run.stdout[-3000:]  # some nodes and classes could not be checked: 2, not 1
    return json.loads((reports / "results.json").read_text())


def _pools(results: dict) -> dict[str, str]:
    return {facts["pool"]: name for name, facts in results["cluster"]["nodes"].items()}


@needs_nodes
@pytest.mark.usefixtures("kube")
def test_in_user_namespaces_the_current_pools_runc_diverges_exactly_where_the_file_says(userns_run):
    """On the current pool's runc (containerd 2.4, runc 1.5.3, kubelet 1.37), every
    claim runs with hostUsers: false, the two about user namespaces included, and
    diverges exactly where the known-divergences file lists it for user namespaces
    there: nowhere (IPC, /dev/shm, mqueue, emptyDir ownership and the patterns'
    sysctl all hold), so a listed entry that held, or any break, fails here."""
    pools = _pools(userns_run)
    current = pools["current"]
    labels = userns_run["cluster"]["nodes"][current]["all_labels"]
    seen = {c["claim_id"]: c["outcome"] for c in userns_run["checks"]
            if c["node"] == current and c["runtime_class"] == "runc"}
    assert all(c["user_namespaces"] is True for c in userns_run["checks"]), "a check ran without hostUsers: false"
    assert len(seen) >= 52 and {"suites/test_user_namespaces.py::test_one_user_namespace_per_pod",
                                "suites/test_user_namespaces.py::test_every_container_is_in_a_user_namespace_not_the_hosts"
                                } <= set(seen), sorted(seen)
    known = KnownDivergences.load(KNOWN)
    listed = {claim for claim in seen if known.match(claim, "runc", labels, True)}
    diverged = {claim for claim, outcome in seen.items() if outcome != "passed"}  # a skip is not a pass
    assert diverged == listed, {"diverge, not listed": sorted(diverged - listed), "listed, hold": sorted(listed - diverged)}
    assert listed == set(), "the finding: runc 1.5.3 on containerd 2.4.2 keeps every promise in user namespaces"


@needs_nodes
@pytest.mark.usefixtures("kube")
def test_where_the_kubelet_refuses_user_namespaces_each_node_and_class_is_one_line(userns_run):
    """The default pool (containerd 1.6) refuses hostUsers: false on every class,
    the current pool on crun (Debian's 1.8.1 has no `features` command) and youki
    (0.7.0's `features` says idmapped mounts are not supported); gVisor's
    shim on the current pool takes such a pod, and runsc's gofer cannot join the
    user namespace containerd pinned for it (EINVAL); gVisor is not on the default
    pool (one not-applicable line). Each node and class is could-not-check with
    one cause, the kubelet's own words read from the pod's events, and the run
    checked the rest."""
    pools = _pools(userns_run)
    refused = [(pools["default"], c) for c in ("runc", "crun", "youki")] + [
        (pools["current"], c) for c in ("crun", "youki")]
    for node, runtime_class in refused + [(pools["current"], "gvisor")]:
        checks = [c for c in userns_run["checks"] if c["node"] == node and c["runtime_class"] == runtime_class]
        assert len(checks) >= 52 and {c["outcome"] for c in checks} == {"could-not-check"}, (node, runtime_class)
        causes = {c["cause"] for c in checks}
        assert len(causes) == 1, causes
        cause = causes.pop()
        assert cause.startswith(f"RuntimeClass {runtime_class}: the kubelet on node {node} could not create the "
                                "sandbox of pod "), cause
        if (node, runtime_class) in refused:
            assert cause.endswith(f"(hostUsers: false): Failed to create pod sandbox: can't set `spec.hostUsers: "
                                  f"false`, RuntimeClass handler \"{runtime_class}\" does not support user namespaces"), cause
        else:
            assert "gofer: error setting namespace of type user" in cause and cause.endswith(
                "invalid argument"), cause
    assert {(na["node"], na["runtime_class"]) for na in userns_run["cluster"]["not_applicable"]
            if not na.get("feature")} == {(pools["default"], "gvisor")}
    summary = Path(os.environ["PODSHARE_USERNS_RESULTS"]).with_name("summary.md").read_text() \
        if os.environ.get("PODSHARE_USERNS_RESULTS") else None
    if summary is not None:
        assert f"{pools['current']} · runc · userns" in summary and "Claim x node x RuntimeClass x user namespaces" in summary


def _variant(tmp_path: Path, change) -> Path:
    from podshare.manifests import load_manifest
    manifest = load_manifest("probe-pod.yaml")
    change(manifest)
    (tmp_path / "pod.yaml").write_text(json.dumps(manifest))
    return tmp_path / "pod.yaml"


def _on_current(tmp_path: Path, *args: str) -> dict[str, dict]:
    """The user-namespace claims on the current pool's runc, hostUsers: false asked for."""
    from .test_negative_controls import names_a_promise
    current = next(n for n, f in _cluster_nodes().items() if f == "current")
    run_suites("--user-namespaces", "on", "--node", current, "--runtime-class", "runc", "-m", "userns",
               "--reports-dir", str(tmp_path / "r"), *args, timeout=600)
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert results["run"]["fatal"] is None and results["run"]["leftovers"] == [], results["run"]
    for check in results["checks"]:
        if check["outcome"] != "passed":
            assert names_a_promise(check["message"]), check["message"]
    return {c["claim_id"].split("::")[1]: c for c in results["checks"]}


def _cluster_nodes() -> dict[str, str]:
    from kubernetes import client, config
    config.load_kube_config()
    return {n.metadata.name: (n.metadata.labels or {}).get("podshare.io/pool")
            for n in client.CoreV1Api().list_node().items}


@needs_nodes
@pytest.mark.usefixtures("kube")
def test_a_pod_keeping_the_hosts_user_namespace_fails_the_user_namespace_claims(tmp_path):
    """Negative control: the probe pod keeping hostUsers: true while the run asks
    for user namespaces has the identity map, so "in a user namespace" fails naming
    it, and "one per pod" fails (its ids are the host's, the stranger's among them);
    the ownership claim still holds."""
    variant = _variant(tmp_path, lambda m: m["spec"].__setitem__("hostUsers", True))
    checks = _on_current(tmp_path, "--pod-manifest", str(variant))
    outcome = {claim: c["outcome"] for claim, c in checks.items()}
    assert outcome == {"test_every_container_is_in_a_user_namespace_not_the_hosts": "failed",
                       "test_one_user_namespace_per_pod": "failed",
                       "test_a_file_in_the_volume_belongs_to_its_writer_in_every_container[disk]": "passed",
                       "test_a_file_in_the_volume_belongs_to_its_writer_in_every_container[memory]": "passed"}, outcome
    assert "is the host's identity map [[0, 0, 4294967295]]" in checks[
        "test_every_container_is_in_a_user_namespace_not_the_hosts"]["message"]


@needs_nodes
@pytest.mark.usefixtures("kube")
def test_alpha_and_beta_in_two_pods_fail_the_one_user_namespace_per_pod_claim(tmp_path):
    """Negative control: alpha and beta in two pods (tests/variants/split-pods.yaml),
    each in a user namespace: "one per pod" fails with their two maps, the
    ownership claim fails (beta's volume is another), "in a user namespace" holds."""
    checks = _on_current(tmp_path, "--pod-manifest", str(PROJECT / "tests" / "variants" / "split-pods.yaml"))
    outcome = {claim: c["outcome"] for claim, c in checks.items()}
    assert outcome == {"test_every_container_is_in_a_user_namespace_not_the_hosts": "passed",
                       "test_one_user_namespace_per_pod": "failed",
                       "test_a_file_in_the_volume_belongs_to_its_writer_in_every_container[disk]": "failed",
                       "test_a_file_in_the_volume_belongs_to_its_writer_in_every_container[memory]": "failed"}, outcome
    assert "alpha and beta have different id maps" in checks["test_one_user_namespace_per_pod"]["message"]


@needs_nodes
@pytest.mark.skipif(not os.environ.get("PODSHARE_LOCAL_CLUSTER") or os.geteuid() != 0,
                    reason="reads the kubelet's volume directories on the node (the local cluster, root)")
@pytest.mark.usefixtures("kube")
def test_the_node_sees_a_user_namespaced_pods_file_owned_by_the_uid_inside(kube, tmp_path):
    """A file alpha (uid 65532, host uid 65532 + the pod's map offset) writes in an
    emptyDir belongs, on the node's disk and tmpfs, to 65532, not to alpha's host
    uid: the kubelet mounts the pod's volumes idmapped, so the node's file system
    holds the ids as the pod sees them."""
    state = Path(os.environ.get("PODSHARE_CLUSTER_DIR", "/var/lib/podshare/cluster"))
    checks = _on_current(tmp_path, "-k", "belongs_to_its_writer", "--keep", "always")
    try:
        for claim, check in checks.items():
            ev = check["evidence"]
            volume, name = ev["path"].split("/")[2], ev["path"].rsplit("/", 1)[1]
            kubelets = [state / "kubelet", *state.glob("nodes/*/kubelet")]  # the first node's, the workers'
            found = [p for k in kubelets if (p := k / "pods" / ev["pod_uid"] / "volumes" / "kubernetes.io~empty-dir"
                                             / volume / name).exists()]
            assert len(found) == 1, (claim, found)
            on_node = found[0].stat()
            print(f"{claim}: inside {ev['file_owner']['alpha']['uid']}:{ev['file_owner']['alpha']['gid']}, alpha's "
                  f"host uid {ev['host_uid_of_alpha']}, on the node {on_node.st_uid}:{on_node.st_gid} ({found[0]})")
            assert ev["host_uid_of_alpha"] != ev["alpha_uid"], ev["uid_map"]  # alpha really is mapped
            assert (on_node.st_uid, on_node.st_gid) == (ev["alpha_uid"], ev["alpha_gid"]), (
                f"on the node the file belongs to {on_node.st_uid}:{on_node.st_gid}")
    finally:
        namespace = json.loads((tmp_path / "r" / "results.json").read_text())["run"]["namespace"]
        kube.delete_namespace(namespace, timeout=120)
