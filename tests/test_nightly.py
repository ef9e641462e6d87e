"""Nightly inside the cluster, for real: the runner image runs the suites as a Job
made from the CronJob of `podshare nightly-manifest` (in-cluster configuration,
restricted Pod Security, non-root, read-only root file system), its reports are
fetched after the pod is gone, and three runs, the middle one with a claim
broken through --pod-manifest, make a trend that shows the regression and the
recovery. Needs the local cluster's images (the runner is built by cluster/images.py)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid

import pytest
import yaml
from kubernetes import client

from podshare import RUN_ID_LABEL, fence
from podshare.nightly import render

from .conftest import PROJECT, rbac

pytestmark = pytest.mark.skipif(not os.environ.get("PODSHARE_LOCAL_CLUSTER"),
                                reason="needs the local cluster's runner image")
NAMESPACE = "podshare-nightly"
CLAIM = "test_file_written_in_alpha_is_read_byte_exact_in_beta"
PODSHARE = str(PROJECT / ".venv" / "bin" / "podshare")


@pytest.fixture
def nightly(kube, confinement):
    """The rendered nightly manifests applied (and the ClusterRoles they bind), removed afterwards."""
    images = {"runner": os.environ["PODSHARE_RUNNER_IMAGE"], "probe": os.environ.get("PODSHARE_PROBE_IMAGE"),
              "nginx": os.environ["PODSHARE_NGINX_IMAGE"]}
    docs = list(yaml.safe_load_all(render(images=images, pull_policy="Never", runner_by_tag=True)))
    core, rbac_api, batch = kube.core, client.RbacAuthorizationV1Api(kube.core.api_client), client.BatchV1Api(
        kube.core.api_client)
    made_roles = []
    for role in ("podshare-run", "podshare-nodes"):
        try:
            rbac_api.read_cluster_role(role)
        except client.ApiException:
            rbac_api.create_cluster_role(rbac(role))
            made_roles.append(role)
    create = {"Namespace": lambda d: core.create_namespace(d),
              "ServiceAccount": lambda d: core.create_namespaced_service_account(NAMESPACE, d),
              "RoleBinding": lambda d: rbac_api.create_namespaced_role_binding(NAMESPACE, d),
              "ClusterRoleBinding": lambda d: rbac_api.create_cluster_role_binding(d),
              "CronJob": lambda d: batch.create_namespaced_cron_job(NAMESPACE, d),
              **{kind: lambda d: kube.create(NAMESPACE, d) for kind in ("NetworkPolicy", "ResourceQuota", "LimitRange")}}
    assert {d["kind"] for d in docs} == set(create), "the nightly manifest's kinds changed: apply them here too"
    for doc in docs:
        create[doc["kind"]](doc)
    fence.install(kube, NAMESPACE)  # made above: waits until the quota counts
    cronjob = next(d for d in docs if d["kind"] == "CronJob")
    yield cronjob, batch
    for doc in docs:
        if doc["kind"] == "ClusterRoleBinding":
            rbac_api.delete_cluster_role_binding(doc["metadata"]["name"])
    for role in made_roles:
        rbac_api.delete_cluster_role(role)
    kube.delete_namespace(NAMESPACE, timeout=180)


def run_job(batch, core, cronjob: dict, args: list[str], variant: str | None = None, timeout: float = 900) -> str:
    """A one-off Job from the CronJob's template, as `kubectl create job --from=cronjob/...`
    makes it; waits until it ends and returns its log."""
    name = f"podshare-now-{uuid.uuid4().hex[:6]}"
    spec = json.loads(json.dumps(cronjob["spec"]["jobTemplate"]["spec"]))
    pod = spec["template"]["spec"]
    pod["containers"][0]["args"] = ["nightly", *args]
    if variant:  # a broken probe pod for the run, from a ConfigMap
        core.create_namespaced_config_map(NAMESPACE, {"metadata": {"name": name},
                                                      "data": {"pod.yaml": (PROJECT / variant).read_text()}})
        pod["volumes"].append({"name": "variant", "configMap": {"name": name}})
        pod["containers"][0]["volumeMounts"].append({"name": "variant", "mountPath": "/variant"})
    batch.create_namespaced_job(NAMESPACE, {"metadata": {"name": name}, "spec": spec})
    deadline = time.monotonic() + timeout
    while True:
        status = batch.read_namespaced_job(name, NAMESPACE).status
        if status.succeeded or status.failed:
            break
        assert time.monotonic() < deadline, f"job {name} did not finish in {timeout}s"
        time.sleep(2)
    pods = core.list_namespaced_pod(NAMESPACE, label_selector=f"job-name={name}").items
    log = core.read_namespaced_pod_log(pods[0].metadata.name, NAMESPACE)
    assert "reports stored as configmap/" in log, log[-3000:]
    return log


def test_the_nightly_job_runs_every_claim_keeps_its_reports_and_shows_the_trend(kube, nightly, tmp_path):
    cronjob, batch = nightly
    # The CronJob checks every node (PODSHARE_ALL_NODES); narrowed here to the default
    # pool, so the trend has one column per claim (test_nodes.py checks every pool).
    pool = ["--node-selector", "podshare.io/pool=default"]
    full = run_job(batch, kube.core, cronjob, pool)
    broken = run_job(batch, kube.core, cronjob, [*pool, "-m", "volume", "-k", CLAIM, "--pod-manifest",
                                                 "/variant/pod.yaml"], variant="tests/variants/split-volumes.yaml")
    fixed = run_job(batch, kube.core, cronjob, [*pool, "-m", "volume", "-k", CLAIM])
    assert "0 earlier runs" in full and "2 earlier runs" in fixed

    # The runner pods are gone or finished; the reports are fetched with the documented command.
    store = tmp_path / "store"
    fetched = subprocess.run([PODSHARE, "fetch", "--namespace", NAMESPACE, str(store)], capture_output=True, text=True)
    assert fetched.returncode == 0 and "3 runs" in fetched.stdout, fetched.stdout + fetched.stderr
    runs = sorted(store.glob("*.json"))
    first = json.loads(runs[0].read_text())
    assert len(first["checks"]) >= 48 and {c["outcome"] for c in first["checks"]} == {"passed"}, [
        (c["id"], c["outcome"]) for c in first["checks"] if c["outcome"] != "passed"]
    assert first["cluster"]["context"] == "in-cluster"
    assert {c["per_node"] for c in first["checks"]} == {True}  # the nightly's every-node machinery ran
    assert (store / "newest-junit.xml").exists() and (store / "newest-summary.md").exists()
    for results in map(lambda p: json.loads(p.read_text()), runs):  # each run removed its own pods
        assert results["run"]["namespace"] == NAMESPACE  # the runner's identity can work nowhere else
        assert kube.list_labelled(NAMESPACE, "Pod", f"{RUN_ID_LABEL}={results['run']['id']}") == []

    shown = subprocess.run([PODSHARE, "history", str(store), "--reports-dir", str(tmp_path / "shown")],
                           capture_output=True, text=True)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    for volume in ("disk", "memory"):
        assert f"recovered: suites/test_volumes.py::{CLAIM}[{volume}] @ default" in shown.stdout
    strip = '<i class="t passed"[^>]*></i><i class="t failed"[^>]*></i><i class="t passed"[^>]*></i>'
    assert len(re.findall(strip, (tmp_path / "shown" / "report.html").read_text())) == 2
    assert "newly failing" in broken
