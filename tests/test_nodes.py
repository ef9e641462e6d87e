"""Every node: the node as a dimension of a run (--all-nodes, --node-selector),
nodes that cannot be checked reported with their reason, known divergences of
a node pool, and the node x claim matrix. The harness's logic here; the runs on
the local cluster's nodes below it."""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import time
from types import SimpleNamespace as NS

import pytest

from podshare.node_facts import node_unfit
from podshare.records import RunInfo
from podshare.records import Check
from podshare.findings import claim_matrix
from podshare.known_divergences import KnownDivergences
from podshare.markdown_report import render_markdown
from podshare.report import RunReport

from .conftest import POD_TIMEOUT, PROJECT, not_applicable, run_suites, unchecked_exit


def _node(name="n1", *, unschedulable=False, ready="True", taints=(), labels=None):
    since = dt.datetime(2026, 11, 29, 19, 40, tzinfo=dt.timezone.utc)
    return NS(metadata=NS(name=name, labels=labels or {}),
              spec=NS(unschedulable=unschedulable, taints=[NS(key=k, value=v, effect=e) for k, v, e in taints]),
              status=NS(conditions=[NS(type="Ready", status=ready, last_transition_time=since,
                                       reason="NodeStatusUnknown" if ready != "True" else "KubeletReady",
                                       message="Kubelet stopped posting node status.")]))


def test_a_node_that_cannot_be_checked_says_why_in_one_sentence():
    assert node_unfit(_node(), ()) is None
    assert node_unfit(_node(unschedulable=True), ()) == (
        "node n1 is cordoned (spec.unschedulable): no new pod may start there")
    assert node_unfit(_node(ready="Unknown"), ()) == (
        "node n1 is NotReady since 2026-11-29 19:40:00 UTC (NodeStatusUnknown: Kubelet stopped posting node status.)")
    tainted = _node(taints=[("sandbox.gke.io/runtime", "gvisor", "NoSchedule")])
    assert node_unfit(tainted, ()) == ("node n1 has the taint sandbox.gke.io/runtime=gvisor:NoSchedule, which the "
                                       "pods do not tolerate (--tolerate sandbox.gke.io/runtime checks it too)")
    assert node_unfit(tainted, ("sandbox.gke.io/runtime",)) is None and node_unfit(tainted, ("*",)) is None
    assert node_unfit(_node(taints=[("k", "", "PreferNoSchedule")]), ()) is None  # a preference keeps no pod out


def test_known_divergences_name_a_node_pool_and_hold_only_there():
    listed = KnownDivergences([
        {"claim": "s.py::t[*]", "node_selector": "podshare.io/pool=sandboxed", "reason": "gVisor pool"},
        {"claim": "s.py::u", "runtime_class": "gvisor", "reason": "gVisor class"},
        {"claim": "s.py::v", "runtime_class": "runc", "node_selector": "podshare.io/pool", "reason": "both"}])
    sandboxed, other = {"podshare.io/pool": "sandboxed"}, {"podshare.io/pool": "default"}
    assert listed.match("s.py::t[disk]", None, sandboxed) == "gVisor pool"
    assert listed.match("s.py::t[disk]", "runc", sandboxed) == "gVisor pool"
    assert listed.match("s.py::t[disk]", None, other) is None  # any other node's divergence still fails the run
    assert listed.match("s.py::t[disk]", None, None) is None  # a run without the node dimension
    assert listed.match("s.py::u", "gvisor", other) == "gVisor class"
    assert listed.match("s.py::v", "runc", other) == "both" and listed.match("s.py::v", "crun", other) is None
    either = KnownDivergences([{"claim": "s.py::w", "reason": "gVisor", "where": [
        {"runtime_class": "gvisor"}, {"node_selector": "podshare.io/pool=sandboxed", "runtime_class": "default"}]}])
    assert either.match("s.py::w", "gvisor", other) == "gVisor"  # the class, on any node
    assert either.match("s.py::w", None, sandboxed) == "gVisor"  # the pool's own runtime
    assert either.match("s.py::w", "runc", sandboxed) is None  # runc on that pool keeps its promises


def _checks():
    def check(node, claim_id, outcome, cause=""):
        return Check(id=f"{claim_id}[{node}]", claim=f"claim {claim_id}", outcome=outcome, duration_s=1,
                     claim_id=claim_id, node=node, per_node=True, cause=cause)
    return [check("node-a", "s.py::t", "passed"), check("node-b", "s.py::t", "known-divergence"),
            check("node-c", "s.py::t", "could-not-check", "node node-c is cordoned"),
            check("node-a", "s.py::u", "passed"), check("node-b", "s.py::u", "passed"),
            check("node-c", "s.py::u", "could-not-check", "node node-c is cordoned")]


def test_the_node_matrix_has_a_column_per_node_and_rows_named_by_the_claim():
    matrix = claim_matrix(_checks())
    assert matrix.title == "Claim x node" and matrix.columns == ["node-a", "node-b", "node-c"]
    assert matrix.sentence("s.py::t") == "claim s.py::t"
    report = RunReport(run=RunInfo(id="r"), cluster={"nodes": {"node-b": {"pool": "sandboxed", "taints": [],
                                                                      "ready": "True"}}}, checks=_checks())
    text = render_markdown(report.findings())
    assert "| claim s.py::t (`t`) | ✅ passed | 🔶 known-divergence | 🌀 could-not-check |" in text
    assert "| node-b | sandboxed |" in text


def test_the_summary_names_the_nodes_that_keep_every_promise_first():
    report = RunReport(run=RunInfo(id="r"), cluster={}, checks=_checks())
    assert report.findings().node_summary == [
        "3 nodes checked: node-a keeps all 2 promises",
        "node-b breaks 1: claim s.py::t",
        "node-c could not be checked (2 claims): node node-c is cordoned"]


def test_claim_ids_lose_the_node_and_class_also_when_node_names_have_dashes():
    from podshare.dimensions import claim_id as _claim_id
    item = NS(nodeid="suites/test_v.py::test_x[disk-vm-sandboxed-gvisor]", path=NS(name="test_v.py", parent=NS(
        name="suites")), callspec=NS(params={"node": "vm-sandboxed", "runtime_class": "gvisor"}))
    assert _claim_id(item) == "suites/test_v.py::test_x[disk]"
    item.nodeid, item.callspec.params = "suites/test_v.py::test_y[vm-sandboxed]", {"node": "vm-sandboxed"}
    assert _claim_id(item) == "suites/test_v.py::test_y"
    item.nodeid = "suites/test_v.py::test_z[vm-sandboxed-gvisor-unix-volume]"  # session parameters first
    item.callspec.params = {"node": "vm-sandboxed", "runtime_class": "gvisor"}
    assert _claim_id(item) == "suites/test_v.py::test_z[unix-volume]"


def test_a_worker_takes_one_node_and_class_whole():
    """The side-by-side groups come from the test id: node names that prefix
    others (vm, vm-current) are told apart; a claim's own parameters are not a group."""
    from podshare.dimensions import group_of as dimension_group
    values = sorted(["vm", "vm-current", "vm-sandboxed", "runc", "gvisor"], key=len, reverse=True)
    assert dimension_group("s.py::t[disk-vm-current]", values) == "vm-current"
    assert dimension_group("s.py::t[disk-vm]", values) == "vm"
    assert dimension_group("s.py::t[vm-sandboxed-gvisor-unix-volume]", values) == "gvisor|vm-sandboxed"
    assert dimension_group("s.py::u[vm-runc]", values) == "runc|vm"
    assert dimension_group("s.py::u", values) == "default"


# ------------------------------------------------------------------ on the local cluster

needs_nodes = pytest.mark.skipif(int(os.environ.get("PODSHARE_NODES", "1")) < 3,
                                 reason="needs the local cluster with its three pools (PODSHARE_NODES=3)")
KNOWN = "cluster/gvisor-known-divergences.yaml"
KNOWN_STORAGE = "cluster/storage-known-divergences.yaml"  # local-path's, the class of the nodes step
TOLERATE = ("--tolerate", "sandbox.gke.io/runtime")


@pytest.fixture(scope="module")
def every_node(tmp_path_factory) -> dict:
    """A run of every claim on every node (make test's, handed over in
    PODSHARE_NODES_RESULTS; run alone, this runs it)."""
    given = os.environ.get("PODSHARE_NODES_RESULTS")
    if given:
        return json.loads(open(given).read())
    reports = tmp_path_factory.mktemp("nodes")
    run_suites("--all-nodes", *TOLERATE, "--storage-class", "local-path", "--known-divergences", KNOWN,
               "--known-divergences", KNOWN_STORAGE, "--reports-dir", str(reports), timeout=1800)
    return json.loads((reports / "results.json").read_text())


@needs_nodes
@pytest.mark.usefixtures("kube")
def test_every_node_is_checked_and_only_the_sandboxed_pool_diverges(every_node):
    """Every claim ran once on each of the three pools; the default and current
    pools keep every promise; the sandboxed pool (gVisor the default runtime, a pod
    without runtimeClassName) breaks exactly what the known-divergences file lists
    for it, no more, no less, and the matrix and summary say so."""
    nodes = every_node["cluster"]["nodes"]
    pools = {facts["pool"]: name for name, facts in nodes.items()}
    assert set(pools) == {"default", "sandboxed", "current"}, pools
    by_node: dict[str, dict[str, str]] = {}
    for c in every_node["checks"]:
        if not not_applicable(c):  # two nodes sharing one local-path claim: the class makes no ReadWriteMany
            by_node.setdefault(c["node"], {})[c["claim_id"]] = c["outcome"]
    assert set(by_node) == set(nodes)
    # each claim on every node, but where the node lacks a feature the claim needs (one line says so)
    lacking = [na for na in every_node["cluster"].get("not_applicable", []) if na.get("feature")]
    everywhere = set().union(*by_node.values())
    for node, seen in by_node.items():
        missed = {claim.split("::")[0] for claim in everywhere - set(seen)}
        features = {na["feature"] for na in lacking if na["node"] == node}
        assert all(any(f'needs("{f}")' in (PROJECT / module).read_text() for f in features) for module in missed), \
            (node, "missed", missed, "lacking", features)
    assert len(by_node[pools["default"]]) >= 41
    # local-path's own divergence (its claims' capacity), on every node alike, listed by its StorageClass
    volume_of = {c["claim_id"]: c["volume"] for c in every_node["checks"]}
    storage = KnownDivergences.load(KNOWN_STORAGE)
    of_the_class = {k for k in everywhere if storage.match(k, None, None, volume=volume_of.get(k))}
    for pool in ("default", "current"):
        broken = {k: o for k, o in by_node[pools[pool]].items() if o != "passed"}  # a skip is not a pass: the local cluster has IPv6
        assert {k: o for k, o in broken.items() if k not in of_the_class or o != "known-divergence"} == {}, \
            (pool, broken)
        assert set(broken) == of_the_class, (pool, "the class's entries hold", of_the_class - set(broken))
    known = KnownDivergences.load([KNOWN, KNOWN_STORAGE])
    sandboxed = by_node[pools["sandboxed"]]
    listed = {k for k in sandboxed if known.match(k, None, nodes[pools["sandboxed"]]["all_labels"],
                                                     volume=volume_of.get(k))}
    diverged = {k for k, o in sandboxed.items() if o != "passed"}
    # an entry marked intermittent (a race the runtime loses only sometimes) may hold
    held = {k for k in listed - diverged
            if known.entry(k, None, nodes[pools["sandboxed"]]["all_labels"], volume=volume_of.get(k)).get(
                "intermittent")}
    assert diverged == listed - held, {"diverge, not listed": sorted(diverged - listed),
                                       "listed, hold": sorted(listed - held - diverged)}
    assert all(sandboxed[k] == "known-divergence" for k in diverged)
    summary = RunReport.from_json(every_node).findings().node_summary
    runc_nodes = (pools["default"], pools["current"])
    if of_the_class:  # local-path's capacity, broken alike on the runc nodes: each says it, as its class's
        assert summary[0] == "3 nodes checked", summary
        for n in runc_nodes:
            assert any(line.startswith(f"{n} breaks {len(of_the_class)}: ") for line in summary), (n, summary)
    else:
        assert summary[0].startswith("3 nodes checked: ") and all(n in summary[0] for n in runc_nodes), summary
    assert any(line.startswith(f"{pools['sandboxed']} breaks {len(diverged)}") for line in summary), summary
    said = [f"not applicable: {na['why']}" for na in lacking]
    applicable = [line for line in summary if line.startswith("not applicable: ")]
    assert applicable[:len(said)] == said, summary
    # the two-node across-pod claims on local-path, which makes no ReadWriteMany volume: one line per refusal
    assert all(line.startswith("not applicable: StorageClass local-path does not provision") and "ReadWriteOnce" in line
               for line in applicable[len(said):]), summary
    assert nodes[pools["current"]]["container_runtime"].startswith("containerd://2.")  # another stack, seen
    assert every_node["run"]["workers"] == 3  # the nodes were checked side by side


def _set_cordoned(kube, node: str, cordoned: bool) -> None:
    kube.core.patch_node(node, {"spec": {"unschedulable": cordoned}})


@needs_nodes
def test_a_cordoned_node_and_an_untolerated_taint_each_get_one_line(kube, tmp_path):
    """Without --tolerate the sandboxed pool's taint keeps the pods out; a cordoned
    node takes no pod: each node's claims end as could-not-check with one sentence
    naming why, the other node's pass, and the run says it did not check everything."""
    from .test_disruptions import cluster_lock
    nodes = {n.metadata.labels.get("podshare.io/pool"): n.metadata.name for n in kube.nodes()}
    with cluster_lock(exclusive=True):  # a cordoned node would turn away everyone else's pods too
        _set_cordoned(kube, nodes["current"], True)
        try:
            run = run_suites("--all-nodes", "-k", "test_hostname_is_the_pod_name_in_every_container",
                             "--reports-dir", str(tmp_path), timeout=600)
        finally:
            _set_cordoned(kube, nodes["current"], False)
    results = json.loads((tmp_path / "results.json").read_text())
    by_node = {c["node"]: c for c in results["checks"]}
    assert by_node[nodes["default"]]["outcome"] == "passed", by_node[nodes["default"]]
    assert by_node[nodes["sandboxed"]]["outcome"] == "could-not-check"
    assert by_node[nodes["sandboxed"]]["cause"] == (
        f"node {nodes['sandboxed']} has the taint sandbox.gke.io/runtime=gvisor:NoSchedule, which the pods do not "
        "tolerate (--tolerate sandbox.gke.io/runtime checks it too)")
    assert by_node[nodes["current"]]["outcome"] == "could-not-check"
    assert by_node[nodes["current"]]["cause"] == (
        f"node {nodes['current']} is cordoned (spec.unschedulable): no new pod may start there")
    assert run.returncode == 2, run.stdout[-2000:]
    for node in (nodes["sandboxed"], nodes["current"]):
        assert f"could not check 1 claim: node {node} " in run.stdout


@needs_nodes
def test_a_node_whose_kubelet_dies_mid_run_is_not_checked_and_the_others_are(kube, tmp_path):
    """A worker's kubelet killed while every node's claims run: that node's
    remaining claims end as could-not-check naming it, within bounded time; the
    other nodes' claims pass; the run is non-zero and its reports complete."""
    from cluster.processes import recorded_pid

    from .test_disruptions import SuiteRun, cluster_lock, restart_component
    victim = next(n.metadata.name for n in kube.nodes() if n.metadata.labels.get("podshare.io/pool") == "current")
    with cluster_lock(exclusive=True):
        # the two pools that keep every promise, so every other claim must pass
        run = SuiteRun(tmp_path, "--node-selector", "podshare.io/pool!=sandboxed",
                       "-m", "network or perf or ipc or posix or volume")
        try:
            run.wait_passed(3, timeout=300)
            os.kill(recorded_pid(f"kubelet-{victim}"), signal.SIGKILL)
            killed = time.monotonic()
            results = run.finish(timeout=400)
        finally:
            restart = restart_component(f"kubelet-{victim}", timeout=300)
            run.stop()
        assert restart.returncode == 0, restart.stderr
    took = run.ended_at - killed
    on = {}
    for c in results["checks"]:
        on.setdefault(c["node"], []).append(c)
    assert {c["outcome"] for c in on[victim]} <= {"passed", "could-not-check"}, [
        (c["id"], c["outcome"], c["message"]) for c in on[victim] if c["outcome"] not in ("passed", "could-not-check")]
    unchecked = [c for c in on[victim] if c["outcome"] == "could-not-check"]
    assert unchecked and all(victim in c["cause"] for c in unchecked), [c["cause"] for c in unchecked]
    for node, checks in on.items():
        if node != victim:
            assert {c["outcome"] for c in checks} == {"passed"}, (node, {c["id"]: c["outcome"] for c in checks
                                                                        if c["outcome"] != "passed"})
    assert run.proc.returncode == unchecked_exit(results)
    print(f"kubelet of {victim} killed: {len(unchecked)} of its claims could not be checked; the run ended "
          f"{took:.1f}s after the kill; cause: {unchecked[0]['cause']}")
    assert took < POD_TIMEOUT, f"the run ended {took:.0f}s after the kill (its pod timeout waited out?)"


def _facts(pool: str, **overrides) -> dict:
    return {"pool": pool, "labels": {"podshare.io/pool": pool}, "taints": [], "kubelet": "v1.35.4",
            "container_runtime": "containerd://1.6.20", "kernel": "6.18", "os_image": "Debian 12",
            "architecture": "amd64", "ready": "True", "unschedulable": False, **overrides}


def test_one_node_stands_for_each_configuration():
    """--one-per-pool: nodes alike in pool labels, taints, versions, kernel, OS and
    architecture are one configuration, checked on one node that takes pods; a node
    differing in any one of them is a configuration of its own."""
    from podshare.node_facts import one_per_configuration
    from podshare.records import NodeFacts
    facts = {"a-1": _facts("a", unschedulable=True), "a-2": _facts("a"), "a-3": _facts("a"),
             "a-new-kernel": _facts("a", kernel="6.19"), "b-1": _facts("b"),
             "b-tainted": _facts("b", taints=["k=v:NoSchedule"]), "c-down": _facts("c", ready="Unknown")}
    assert one_per_configuration({n: NodeFacts.from_json(f) for n, f in facts.items()}) == {"a-2": ["a-1", "a-3"], "a-new-kernel": [], "b-1": [],
                                            "b-tainted": [], "c-down": []}


def test_the_nodes_table_and_summary_name_what_a_checked_node_stands_for():
    checks = [Check(id=f"s.py::t[{n}]", claim="T.", outcome="passed", duration_s=0, node=n, per_node=True,
                    claim_id="s.py::t") for n in ("a-2", "b-1")]
    cluster = {"nodes": {"a-1": {**_facts("a"), "represented_by": "a-2"}, "a-2": {**_facts("a"), "stands_for": ["a-1"]},
                         "b-1": _facts("b")}}
    report = RunReport(run=RunInfo(id="r", duration_s=1.0), cluster=cluster, checks=checks)
    assert report.findings().node_summary == [
        "2 nodes checked: a-2 and b-1 keep the 1 promise",
        "1 more node not checked, of the same configuration as a checked node (--one-per-pool): a-2 stands for a-1"]
    assert "| a-1 | a | v1.35.4 | containerd://1.6.20 | Debian 12, 6.18 | none | not checked: a-2 stands for it |" \
        in render_markdown(report.findings())


@needs_nodes
def test_the_local_nodes_are_three_configurations_and_a_twin_would_be_one(kube):
    """On the local cluster's real node objects: its three pools are three
    configurations, so --one-per-pool checks every node; a node just like the first
    (a copy of its status under another name) would be represented by it."""
    from dataclasses import replace
    from podshare.node_facts import node_facts, one_per_configuration
    facts = {n.metadata.name: node_facts(n) for n in kube.nodes()}
    assert sorted(one_per_configuration(facts)) == sorted(facts) and len(facts) == 3
    first = min(facts, key=lambda n: (facts[n].pool != "default", n))
    twin = {**facts, f"{first}-twin": replace(facts[first])}
    assert one_per_configuration(twin)[first] == [f"{first}-twin"]


PINNED = "podshare-test-pinned"  # a RuntimeClass that runs only on the current pool
# GKE Sandbox's RuntimeClass, as the managed service creates it: gVisor, only on the
# sandboxed pool, whose taint it tolerates
SANDBOX = "podshare-test-sandbox"


@pytest.fixture
def pinned_runtime_classes(kube):
    from kubernetes import client
    api = client.NodeV1Api(kube.core.api_client)
    bodies = [{"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": PINNED}, "handler": "runc",
               "scheduling": {"nodeSelector": {"podshare.io/pool": "current"}}},
              {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": SANDBOX}, "handler": "gvisor",
               "scheduling": {"nodeSelector": {"sandbox.gke.io/runtime": "gvisor"}, "tolerations": [
                   {"key": "sandbox.gke.io/runtime", "operator": "Equal", "value": "gvisor", "effect": "NoSchedule"}]}}]
    for body in bodies:
        try:
            api.delete_runtime_class(body["metadata"]["name"])
        except client.ApiException:
            pass
        api.create_runtime_class(body)
    yield PINNED, SANDBOX
    for body in bodies:
        api.delete_runtime_class(body["metadata"]["name"])


@needs_nodes
def test_runtime_classes_pinned_to_a_pool_run_there_and_are_not_applicable_elsewhere(
        kube, pinned_runtime_classes, tmp_path):
    """RuntimeClasses whose scheduling.nodeSelector admits one pool (one of them
    GKE Sandbox's, which also tolerates its pool's taint): each class's claims run
    on its pool's node and pass, the sandboxed node checked without --tolerate as
    the class tolerates it; on the other nodes they are not run, and the reports
    say "not applicable" with the class's selector, not a failure and not silence.
    With --one-per-pool on three distinct nodes, every node is checked. The run
    states what it asked of the API server, per node."""
    nodes = {n.metadata.labels.get("podshare.io/pool"): n.metadata.name for n in kube.nodes()}
    run = run_suites("--all-nodes", "--one-per-pool", "--runtime-class", PINNED, "--runtime-class", SANDBOX,
                     "-k", "test_hostname_is_the_pod_name_in_every_container", "--reports-dir", str(tmp_path),
                     timeout=600)
    assert run.returncode == 0, run.stdout[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert sorted((c["node"], c["runtime_class"], c["outcome"]) for c in results["checks"]) == [
        (nodes["current"], PINNED, "passed"), (nodes["sandboxed"], SANDBOX, "passed")]
    why = {(na["node"], na["runtime_class"]): na["why"] for na in results["cluster"]["not_applicable"]}
    assert why == {
        **{(n, PINNED): f"RuntimeClass {PINNED} runs only on nodes labelled podshare.io/pool=current (its "
                        f"scheduling.nodeSelector); node {n} is not" for n in (nodes["default"], nodes["sandboxed"])},
        **{(n, SANDBOX): f"RuntimeClass {SANDBOX} runs only on nodes labelled sandbox.gke.io/runtime=gvisor (its "
                         f"scheduling.nodeSelector); node {n} is not" for n in (nodes["default"], nodes["current"])}}
    summary = (tmp_path / "summary.md").read_text()
    assert f"- not applicable: {why[nodes['default'], PINNED]}" in summary
    row = next(line for line in summary.splitlines() if "`test_hostname_is_the_pod_name_in_every_container`" in line
               and "not applicable |" in line)
    assert row.count("not applicable") == 4 and row.count("passed") == 2, row
    cost = results["run"]["api_cost"]
    assert cost["nodes"] == 2 and cost["pods_created"] >= 4 and cost["execs"] >= 4 and cost["api_calls"] > 20, cost
