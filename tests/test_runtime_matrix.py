"""The claim x runtime matrix on the bundled cluster's four RuntimeClasses:
runc, crun and youki keep every promise; gVisor diverges exactly where
cluster/gvisor-known-divergences.yaml says, no more and no less, so a runtime
or harness change shows the day it happens.

`make test` runs the matrix once (cluster/test-all.sh) and hands its results
here (PODSHARE_MATRIX_RESULTS); run alone, this runs the matrix itself."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from podshare.known_divergences import KnownDivergences

from .conftest import PROJECT, run_suites

KNOWN = PROJECT / "cluster" / "gvisor-known-divergences.yaml"
CLASSES = ("runc", "crun", "youki", "gvisor")


# Each stack the local cluster has, with its RuntimeClasses: the first node (containerd
# 1.6, kubelet 1.35) and, on three nodes, the current pool (containerd 2.4, runc 1.5,
# kubelet 1.37). make test hands over its runs; run alone, this makes them.
STACKS = {"default": "PODSHARE_MATRIX_RESULTS", "current": "PODSHARE_MATRIX_CURRENT_RESULTS"}


@pytest.fixture(scope="module", params=list(STACKS))
def matrix(request, tmp_path_factory) -> dict:
    given = os.environ.get(STACKS[request.param])
    if given:
        return json.loads(Path(given).read_text())
    if request.param == "current" and int(os.environ.get("PODSHARE_NODES", "1")) < 3:
        pytest.skip("the current stack's pool is on the three-node local cluster (PODSHARE_NODES=3)")
    node = request.getfixturevalue("kube").nodes(f"podshare.io/pool={request.param}")
    reports = tmp_path_factory.mktemp("matrix")
    run_suites(*[f"--runtime-class={c}" for c in CLASSES], "--known-divergences", str(KNOWN),
               *(["--node", node[0].metadata.name] if node else []), "--reports-dir", str(reports), timeout=3000)
    return json.loads((reports / "results.json").read_text())


def outcomes(matrix: dict, runtime_class: str) -> dict[str, str]:
    return {c["claim_id"]: c["outcome"] for c in matrix["checks"] if c["runtime_class"] == runtime_class}


@pytest.mark.usefixtures("kube")
def test_every_claim_ran_once_on_every_class(matrix):
    """No claim escapes the matrix: a fixture that stops depending on the
    RuntimeClass (and so on its pods) would run its claims once, on the
    cluster's default runtime, under no class."""
    stray = [c["id"] for c in matrix["checks"] if c["runtime_class"] not in CLASSES]
    assert not stray, f"checks that ran under no RuntimeClass: {stray}"
    claims = {runtime_class: set(outcomes(matrix, runtime_class)) for runtime_class in CLASSES}
    assert claims["runc"] == claims["crun"] == claims["youki"] == claims["gvisor"], claims
    # each class side by side on a worker of its own; the header names all four with their handlers
    assert matrix["cluster"]["runtime_class"] == ("crun (handler crun), gvisor (handler gvisor), runc (handler runc), "
                                                  "youki (handler youki)")


@pytest.mark.usefixtures("kube")
@pytest.mark.parametrize("runtime_class", ["runc", "crun", "youki"])
def test_every_claim_holds_on(matrix, runtime_class):
    seen = outcomes(matrix, runtime_class)
    assert len(seen) >= 41, f"only {len(seen)} claims ran on {runtime_class}"
    broken = {claim: o for claim, o in seen.items() if o != "passed"}  # a skip is not a pass
    assert not broken, broken


@pytest.mark.usefixtures("kube")
def test_gvisor_diverges_exactly_where_the_known_divergences_file_says(matrix):
    seen = outcomes(matrix, "gvisor")
    known = KnownDivergences.load(str(KNOWN))
    assert len(seen) >= 41, f"only {len(seen)} claims ran on gvisor"
    listed = {claim for claim in seen if known.match(claim, "gvisor")}
    diverged = {claim for claim, o in seen.items() if o != "passed"}
    assert diverged == listed, {"diverge but are not listed": sorted(diverged - listed),
                                "listed but hold": sorted(listed - diverged)}
    assert all(seen[claim] == "known-divergence" for claim in listed), {c: seen[c] for c in listed}
    lacking = {na["feature"] for na in matrix["cluster"].get("not_applicable", []) if na.get("feature")}
    for entry in known.entries:  # every line of the file names at least one claim, where the node has its feature
        if any(f'needs("{f}")' in (PROJECT / entry["claim"].split("::")[0]).read_text() for f in lacking):
            continue
        assert any(known.match(claim, "gvisor") == entry["reason"] for claim in seen), entry
    for check in matrix["checks"]:
        if check["runtime_class"] == "gvisor" and check["outcome"] == "known-divergence":
            assert "(seen: " in check["message"] and check["evidence"], check["id"]


@pytest.mark.usefixtures("kube")
def test_every_measurement_has_figures_on_every_class(matrix):
    """The perf suite's figures reach results.json for each class, wherever the
    mechanism works there (a listed divergence has nothing to measure)."""
    perf = [c for c in matrix["checks"] if "perf" in c["markers"]]
    assert {c["runtime_class"] for c in perf} == set(CLASSES), "the perf suite did not run on every class"
    for check in perf:
        if check["outcome"] == "passed":
            assert check["figures"] and all(f["samples"] >= 8 for f in check["figures"].values()), check["id"]
        else:
            assert check["outcome"] == "known-divergence" and not check["figures"], (check["id"], check["outcome"])


@pytest.mark.usefixtures("kube")
def test_a_runtime_class_the_manifest_sets_is_read_back_into_every_report(tmp_path):
    """A --pod-manifest whose pod names its runtimeClassName itself: the class the
    pods ran under, read back from the API with its handler, is in each check and
    in the reports' header, not `runtime_class: null`."""
    from podshare.manifests import load_manifest
    manifest = load_manifest("probe-pod.yaml")
    manifest["spec"]["runtimeClassName"] = "crun"
    (tmp_path / "pod.yaml").write_text(json.dumps(manifest))
    run = run_suites("--pod-manifest", str(tmp_path / "pod.yaml"), "-m", "identity", "--reports-dir",
                     str(tmp_path / "r"), timeout=300)
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert run.returncode == 0, run.stdout[-2000:]
    assert results["checks"] and {c["runtime_class"] for c in results["checks"]} == {"crun"}
    assert results["cluster"]["runtime_class"] == "crun (handler crun)"
    assert "runtime class: crun (handler crun)" in (tmp_path / "r" / "summary.md").read_text()
