"""The podshare command.

    podshare run [PYTEST ARGS]   the conformance suites as installed (pytest --pyargs podshare.suites)
    podshare gc [--older-than 1h] [--namespace NS] [--dry-run]   remove what earlier runs left behind
    podshare history DIR [--reports-dir OUT] [--window N]   the newest run of a store, with each claim's trend
    podshare images [--registry HOST/PATH]   every image a run needs, one a line, for mirroring
    podshare nightly [--keep-runs N] [PYTEST ARGS]   in a cluster (the runner image): run, store the reports as a ConfigMap
    podshare fetch --namespace NS DIR   the stored runs of a namespace into DIR, for `podshare history DIR`
    podshare nightly-manifest [--registry HOST/PATH] [--schedule CRON]   the CronJob and its RBAC, for kubectl apply
    podshare namespace-cap-manifest [--cap N] [--registry HOST/PATH]   the cap on podshare's namespaces, for kubectl apply
    podshare namespace-cap   in a cluster (the runner image): that cap's admission webhook
    podshare sonobuoy-plugin [--registry HOST/PATH]   the Sonobuoy plugin definition, with the images filled in
    podshare conformance-image   the runner image's default: a run as Hydrophone and Sonobuoy drive one (E2E_* env)
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

from pathlib import Path

from . import conformance_image, namespace_cap, new_run_id, nightly as nightly_manifest, store
from .gc import collect, find_orphans
from .history import WINDOW, History
from .images import IMAGES, mirrored
from .errors import KubeError
from .kube import Kube
from .records import COULD_NOT_CHECK, ERROR, FAILED, PASSED
from .report import RunReport
from .settings import option

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> float:
    found = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text.strip())
    if not found:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 30m, 2h)")
    return float(found[1]) * UNITS[found[2] or "s"]


def run_suites(pytest_args: list[str]) -> int:
    """The suites shipped in the package, so an installed podshare (a wheel, pipx)
    needs no checkout; every pytest and podshare option passes through. A fresh
    interpreter, so pytest's assertion rewriting sees podshare before it is imported."""
    os.execv(sys.executable, [sys.executable, "-m", "pytest", "--pyargs", "podshare.suites",
                              "-p", "no:cacheprovider", *pytest_args])


SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def nightly(keep: int, argv: list[str]) -> int:
    """The runner image's command: the suites with the trend of the runs stored in
    this pod's namespace, then this run stored beside them. Exits as the run did;
    a run whose reports could not be stored fails (exit 2): nobody would see it."""
    namespace = os.environ.get("PODSHARE_STORE_NAMESPACE") or SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    work = Path(tempfile.mkdtemp(prefix="podshare-"))
    history, reports = work / "history", work / "reports"
    try:
        kube = Kube()
        previous = store.fetch(kube, namespace, history)
        print(f"podshare nightly: {len(previous)} earlier runs in {namespace}", flush=True)
        run_id = os.environ.get("PODSHARE_RUN_ID") or ""
        args = ["--reports-dir", str(reports), "--history-dir", str(history), *argv]
        if not run_id:  # the stored ConfigMap is named by the run id: choose it here
            run_id = new_run_id()
            args += ["--run-id", run_id]
        done = subprocess.run([sys.executable, "-m", "pytest", "--pyargs", "podshare.suites", "-p", "no:cacheprovider",
                               *args])
        if not (reports / "results.json").exists():
            print("podshare nightly: the run wrote no results", file=sys.stderr)
            return 2
        stored = store.save(kube, namespace, reports, run_id, keep)
        print(f"podshare nightly: reports stored as configmap/{stored} in {namespace} "
              f"(podshare fetch --namespace {namespace} DIR)", flush=True)
        return done.returncode
    except (KubeError, OSError, ValueError) as exc:
        print(f"podshare nightly: {exc}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(work, ignore_errors=True)


def fetch(args) -> int:
    skipped: list[str] = []
    try:
        ids = store.fetch(Kube(args.kubeconfig, args.kube_context), args.namespace, Path(args.directory), skipped)
    except KubeError as exc:
        print(f"podshare fetch: {exc}", file=sys.stderr)
        return 2
    for line in skipped:
        print(f"podshare fetch: skipped {line}", file=sys.stderr)
    print(f"podshare fetch: {len(ids)} runs into {args.directory}" + (f", newest {ids[-1]}" if ids else ""))
    return 0 if ids else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="podshare", description="podshare: do a pod's containers share what Kubernetes promises?")
    sub = p.add_subparsers(dest="command", required=True)
    # These two hand the rest of the line to pytest, options and all (see pytest --help).
    sub.add_parser("run", help="run the conformance suites; the rest of the line goes to pytest (see pytest --help)",
                   add_help=False, allow_abbrev=False)
    night = sub.add_parser("nightly", add_help=False, allow_abbrev=False, help="inside a cluster (the runner image): "
                           "run the suites with the trend of the runs stored in this namespace, store this run as a "
                           "ConfigMap ([--keep-runs N] PYTEST ARGS)")
    night.add_argument("--keep-runs", type=int, default=store.KEEP, help="stored runs to keep (--keep is pytest's)")
    sub.add_parser("conformance-image", help="inside a cluster (the runner image's default command): the claims "
                   "as a Kubernetes conformance image for Hydrophone and Sonobuoy (E2E_FOCUS, E2E_SKIP, E2E_DRYRUN; "
                   "results in /tmp/results): docs/hydrophone.md")
    manifest = sub.add_parser("nightly-manifest", help="the nightly CronJob, its namespace and RBAC, with the images "
                              "filled in: podshare nightly-manifest | kubectl apply -f -")
    option("--registry").add_to(manifest)
    manifest.add_argument("--schedule", default=nightly_manifest.SCHEDULE, help="cron schedule (default %(default)s)")
    option("--image-pull-policy").add_to(manifest)
    manifest.add_argument("--one-node", action="store_true",
                          help="check one node (the scheduler's choice) instead of every node")
    manifest.add_argument("--one-per-pool", action="store_true",
                          help="check one node of each distinct node configuration (for large clusters)")
    manifest.add_argument("--runner-by-tag", action="store_true",
                          help="accept a runner image named by tag (an image of your own that no one else can "
                               "push); by default it must name a digest, NAME@sha256:...")
    for name in IMAGES:
        option(f"--{name}-image").add_to(manifest)
    cap = sub.add_parser("namespace-cap-manifest", help="the webhook that caps how many podshare namespaces exist "
                         "at once for the confined identity (docs/security.md): podshare namespace-cap-manifest | "
                         "kubectl apply -f -")
    cap.add_argument("--cap", type=int, default=namespace_cap.DEFAULT_CAP,
                     help="podshare run namespaces that may exist at once (default %(default)s)")
    option("--registry").add_to(cap)
    option("--image-pull-policy").add_to(cap)
    option("--runner-image").add_to(cap)
    cap.add_argument("--runner-by-tag", action="store_true", help="as for nightly-manifest")
    sub.add_parser("namespace-cap", help="inside a cluster (the runner image): the namespace cap's admission webhook")
    plugin = sub.add_parser("sonobuoy-plugin", help="the Sonobuoy plugin definition with the images filled in: "
                            "podshare sonobuoy-plugin > podshare.yaml; sonobuoy run --plugin podshare.yaml")
    option("--registry").add_to(plugin)
    option("--image-pull-policy").add_to(plugin)
    for name in IMAGES:
        option(f"--{name}-image").add_to(plugin)
    fetched = sub.add_parser("fetch", help="the runs stored by in-cluster runs, into a directory for podshare history")
    fetched.add_argument("--namespace", required=True, help="where the runner ran (manifests/nightly: podshare-nightly)")
    fetched.add_argument("directory")
    option("--kubeconfig").add_to(fetched)
    option("--kube-context").add_to(fetched)
    gc = sub.add_parser("gc", help="delete namespaces and objects of earlier runs, by label and age")
    gc.add_argument("--older-than", type=duration, default=duration("1h"),
                    help="only what is at least this old (default 1h, so running runs are safe)")
    gc.add_argument("--namespace", help="collect podshare's objects inside this namespace (runs made with --namespace)")
    gc.add_argument("--run-id", help="only this run's objects")
    gc.add_argument("--dry-run", action="store_true", help="list, delete nothing")
    gc.add_argument("--timeout", type=duration, default=duration("120s"), help="wait this long for each namespace")
    option("--kubeconfig").add_to(gc)
    option("--kube-context").add_to(gc)
    hist = sub.add_parser("history", help="render the newest run of a history store with every claim's trend")
    hist.add_argument("store", help="a directory of results.json files (--history-dir, or fetched from the nightly Job)")
    hist.add_argument("--reports-dir", default="reports", help="where report.html, summary.md, results.json go")
    hist.add_argument("--window", type=int, default=WINDOW, help=f"runs per trend (default {WINDOW})")
    images = sub.add_parser("images", help="every image a run needs (probe, nginx, runner), one a line")
    option("--registry").add_to(images, help="the names on this mirror (HOST/PATH), as a run with --registry pulls them")
    for name in IMAGES:
        option(f"--{name}-image").add_to(images)
    args, rest = p.parse_known_args(argv)
    if args.command == "run":
        return run_suites(rest)
    if args.command == "nightly":
        return nightly(args.keep_runs, rest)
    if rest:
        p.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "sonobuoy-plugin":
        print(nightly_manifest.render_plugin(images={n: getattr(args, f"{n}_image") for n in IMAGES},
                                             registry=args.registry, pull_policy=args.image_pull_policy), end="")
        return 0
    if args.command == "conformance-image":
        return conformance_image.main()
    if args.command == "nightly-manifest":
        try:
            print(nightly_manifest.render(images={n: getattr(args, f"{n}_image") for n in IMAGES},
                                          registry=args.registry, schedule=args.schedule,
                                          pull_policy=args.image_pull_policy, all_nodes=not args.one_node,
                                          one_per_pool=args.one_per_pool, runner_by_tag=args.runner_by_tag), end="")
        except ValueError as exc:
            print(f"podshare nightly-manifest: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.command == "namespace-cap":
        return namespace_cap.main()
    if args.command == "namespace-cap-manifest":
        image = mirrored(args.runner_image, args.registry)
        if not (args.runner_by_tag or nightly_manifest.by_digest(image)):
            print(f"podshare namespace-cap-manifest: the runner image {image} is a tag: name it by digest "
                  "(NAME@sha256:...), or --runner-by-tag for an image of your own", file=sys.stderr)
            return 2
        print(namespace_cap.render(image, cap=args.cap, pull_policy=args.image_pull_policy), end="")
        return 0
    if args.command == "fetch":
        return fetch(args)
    if args.command == "images":
        for name in IMAGES:
            print(mirrored(getattr(args, f"{name}_image"), args.registry))
        return 0
    if args.command == "history":
        return show_history(Path(args.store), Path(args.reports_dir), args.window)
    try:
        kube = Kube(args.kubeconfig, args.kube_context)
        orphans = find_orphans(kube, args.older_than, args.namespace, args.run_id)
        for o in orphans:
            print(("would delete " if args.dry_run else "deleting ") + str(o))
        if not orphans:
            print("podshare gc: nothing to collect")
        if args.dry_run or not orphans:
            return 0
        remaining = collect(kube, orphans, args.timeout)
    except KubeError as exc:
        print(f"podshare gc: {exc}", file=sys.stderr)
        return 1
    if remaining:
        print(f"podshare gc: still there after {args.timeout:g}s: {', '.join(remaining)}", file=sys.stderr)
        return 1
    print(f"podshare gc: removed {len(orphans)}")
    return 0


def show_history(store: Path, out: Path, window: int) -> int:
    """Reports of the store's newest run with the trend; prints what changed.
    Exit 1 when the newest run has a claim that did not hold, 2 when it only could
    not check some, as the run itself did."""
    history = History.load(store, window)
    if not history.runs:
        print(f"podshare history: no runs in {store}", file=sys.stderr)
        return 2
    report = RunReport.from_json(history.runs[-1], history)
    for path in report.write(out):
        print(f"report: {path}")
    for key, verdict in history.changes().items():
        print(f"{verdict}: {key}")
    unchecked = report.summary[COULD_NOT_CHECK]
    print(f"podshare history: {len(history.runs)} runs, newest {report.run.id} "
          f"({report.summary[PASSED]} {PASSED}, {report.summary[FAILED]} {FAILED}"
          + (f", {unchecked} could not check" if unchecked else "") + ")")
    # as the run itself: 1 for a claim that did not hold, else 2 when some could not be checked
    return 1 if report.summary[FAILED] or report.summary[ERROR] else 2 if unchecked else 0


if __name__ == "__main__":
    sys.exit(main())
