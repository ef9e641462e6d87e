"""The claim x runtime matrix on the bundled cluster's RuntimeClasses, per
stack: runc and crun keep every promise; youki (cluster/youki-known-divergences.yaml)
and gVisor, plain (its own shim, as a containerd install gives it) and hinted
(GKE Sandbox's emptyDir mount hints; cluster/gvisor-known-divergences.yaml),
each diverge exactly where its file says for that configuration, no more and no
less, so a runtime or harness change shows the day it happens.

`make test` runs each stack's matrix once (cluster/test-all.sh) and hands its
results here; run alone, this runs them itself."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from podshare.known_divergences import KnownDivergences, places

from .conftest import PROJECT, not_applicable, run_suites

KNOWN = [str(PROJECT / "cluster" / f"{runtime}-known-divergences.yaml") for runtime in ("gvisor", "youki", "storage")]
DIVERGING = ("gvisor", "gvisor-hinted", "youki")  # each where its known-divergences file says, no more, no less


# Each stack the local cluster has, with the RuntimeClasses its pool runs: the first node
# (containerd 1.6, kubelet 1.35: runc, crun and youki; gVisor's shim needs containerd 2), and on
# three nodes the current pool (containerd 2.4, runc 1.5, kubelet 1.37, gVisor plain) and the
# sandboxed pool (the same stack, gVisor with GKE's hints). make test hands over its runs
# (the env variable); run alone, this makes them.
STACKS = {"default": ("PODSHARE_MATRIX_RESULTS", ("runc", "crun", "youki")),
          "current": ("PODSHARE_MATRIX_CURRENT_RESULTS", ("runc", "crun", "youki", "gvisor")),
          "sandboxed": ("PODSHARE_MATRIX_HINTED_RESULTS", ("gvisor-hinted",))}


@pytest.fixture(scope="module", params=list(STACKS))
def stack(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def classes(stack) -> tuple[str, ...]:
    return STACKS[stack][1]


@pytest.fixture(scope="module")
def matrix(stack, classes, request, tmp_path_factory) -> dict:
    given = os.environ.get(STACKS[stack][0])
    if given:
        return json.loads(Path(given).read_text())
    if stack != "default" and int(os.environ.get("PODSHARE_NODES", "1")) < 3:
        pytest.skip(f"the {stack} pool is on the three-node local cluster (PODSHARE_NODES=3)")
    node = request.getfixturevalue("kube").nodes(f"podshare.io/pool={stack}")
    reports = tmp_path_factory.mktemp("matrix")
    run_suites(*[f"--runtime-class={c}" for c in classes], *(a for k in KNOWN for a in ("--known-divergences", k)),
               *(["--node", node[0].metadata.name] if node else []), "--tolerate", "sandbox.gke.io/runtime",
               *(["--storage-class", "local-path"] if stack == "sandboxed" else []),  # as make test's matrix-hinted
               "--reports-dir", str(reports), timeout=3000)
    return json.loads((reports / "results.json").read_text())


def outcomes(matrix: dict, runtime_class: str) -> dict[str, str]:
    return {c["claim_id"]: c["outcome"] for c in matrix["checks"]
            if c["runtime_class"] == runtime_class and not not_applicable(c)}


@pytest.mark.usefixtures("kube")
def test_every_claim_ran_once_on_every_class(matrix, classes):
    """No claim escapes the matrix: a fixture that stops depending on the
    RuntimeClass (and so on its pods) would run its claims once, on the
    cluster's default runtime, under no class."""
    stray = [c["id"] for c in matrix["checks"] if c["runtime_class"] not in classes]
    assert not stray, f"checks that ran under no RuntimeClass: {stray}"
    claims = {runtime_class: set(outcomes(matrix, runtime_class)) for runtime_class in classes}
    assert all(claims[c] == claims[classes[0]] for c in classes), claims
    # each class side by side on a worker of its own; the header names each with its handler
    assert matrix["cluster"]["runtime_class"] == ", ".join(f"{c} (handler {c})" for c in sorted(classes))


@pytest.mark.usefixtures("kube")
def test_every_claim_holds_on_runc_and_crun(matrix, classes):
    for runtime_class in set(classes) - set(DIVERGING):
        seen = outcomes(matrix, runtime_class)
        assert len(seen) >= 41, f"only {len(seen)} claims ran on {runtime_class}"
        broken = {claim: o for claim, o in seen.items() if o != "passed"}  # a skip is not a pass
        assert not broken, (runtime_class, broken)


@pytest.mark.usefixtures("kube")
def test_gvisor_and_youki_diverge_exactly_where_the_known_divergences_files_say(matrix, classes):
    """For each gVisor configuration the stack runs (plain, hinted) and youki: the
    claims that did not pass are exactly those its entries list, each a known
    divergence with its evidence, and every entry for that class names a claim that ran."""
    known = KnownDivergences.load(KNOWN)
    lacking = {na["feature"] for na in matrix["cluster"].get("not_applicable", []) if na.get("feature")}
    for runtime_class in set(classes) & set(DIVERGING):
        seen = outcomes(matrix, runtime_class)
        assert len(seen) >= 41, f"only {len(seen)} claims ran on {runtime_class}"
        volume = {c["claim_id"]: c["volume"] for c in matrix["checks"] if c["runtime_class"] == runtime_class}

        def entry(claim: str):  # a PVC's claims match the entries of its StorageClass too
            return known.entry(claim, runtime_class, None, None, volume[claim])

        listed = {claim for claim in seen if entry(claim)}
        diverged = {claim for claim, o in seen.items() if o != "passed"}
        # an entry marked intermittent (a race the runtime loses only sometimes) may hold
        held = {claim for claim in listed - diverged if entry(claim).get("intermittent")}
        assert diverged == listed - held, {runtime_class: {"diverge but are not listed": sorted(diverged - listed),
                                                           "listed but hold": sorted(listed - held - diverged)}}
        assert all(seen[claim] == "known-divergence" for claim in diverged), {c: seen[c] for c in diverged}
        for listed_entry in known.entries:  # every entry for this class names a claim, where the node has its feature
            if not any(p.get("runtime_class") == runtime_class for p in places(listed_entry)) or any(
                    f'needs("{f}")' in (PROJECT / listed_entry["claim"].split("::")[0]).read_text() for f in lacking):
                continue
            if "test_across_pods.py" in listed_entry["claim"] and not matrix["cluster"].get("storage_classes"):
                continue  # the across-pod claims need a PersistentVolumeClaim: a run without --storage-class has none
            assert any(entry(claim) is listed_entry for claim in seen), listed_entry
        for check in matrix["checks"]:
            if check["runtime_class"] == runtime_class and check["outcome"] == "known-divergence":
                assert "(seen: " in check["message"] and check["evidence"], check["id"]


@pytest.mark.usefixtures("kube")
def test_every_measurement_has_figures_on_every_class(matrix, classes):
    """The perf suite's figures reach results.json for each class, wherever the
    mechanism works there (a listed divergence has nothing to measure)."""
    perf = [c for c in matrix["checks"] if "perf" in c["markers"]]
    assert {c["runtime_class"] for c in perf} == set(classes), "the perf suite did not run on every class"
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
