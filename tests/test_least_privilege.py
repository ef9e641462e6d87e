"""Least privilege: the suites pass as a ServiceAccount bound to exactly the
RBAC in manifests/rbac.yaml: the ClusterRole for generated namespaces, or, with
--namespace, only the Role in that namespace (no cluster-scoped permission)."""
from __future__ import annotations

import json
import uuid

from podshare import MANAGED_BY, RUN_ID_LABEL

from .conftest import RESTRICTED, run_suites_as


def outcomes(reports) -> tuple[dict, dict]:
    results = json.loads((reports / "results.json").read_text())
    return {c["id"]: c["outcome"] for c in results["checks"]}, results


def test_suites_pass_as_a_service_account_with_the_cluster_role(account, tmp_path):
    account.bind_cluster_role()
    reports = tmp_path / "reports"
    run = run_suites_as("--kubeconfig", str(account.kubeconfig()), "--reports-dir", str(reports))
    by_claim, results = outcomes(reports)
    assert run.returncode == 0, run.stdout[-3000:]
    assert set(by_claim.values()) == {"passed"}
    assert results["run"]["leftovers"] == [] and results["run"]["api_warnings"] == []


def test_with_namespace_the_role_alone_suffices(account, kube, podshare_session, tmp_path):
    """No ClusterRole at all: a Role in the given namespace runs every suite; only
    the optional node facts are missing from the report."""
    target = f"podshare-rbac-target-{uuid.uuid4().hex[:6]}"
    kube.create_namespace(target, {**MANAGED_BY, RUN_ID_LABEL: podshare_session.run_id, **RESTRICTED})
    try:
        account.bind_role_in(target)
        reports = tmp_path / "reports"
        run = run_suites_as("--kubeconfig", str(account.kubeconfig()), "--namespace", target,
                            "--reports-dir", str(reports))
        by_claim, results = outcomes(reports)
        assert run.returncode == 0, run.stdout[-3000:]
        assert set(by_claim.values()) == {"passed"}
        assert "forbidden" in results["cluster"].get("node_info", "")  # degraded, not failed
        assert results["run"]["api_warnings"] == []
        leftover_pods = kube.core.list_namespaced_pod(target).items
        assert leftover_pods == [] or all(p.metadata.deletion_timestamp for p in leftover_pods)
    finally:
        kube.delete_namespace(target, timeout=120)
