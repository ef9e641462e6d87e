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
from podshare.report import Check, KnownDivergences, claim_matrix, figure_table

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
    from podshare.pods import load_manifest, render
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
    from podshare.plugin import _claim_id, dimension_group
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
    text = exposition({}, {}, checks)
    assert 'podshare_claim_passed{claim="s.py::t",runtime_class="runc",node="",pool="",user_namespaces="false"} 1' in text
    assert 'user_namespaces="true"} 0' in text
    assert "user_namespaces" not in exposition({}, {}, [_check(None)])  # not a dimension of the run: no label


def test_known_divergences_can_name_pods_in_user_namespaces():
    listed = KnownDivergences([{"claim": "s.py::t", "reason": "userns", "where": [
        {"runtime_class": "runc", "node_selector": "podshare.io/pool=current", "user_namespaces": True}]}])
    current = {"podshare.io/pool": "current"}
    assert listed.match("s.py::t", "runc", current, True) == "userns"
    assert listed.match("s.py::t", "runc", current, False) is None  # the same pods without: still a promise
    assert listed.match("s.py::t", "runc", current) is None
    assert listed.match("s.py::t", "crun", current, True) is None
