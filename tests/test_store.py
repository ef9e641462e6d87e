"""The nightly's store: one ConfigMap per run, under the API's 1 MiB limit at
the size of the largest run CI makes (every claim on every node) and, stepwise
trimmed, at six times that; the limit itself is the API server's, seen refused."""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import pytest

from podshare import MANAGED_BY, store
from podshare.errors import KubeError
from podshare.history import History

from .conftest import run_suites


@pytest.fixture(scope="module")
def largest_run(tmp_path_factory) -> Path:
    """The reports of CI's every-node run (make test hands them over), or a run of
    every claim on every node made here."""
    given = os.environ.get("PODSHARE_NODES_RESULTS")
    if given:
        return Path(given).parent
    reports = tmp_path_factory.mktemp("every-node")
    run_suites("--all-nodes", "--tolerate", "*", "--reports-dir", str(reports), timeout=1800)
    return reports


@pytest.fixture
def store_namespace(kube):
    name = f"podshare-store-{uuid.uuid4().hex[:6]}"
    kube.create_namespace(name, {**MANAGED_BY, "podshare.io/run-id": name})
    yield name
    kube.delete_namespace(name, timeout=60)


def _outcomes(results: dict) -> dict[str, str]:
    return {c["id"]: c["outcome"] for c in results["checks"]}


def _stored_and_fetched(kube, namespace: str, reports: Path, tmp_path: Path) -> tuple[dict, str]:
    run_id = json.loads((reports / "results.json").read_text())["run"]["id"]
    name = store.save(kube, namespace, reports, run_id)
    step = kube.core.read_namespaced_config_map(name, namespace).metadata.annotations["podshare.io/stored"]
    assert store.fetch(kube, namespace, tmp_path / "fetched") == [run_id]
    (fetched,) = (tmp_path / "fetched").glob("*.json")
    return json.loads(fetched.read_text()), step


def test_the_largest_ci_run_is_stored_whole(kube, largest_run, store_namespace, tmp_path):
    """Every claim on every node, with every transcript: one ConfigMap, nothing left out."""
    results = json.loads((largest_run / "results.json").read_text())
    assert len({c["node"] for c in results["checks"]}) >= 3
    binary, data, step = store.pack(largest_run)
    size = sum(map(len, binary.values())) + sum(len(v.encode()) for v in data.values())
    print(f"largest CI run: {len(results['checks'])} checks stored in {size} bytes ({size / store.LIMIT:.0%} "
          "of a ConfigMap)")
    fetched, step = _stored_and_fetched(kube, store_namespace, largest_run, tmp_path)
    assert step == "everything"
    assert fetched == results  # the same run, transcripts and all


@pytest.mark.parametrize("times", [6, 12])
def test_a_run_many_times_larger_is_stored_leaving_evidence_out_never_outcomes(kube, largest_run, store_namespace,
                                                                               tmp_path, times):
    """Three RuntimeClasses and user namespaces on and off on every node: six times
    the checks; twelve for a cluster of six pools. Where they do not fit whole they
    fit by leaving evidence out, never outcomes: every check's outcome and message
    come back, those that did not pass with their evidence."""
    results = json.loads((largest_run / "results.json").read_text())
    grown = [{**c, "id": f"{c['id']}-{n}"} for n in range(times) for c in results["checks"]]
    grown[0] = {**grown[0], "outcome": "failed", "message": "a failure keeps its evidence"}
    reports = tmp_path / "grown"
    shutil.copytree(largest_run, reports)
    (reports / "results.json").write_text(json.dumps({**results, "checks": grown}))
    assert (reports / "results.json").stat().st_size > store.LIMIT
    fetched, step = _stored_and_fetched(kube, store_namespace, reports, tmp_path)
    print(f"{times} x the largest CI run ({len(grown)} checks): stored with {step}")
    assert step != "everything" or times == 6, step
    assert _outcomes(fetched) == _outcomes({"checks": grown})
    assert [c["message"] for c in fetched["checks"]] == [c["message"] for c in grown]
    assert fetched["checks"][0]["evidence"] == grown[0]["evidence"]
    if step != "everything":
        assert fetched["run"]["stored"].startswith(step)
    assert History.load(tmp_path / "fetched").changes() == {}  # the history reads it like any run


def test_the_api_refuses_a_configmap_over_its_limit(kube, store_namespace):
    """The limit the store keeps under is the API server's own."""
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "too-large"},
            "data": {"a": "x" * (store.LIMIT + 1)}}
    with pytest.raises(KubeError) as refused:
        kube.create(store_namespace, body)
    assert refused.value.status == 422 and "may not be more than 1048576 bytes" in str(refused.value)


FORGED_RUNS = {  # run.id, run.started_at: what a forged report says, to make fetch write elsewhere
    "absolute": ("/tmp/podshare-forged-absolute", "2026-11-29T00:00:00+00:00"),
    "parent": ("../../../escaped", "2026-11-29T00:00:00+00:00"),
    "start-parent": ("forged-start", "../../../../tmp/podshare-forged-start"),
    "odd": ("run\nid;$(reboot)", "2026-11-29T00:00:00+00:00"),
    "no-zone": ("forged-zone", "2026-11-29T00:00:00"),
    "not-a-string": (["a"], 5),
}


def test_fetch_writes_nothing_outside_its_directory_whatever_a_forged_report_says(kube, store_namespace, tmp_path):
    """The runner's token can create ConfigMaps: reports whose run id or start would
    name a path elsewhere (absolute, '..', odd characters) are skipped and named;
    an honest one beside them is fetched; nothing is written but in the directory."""
    def stored(name: str, run: dict) -> None:
        results = json.dumps({"run": run, "checks": []}).encode()
        kube.create(store_namespace, {"apiVersion": "v1", "kind": "ConfigMap",
                                      "metadata": {"name": f"podshare-run-{name}", "labels": {store.LABEL: "run"}},
                                      "binaryData": {"results.json.gz": store._gz(results)}})
    for name, (run_id, started) in FORGED_RUNS.items():
        stored(name, {"id": run_id, "started_at": started})
    stored("honest", {"id": "20261129-000000-abcdef", "started_at": "2026-11-29T00:00:00+00:00"})
    target = tmp_path / "deep" / "down" / "fetched"
    skipped: list[str] = []
    assert store.fetch(kube, store_namespace, target, skipped) == ["20261129-000000-abcdef"]
    assert [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()] == [
        "deep/down/fetched/2026-11-29T000000Z-20261129-000000-abcdef.json"]
    assert not list(Path("/tmp").glob("podshare-forged-*"))
    assert sorted(line.split(":", 1)[0] for line in skipped) == sorted(
        f"configmap/podshare-run-{name}" for name in FORGED_RUNS)
