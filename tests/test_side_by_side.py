"""Runs side by side: runs at once against the same cluster, in namespaces
apart or in one given namespace, do not collide and all pass (object names
carry the run's suffix)."""
from __future__ import annotations

import json
import subprocess
import uuid

import pytest

from .conftest import RESTRICTED, start_suites


def start(tmp_path, name: str, *args: str) -> tuple[subprocess.Popen, object]:
    """Every claim but the perf figures: two runs at once would each measure the
    other's load (and burn CI's two cores on it), not what the pod shares."""
    reports = tmp_path / name
    proc = start_suites("--reports-dir", str(reports), "-m", "not perf", *args)
    return proc, reports


def all_pass(runs) -> None:
    for proc, reports in runs:
        out, _ = proc.communicate(timeout=900)
        results = json.loads((reports / "results.json").read_text())
        assert proc.returncode == 0, out[-3000:]
        assert results["summary"]["failed"] == results["summary"]["error"] == 0
        assert results["run"]["leftovers"] == []


@pytest.fixture
def shared_namespace(kube, podshare_session):
    from podshare import MANAGED_BY, RUN_ID_LABEL
    name = f"podshare-shared-{uuid.uuid4().hex[:6]}"
    kube.create_namespace(name, {**MANAGED_BY, RUN_ID_LABEL: podshare_session.run_id, **RESTRICTED})
    yield name
    kube.delete_namespace(name, timeout=120)


def test_a_run_in_its_own_namespace_and_two_in_one_given_namespace_all_at_once(kube, tmp_path, shared_namespace):
    """Two pairs at once, in three runs: the run in a namespace of its own beside
    either of the others is two runs in namespaces apart (cluster-scoped names, node
    ports, the nodes' own resources), the two in the given namespace share every
    namespaced name (one run fewer than the two pairs one after the other)."""
    all_pass([start(tmp_path, "own"),
              start(tmp_path, "first", "--namespace", shared_namespace),
              start(tmp_path, "second", "--namespace", shared_namespace)])
    left = [p.metadata.name for p in kube.core.list_namespaced_pod(shared_namespace).items
            if not p.metadata.deletion_timestamp]
    assert left == []
