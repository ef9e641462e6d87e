"""Benchmark: what a conformance run costs against what it cannot avoid, on the
current cluster. Not collected by pytest (no test_ prefix).

    python tests/benchmark.py [--execs 50] [-- extra pytest args for the suite run]

In one go, on the same cluster:
- the floor: the pod lifecycle a run must pay for, done the way the run does
  it: the pods it needs created together and waited for together, one
  container restart, one delete-and-recreate, and the namespace deletion;
- the probe round trip: one probe verb over the container's probe channel
  (median, p95), and what opening that channel (one exec) costs;
- the full suites' wall time, with the time per phase (setup, call, teardown,
  from pytest's --durations);
- the fail-fast paths' own time (`clean_failure_s`: a probe image without the
  probe program; `agent_sigterm_exit`: the probe agent's exit on SIGTERM),
  which the harness tests do not bound tightly (load would break the bound);
and prints the suite time / floor ratio. Writes reports/benchmark.json
(top-level `ratio`, `probe_round_trip` with `median_ms` and `p95_ms`, and on a
cluster of several nodes `nodes_ratio`: every node side by side over the
slowest node alone, `--nodes-only` for just that). Uses the
same settings (environment variables) as the suites."""
from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from podshare import MANAGED_BY, RUN_ID_LABEL, delivery
from podshare.kube import Kube
from podshare.manifests import load_manifest, load_manifests, render
from podshare.pods import Pod
from suite_run import PROJECT, run_once

# The pods a default run starts: the probe pod and the stranger, one lifecycle
# pod per lifecycle claim, one pod per pattern (the reverse proxy's and the
# others' manifests).
PATTERNS = ("reverse-proxy.yaml", "log-watcher.yaml", "data-loader.yaml", "native-sidecar.yaml")


class EnvSettings:
    """The suites' settings from their environment variables (no pytest here)."""

    def __init__(self) -> None:
        import os

        from podshare.images import DEFAULTS
        from podshare.settings import probes_from
        self.probe_image = os.environ.get("PODSHARE_PROBE_IMAGE", DEFAULTS["probe"])
        self.nginx_image = os.environ.get("PODSHARE_NGINX_IMAGE", DEFAULTS["nginx"])
        self.image_pull_policy = os.environ.get("PODSHARE_IMAGE_PULL_POLICY", "IfNotPresent")
        self.image_pull_secret = os.environ.get("PODSHARE_IMAGE_PULL_SECRET")
        self.probes_from = probes_from(os.environ.get("PODSHARE_PROBES_FROM", "auto"),
                                       os.environ.get("PODSHARE_PROBE_IMAGE", DEFAULTS["probe"]))


def summary(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {"n": len(ordered), "median_ms": round(statistics.median(ordered) * 1000, 1),
            "p95_ms": round(ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)] * 1000, 1),
            "max_ms": round(ordered[-1] * 1000, 1)}


def timed(fn) -> float:
    start = time.monotonic()
    fn()
    return time.monotonic() - start


def floor(kube: Kube, settings: EnvSettings, execs: int) -> dict:
    """The unavoidable lifecycle, in parallel where a run does it in parallel."""
    run_id = "bench-" + uuid.uuid4().hex[:8]
    namespace = f"podshare-{run_id}"
    restricted = {f"pod-security.kubernetes.io/{m}": "restricted" for m in ("enforce", "warn", "audit")}
    kube.create_namespace(namespace, {**MANAGED_BY, RUN_ID_LABEL: run_id, **restricted})
    result: dict = {}
    try:
        bundle = None
        if settings.probes_from == "configmap":  # the public Python image: the run delivers the probes
            bundle = "podshare-probes-bench"
            kube.create(namespace, render(delivery.configmap(), name=bundle, settings=settings, run_id=run_id))
        result["probes_from"] = settings.probes_from
        templates = [load_manifest("probe-pod.yaml"), load_manifest("stranger-pod.yaml"),
                     load_manifest("probe-pod.yaml"), load_manifest("probe-pod.yaml")]  # + two lifecycle pods
        pods = [Pod(kube, namespace, render(t, name=f"bench-{i}", settings=settings, run_id=run_id,
                                            probe_bundle=bundle), 120)
                for i, t in enumerate(templates)]
        for name in PATTERNS:  # with their ConfigMaps and Services, as the claims make them
            docs = load_manifests(f"patterns/{name}")
            renamed = {d["metadata"]["name"]: f"{d['metadata']['name']}-bench" for d in docs}
            for doc in docs:
                body = render(doc, name=renamed[doc["metadata"]["name"]], settings=settings, run_id=run_id,
                              renamed=renamed, probe_bundle=bundle)
                if doc["kind"] == "Pod":
                    pods.append(Pod(kube, namespace, body, 120))
                else:
                    kube.create(namespace, body)

        def start_all():
            for pod in pods:
                pod.create()
            with ThreadPoolExecutor(len(pods)) as pool:
                list(pool.map(lambda p: p.wait_ready(), pods))
        result["pods_started_together"] = len(pods)
        result["pods_ready_s"] = round(timed(start_all), 2)
        if bundle:  # what the unpacking itself took in each container, as the unpacker measured it
            unpacked = [json.loads(line)["unpack_ms"] / 1000 for p in pods
                        for c in p.body["spec"].get("initContainers", []) + p.body["spec"]["containers"]
                        if c.get("command", [None, ""])[1:2] == [f"{delivery.BUNDLE}/unpack.py"]
                        for line in p.log(c["name"]).splitlines() if '"unpack_ms"' in line]
            result["unpack_per_container"] = summary(unpacked)
        probe = pods[0]
        alpha = probe.container("alpha")
        # The first verb opens the container's probe channel (one exec); the rest ride on it.
        result["channel_open_ms"] = round(timed(lambda: alpha.run("identity")) * 1000, 1)
        trips = []
        for _ in range(execs):
            trips.append(timed(lambda: alpha.run("identity")))
        result["probe_round_trip"] = summary(trips)
        result["container_restart_s"] = round(timed(lambda: probe.restart_container("alpha")), 2)

        def recreate():
            pods[2].delete()
            pods[2].uid = None
            pods[2].create().wait_ready()
        result["delete_and_recreate_s"] = round(timed(recreate), 2)
    finally:
        result["namespace_delete_s"] = round(timed(lambda: kube.delete_namespace(namespace, timeout=120)), 2)
    result["floor_s"] = round(result["pods_ready_s"] + result["container_restart_s"]
                              + result["delete_and_recreate_s"] + result["namespace_delete_s"], 2)
    return result


def suite(pytest_args: list[str]) -> dict:
    """The full suites once, with pytest's per-phase durations."""
    with tempfile.TemporaryDirectory() as reports:
        done, results, wall = run_once(Path(reports), "--durations=0", "--durations-min=0", *pytest_args)
    phases = {"setup": 0.0, "call": 0.0, "teardown": 0.0}
    for seconds, phase in re.findall(r"^(\d+\.\d+)s (setup|call|teardown) ", done.stdout, re.M):
        phases[phase] += float(seconds)
    return {"exit": done.returncode, "claims": len(results["checks"]), "summary": results["summary"],
            "suite_s": round(wall, 2), "phases_s": {k: round(v, 2) for k, v in phases.items()}}


def fail_fast() -> dict:
    """How soon the paths that must end on their event do, as figures (the harness
    tests assert only that they do, far from any load): a run whose probe image
    has no probe program (the nginx image: its containers exit, the first
    CrashLoopBackOff ends the run), and the probe agent's exit on SIGTERM."""
    import os
    import signal
    import subprocess
    from podshare.images import DEFAULTS
    nginx = os.environ.get("PODSHARE_NGINX_IMAGE", DEFAULTS["nginx"])
    with tempfile.TemporaryDirectory() as reports:
        done, _results, wall = run_once(Path(reports), "-m", "identity", "--pod-timeout", "300",
                                        "--probe-image", nginx)
    exits = []
    for i in range(20):
        agent = subprocess.Popen([sys.executable, "-m", "probes", "agent", "--port", str(29000 + i)],
                                 cwd=PROJECT, stdout=subprocess.PIPE, text=True)
        agent.stdout.readline()  # listening
        exits.append(timed(lambda: (agent.send_signal(signal.SIGTERM), agent.wait(30))))
    return {"clean_failure_s": round(wall, 2), "clean_failure_exit": done.returncode,
            "agent_sigterm_exit": summary(exits)}


def nodes_ratio(kube: Kube, pytest_args: list[str]) -> dict:
    """Every node side by side against each node alone, in one go. The nodes
    differ (a gVisor pool whose failing claims wait out their timeouts takes three
    times as long as a runc node), so side by side can be no faster than the slowest
    node alone: nodes_ratio is the wall time of --all-nodes over the slowest node's
    alone (what side by side costs), first_node_ratio over the first node's."""
    nodes = sorted(n.metadata.name for n in kube.nodes())
    if len(nodes) < 2:
        return {}
    walls, costs, checks = {}, {}, {}
    for name, args in [*((n, ["--node", n]) for n in nodes), ("all", ["--all-nodes"])]:
        with tempfile.TemporaryDirectory() as reports:
            _done, results, wall = run_once(Path(reports), *args, "--tolerate", "*", *pytest_args)
        walls[name], costs[name], checks[name] = round(wall, 2), results["run"].get("api_cost"), len(results["checks"])
    slowest = max(nodes, key=lambda n: walls[n])
    return {"nodes": len(nodes), "alone_s": {n: walls[n] for n in nodes}, "all_nodes_s": walls["all"],
            "checks": checks, "api_cost": costs, "slowest_alone": slowest,
            "nodes_ratio": round(walls["all"] / walls[slowest], 2),
            "sum_alone_over_all_nodes": round(sum(walls[n] for n in nodes) / walls["all"], 2),
            "first_node_ratio": round(walls["all"] / walls[nodes[0]], 2)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--execs", type=int, default=50)
    p.add_argument("--out", default=str(PROJECT / "reports" / "benchmark.json"))
    p.add_argument("--nodes-only", action="store_true", help="only the nodes ratio")
    p.add_argument("pytest_args", nargs="*")
    args = p.parse_args()
    kube = Kube()
    if args.nodes_only:
        print(json.dumps(nodes_ratio(kube, args.pytest_args), indent=2))
        return 0
    results: dict = {"server_version": kube.server_version(), **floor(kube, EnvSettings(), args.execs)}
    results.update(suite(args.pytest_args))
    results.update(fail_fast())
    results["ratio"] = round(results["suite_s"] / results["floor_s"], 2)
    results.update(nodes_ratio(kube, args.pytest_args))  # nodes_ratio: every node over one
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    print(f"\nprobes from {results['probes_from']}"
          + (f", unpacking per container median {results['unpack_per_container']['median_ms']} ms"
             if "unpack_per_container" in results else ""))
    print(f"suite {results['suite_s']}s / floor {results['floor_s']}s = ratio {results['ratio']}; probe round trip "
          f"median {results['probe_round_trip']['median_ms']} ms, p95 {results['probe_round_trip']['p95_ms']} ms "
          f"(opening the channel {results['channel_open_ms']} ms)")
    return 0 if results["exit"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
