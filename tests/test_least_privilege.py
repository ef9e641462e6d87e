"""Least privilege: the suites pass as a ServiceAccount bound to exactly the
RBAC in manifests/rbac.yaml, confined by its admission policy: the ClusterRoles
podshare and podshare-nodes for generated namespaces (the run binds podshare-run
to itself in each), or, with --namespace, only podshare-run bound in that
namespace (no cluster-scoped permission)."""
from __future__ import annotations

import json
import re
import uuid
from concurrent.futures import ThreadPoolExecutor

from podshare import MANAGED_BY, RUN_ID_LABEL, fence
from podshare.fence import FENCED

from .conftest import RESTRICTED, rbac, run_suites_as


def outcomes(reports) -> tuple[dict, dict]:
    results = json.loads((reports / "results.json").read_text())
    return {c["id"]: c["outcome"] for c in results["checks"]}, results


def test_a_run_passes_as_a_service_account_with_the_cluster_roles(account, tmp_path):
    """What the ClusterRoles add to podshare-run is the run's own namespace, its
    binding there and the node facts, which every run uses: so a selection of
    claims (SELECTION below) shows them enough. Every claim's own calls are
    podshare-run's, and every suite runs with podshare-run alone (the next test,
    and the nightly's run in tests/test_nightly.py)."""
    account.bind_cluster_role()
    reports = tmp_path / "reports"
    run = run_suites_as(*account.options(), "--reports-dir", str(reports), *SELECTION)
    by_claim, results = outcomes(reports)
    assert run.returncode == 0, run.stdout[-3000:]
    assert len(by_claim) == 3 and set(by_claim.values()) == {"passed"}, by_claim
    assert results["run"]["leftovers"] == [] and results["run"]["api_warnings"] == []
    # its namespace was counted by the namespace cap (the session installs it, as an operator would)
    assert re.fullmatch(r"confined: podshare-confinement in force; podshare-namespace-cap is in force: "
                        r"\d+ podshare run namespaces exist and the cap is \d+", results["run"]["confinement"])


def test_with_namespace_the_role_alone_suffices(account, kube, podshare_session, tmp_path):
    """No ClusterRole at all: podshare-run bound in the given namespace runs every
    suite; only the optional node facts are missing from the report."""
    target = f"podshare-rbac-target-{uuid.uuid4().hex[:6]}"
    kube.create_namespace(target, {**MANAGED_BY, RUN_ID_LABEL: podshare_session.run_id, **FENCED, **RESTRICTED})
    try:
        fence.install(kube, target)  # what an administrator does for a namespace given to --namespace
        account.bind_run_role_in(target)
        reports = tmp_path / "reports"
        # pinned to the current pool: without the right to read nodes, a pod the scheduler places
        # cannot be kept off the nodes whose runtime lacks what it needs (image volumes on containerd 1.6)
        pinned = [arg for n in kube.nodes() if (n.metadata.labels or {}).get("podshare.io/pool") == "current"
                  for arg in ("--node", n.metadata.name)][:2]
        run = run_suites_as(*account.options(), "--namespace", target, *pinned, "--reports-dir", str(reports))
        by_claim, results = outcomes(reports)
        assert run.returncode == 0, run.stdout[-3000:]
        assert set(by_claim.values()) == {"passed"}
        assert "forbidden" in results["cluster"].get("node_info", "")  # degraded, not failed
        assert results["run"]["api_warnings"] == []
        # the run ends when its pods are gone, not while they are still terminating
        assert [p.metadata.name for p in kube.core.list_namespaced_pod(target).items] == []
    finally:
        kube.delete_namespace(target, timeout=120)


# Rules no claim needs, kept for a reason (docs/security.md says the same):
# without them a run still passes, with less in its reports. (role, resource, verb)
OPTIONAL = {
    ("podshare", "namespaces", "list"): "podshare gc finds orphaned run namespaces by label",
    ("podshare-run", "confinement", "confined"): "not a permission: the mark where only podshare-run is bound "
                                                 "(the nightly, --namespace); here podshare's mark covers it",
    ("podshare-run", "namespaces", "get"): "--namespace checks the namespace exists (generated namespaces are "
                                           "read through the ClusterRole podshare)",
    ("podshare-run", "pods", "list"): "podshare gc; and naming the pods left when a namespace outlives its "
                                      "deletion timeout",
    ("podshare-run", "configmaps", "list"): "podshare gc", ("podshare-run", "services", "list"): "podshare gc",
    ("podshare-run", "configmaps", "get"): "podshare gc reads what it is about to delete",
    ("podshare-run", "services", "get"): "podshare gc reads what it is about to delete",
    ("podshare-run", "events", "list"): "pod events in the diagnostics of a failed claim",
    ("podshare-run", "configmaps", "patch"): "the ConfigMap update claims (suites/test_configmap_volumes.py) patch "
                                             "their ConfigMap; they are not in this selection, whose runs it would "
                                             "lengthen by the kubelet's sync each, and without the verb they fail "
                                             "with the 403",
    ("podshare-run", "persistentvolumeclaims", "create"): "the across-pod claims (suites/test_across_pods.py) make "
                                                          "their claims; they run only with --storage-class, not in "
                                                          "this selection, and without the verb they fail with the 403",
    ("podshare-run", "persistentvolumeclaims", "delete"): "the across-pod claims' cleanup (as create)",
    ("podshare-nodes", "nodes", "get"): "the node facts in the report header (with --node: that the node exists)",
    ("podshare-nodes", "nodes", "list"): "the node facts in the report header",
    ("podshare-nodes", "runtimeclasses", "get"): "a missing --runtime-class named at once (else the pod's "
                                                 "creation says it)",
}
# A probe claim, a pattern claim with a ConfigMap and a Service, one that reads a
# container's log, on a RuntimeClass.
SELECTION = ("-k", "test_hostname_is_the_pod_name_in_every_container or test_app_port_is_not_reachable_through_the_pod_ip"
             " or test_main_containers_read_the_data_set_byte_exact_at_start")


SHIPPED = ("podshare", "podshare-nodes", "podshare-run")


def role_pairs() -> list[tuple[str, str, str]]:
    """(shipped ClusterRole, resource, verb) of every rule a user grants."""
    return [(role, resource, verb) for role in SHIPPED for rule in rbac(role)["rules"]
            for resource in rule["resources"] for verb in rule["verbs"]]


def without(account, removed: set[tuple[str, str, str]]) -> dict[str, list[dict]]:
    """Each of the account's copies, with its shipped rules less the removed (role, resource, verb)s."""
    copies = {}
    for copy, held in account.holds.items():
        rules = []
        for shipped in held:
            for rule in account.rules_of(shipped):
                for r in rule["resources"]:
                    verbs = [v for v in rule["verbs"] if (shipped, r, v) not in removed]
                    if verbs:
                        rules.append({**rule, "resources": [r], "verbs": verbs})
        copies[copy] = rules
    return copies


def what_the_run_said(run, reports) -> str:
    """Its terminal output and, as plain text, its report's fatal line, leftovers and claim messages."""
    said = [run.stdout, run.stderr]
    if (reports / "results.json").exists():
        results = json.loads((reports / "results.json").read_text())
        said += [str(results["run"]["fatal"]), *results["run"]["leftovers"], *(c["message"] for c in results["checks"])]
    return "\n".join(said)


def names_the_403(said: str, resource: str, verb: str) -> bool:
    if (resource, verb) == ("clusterroles", "bind"):  # RBAC's escalation check names the permissions, not bind
        return "is attempting to grant RBAC permissions not currently held" in said
    if (resource, verb) == ("confinement", "confined"):  # no 403: the run stops, as it must, unconfined
        return "the confinement is not in force for" in said
    if resource == "pods/exec":  # the API names no verb for a refused websocket upgrade; podshare names both
        return 'cannot create or get resource "pods/exec"' in said
    return f'cannot {verb} resource "{resource}"' in said


def test_every_rule_is_needed_or_kept_for_a_stated_reason(make_account, kube, tmp_path):
    """Least, not only sufficient: with any one verb of the shipped ClusterRoles
    removed, the run fails and says which (the API's 403 names verb and resource),
    unless the rule is one of OPTIONAL, whose reason is written down. Those are
    removed all at once, in one run, which passes: a run that passes without all
    of them passes without any one (a grant more cannot refuse a call). Three
    accounts take turns, so the runs overlap their pod start-ups."""
    pairs = role_pairs()
    assert set(OPTIONAL) <= set(pairs), set(OPTIONAL) - set(pairs)
    removals = [frozenset(OPTIONAL), *(frozenset({pair}) for pair in pairs if pair not in OPTIONAL)]
    workers = 3
    accounts = [make_account() for _ in range(workers)]
    for account in accounts:
        account.bind_cluster_role()

    def try_without(account, removed: frozenset) -> tuple[int, bool, str]:
        for copy, rules in without(account, removed).items():  # the previous turn's removal undone too
            account.set_rules(copy, rules)
        reports = tmp_path / f"run-{uuid.uuid4().hex[:8]}"
        run_id = f"least-{uuid.uuid4().hex[:8]}"
        try:
            run = run_suites_as(*account.options(), "--reports-dir", str(reports), "--runtime-class", "runc",
                                "--pod-timeout", "60", "--run-id", run_id, *SELECTION)
        finally:  # without delete or get on namespaces, the run cannot remove its own: we do
            for namespace in kube.list_namespaces(f"{RUN_ID_LABEL}={run_id}"):
                kube.delete_namespace(namespace.metadata.name, timeout=120)
        said = what_the_run_said(run, reports)
        return run.returncode, len(removed) == 1 and names_the_403(said, *next(iter(removed))[1:]), said[-3000:]

    def work(i: int) -> dict:
        return {removed: try_without(accounts[i], removed) for removed in removals[i::workers]}
    seen = {}
    with ThreadPoolExecutor(workers) as pool:
        for done in pool.map(work, range(workers)):
            seen.update(done)
    optional = seen.pop(frozenset(OPTIONAL))
    assert optional[0] == 0, f"without every OPTIONAL rule the run exited {optional[0]}: {optional[2]}"
    wrong = {next(iter(removed)): got[:2] for removed, got in seen.items() if got[0] == 0 or not got[1]}
    assert not wrong, f"(exit code, 403 named) per removed verb: {wrong}"


def test_a_run_with_a_storage_class_makes_its_own_claims_as_the_confined_identity(account, tmp_path):
    """The across-pod claims make PersistentVolumeClaims themselves (the others are
    generic ephemeral volumes, made by the cluster's controller): as the confined
    identity they are made, mounted and gone after the run. The API server adds its
    own finalizer (kubernetes.io/pvc-protection) to every claim before the policy
    sees it, which the policy once took for the identity's (2026-12-04)."""
    import os
    import pytest
    if not os.environ.get("PODSHARE_LOCAL_CLUSTER"):
        pytest.skip("not applicable: needs the bundled cluster's local-path StorageClass")
    account.bind_cluster_role()
    reports = tmp_path / "reports"
    run = run_suites_as(*account.options(), "--reports-dir", str(reports), "--storage-class", "local-path",
                        "-k", "across_pods and one-node")
    by_claim, results = outcomes(reports)
    assert run.returncode == 0, run.stdout[-3000:]
    assert len(by_claim) == 4 and set(by_claim.values()) == {"passed"}, by_claim
    assert results["run"]["leftovers"] == [], results["run"]["leftovers"]
