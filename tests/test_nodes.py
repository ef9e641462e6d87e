"""Every node: the node as a dimension of a run (--all-nodes, --node-selector),
nodes that cannot be checked reported with their reason, known divergences of
a node pool, and the node x claim matrix. The harness's logic here; the runs on
the local cluster's nodes below it."""
from __future__ import annotations

import datetime as dt
import json
import os
from types import SimpleNamespace as NS

import pytest

from podshare.cluster import node_unfit
from podshare.report import Check, KnownDivergences, RunReport, claim_matrix, node_summary, render_markdown

from .conftest import run_suites


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
    report = RunReport(run={"id": "r"}, cluster={"nodes": {"node-b": {"pool": "sandboxed", "taints": [],
                                                                      "ready": "True"}}}, checks=_checks())
    text = render_markdown(report)
    assert "| claim s.py::t (`t`) | ✅ passed | 🔶 known-divergence | 🌀 could-not-check |" in text
    assert "| node-b | sandboxed |" in text


def test_the_summary_names_the_nodes_that_keep_every_promise_first():
    report = RunReport(run={"id": "r"}, cluster={}, checks=_checks())
    assert node_summary(report) == [
        "3 nodes checked: node-a keeps all 2 promises",
        "node-b breaks 1: claim s.py::t",
        "node-c could not be checked (2 claims): node node-c is cordoned"]


def test_claim_ids_lose_the_node_and_class_also_when_node_names_have_dashes():
    from podshare.plugin import _claim_id
    item = NS(nodeid="suites/test_v.py::test_x[disk-vm-sandboxed-gvisor]", path=NS(name="test_v.py", parent=NS(
        name="suites")), callspec=NS(params={"node": "vm-sandboxed", "runtime_class": "gvisor"}))
    assert _claim_id(item) == "suites/test_v.py::test_x[disk]"
    item.nodeid, item.callspec.params = "suites/test_v.py::test_y[vm-sandboxed]", {"node": "vm-sandboxed"}
    assert _claim_id(item) == "suites/test_v.py::test_y"
    item.nodeid = "suites/test_v.py::test_z[vm-sandboxed-gvisor-unix-volume]"  # session parameters first
    item.callspec.params = {"node": "vm-sandboxed", "runtime_class": "gvisor"}
    assert _claim_id(item) == "suites/test_v.py::test_z[unix-volume]"


# ------------------------------------------------------------------ on the local cluster

needs_nodes = pytest.mark.skipif(int(os.environ.get("PODSHARE_NODES", "1")) < 3,
                                 reason="needs the local cluster with its three pools (PODSHARE_NODES=3)")
