"""Benchmark: where a conformance run's time goes, against the current cluster.
Not collected by pytest (no test_ prefix).

    python tests/benchmark.py [--execs 30] [--pods 3]

Measures the exec round trip of a probe verb (API exec subresource + python
start in the container), the create-to-ready time of a probe pod, and the
delete-to-gone time; writes reports/benchmark.json. Uses the same settings
(environment variables) as the suites."""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

from podshare import MANAGED_BY, RUN_ID_LABEL
from podshare.kube import Kube
from podshare.pods import Pod, load_manifest, render

PROJECT = Path(__file__).resolve().parent.parent


class EnvSettings:
    """The suites' settings from their environment variables (no pytest here)."""

    def __init__(self) -> None:
        import os
        from podshare.images import DEFAULTS
        self.probe_image = os.environ.get("PODSHARE_PROBE_IMAGE", DEFAULTS["probe"])
        self.nginx_image = os.environ.get("PODSHARE_NGINX_IMAGE", DEFAULTS["nginx"])
        self.image_pull_policy = os.environ.get("PODSHARE_IMAGE_PULL_POLICY", "IfNotPresent")
        self.image_pull_secret = os.environ.get("PODSHARE_IMAGE_PULL_SECRET")


def summary(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {"n": len(ordered), "median_ms": round(statistics.median(ordered) * 1000, 1),
            "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))] * 1000, 1),
            "max_ms": round(ordered[-1] * 1000, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--execs", type=int, default=30)
    p.add_argument("--pods", type=int, default=3)
    p.add_argument("--out", default=str(PROJECT / "reports" / "benchmark.json"))
    args = p.parse_args()
    kube, settings = Kube(), EnvSettings()
    run_id = "bench-" + uuid.uuid4().hex[:8]
    namespace = f"podshare-{run_id}"
    restricted = {f"pod-security.kubernetes.io/{m}": "restricted" for m in ("enforce", "warn", "audit")}
    kube.create_namespace(namespace, {**MANAGED_BY, RUN_ID_LABEL: run_id, **restricted})
    results: dict = {"server_version": kube.server_version()}
    try:
        starts, deletes = [], []
        template = load_manifest("probe-pod.yaml")
        for i in range(args.pods):
            body = render(template, name=f"bench-{i}", settings=settings, run_id=run_id)
            pod = Pod(kube, namespace, body, 120)
            t = time.monotonic()
            pod.create().wait_ready()
            starts.append(time.monotonic() - t)
            if i < args.pods - 1:
                t = time.monotonic()
                pod.delete()
                deletes.append(time.monotonic() - t)
        alpha = pod.container("alpha")
        execs = []
        for _ in range(args.execs):
            t = time.monotonic()
            alpha.run("identity")
            execs.append(time.monotonic() - t)
        results.update(pod_create_to_ready=summary(starts), pod_delete_to_gone=summary(deletes),
                       exec_round_trip=summary(execs))
    finally:
        t = time.monotonic()
        kube.delete_namespace(namespace, timeout=120)
        results["namespace_delete_s"] = round(time.monotonic() - t, 2)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
