"""podshare's options: each settable on the command line, through an
environment variable or in `[tool.pytest.ini_options]`, in that order of
precedence (then the default), as most tools order them: what a person types
wins over what a CI job exports, which wins over the project's file. One table,
used by the pytest plugin and the `podshare` command alike, so help, ini, env
and defaults never drift apart."""
from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass
from typing import Any

import pytest

from .delivery import missing_wheels
from .images import DEFAULTS, mirrored

KEEP_CHOICES = ("never", "on-failure", "always")
PROBES_FROM = ("auto", "configmap", "image")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
USER_NAMESPACES = ("off", "on", "both")
# podshare-<run id> names a run's namespace: podshare-nightly is the nightly's (manifests/nightly)
RESERVED_RUN_IDS = ("nightly",)
# --user-namespaces as a dimension: the hostUsers: false settings every claim runs with
# (off: none, the pods as their manifests have them, and no id; both: without, then with).
USER_NAMESPACE_MODES = {"off": (), "on": (True,), "both": (False, True)}


@dataclass(frozen=True)
class Option:
    flag: str
    env: str
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    type: type = str
    shown_default: str | None = None  # the default in words, where the value alone does not say it

    @property
    def dest(self) -> str:
        return "podshare_" + self.flag.lstrip("-").replace("-", "_")

    @property
    def ini(self) -> str:
        return "podshare_" + self.flag.lstrip("-").replace("-", "_")

    def add_to(self, parser: argparse.ArgumentParser, help: str | None = None) -> None:
        """The same option on a `podshare` subcommand: its environment variable, else its default."""
        parser.add_argument(self.flag, default=os.environ.get(self.env) or self.default,
                            **({"choices": self.choices} if self.choices else {}),
                            help=f"{help or self.help} [env {self.env}]"
                            + (f" (default {self.default})" if self.default is not None else ""))


OPTIONS = (
    Option("--kubeconfig", "PODSHARE_KUBECONFIG", None, "kubeconfig file (default: $KUBECONFIG, ~/.kube/config, in-cluster)",
           shown_default="`$KUBECONFIG`, `~/.kube/config`, in-cluster"),
    Option("--kube-context", "PODSHARE_KUBE_CONTEXT", None, "kubeconfig context (default: the current one)",
           shown_default="the current context"),
    Option("--namespace", "PODSHARE_NAMESPACE", None,
           "run in this existing namespace instead of a generated per-run one (no cluster-scoped rights needed)",
           shown_default="a new `podshare-<run id>`"),
    Option("--probe-image", "PODSHARE_PROBE_IMAGE", DEFAULTS["probe"],
           "probe image: the public Python image (the probes come with the run), or one built from "
           "images/probe.Containerfile"),
    Option("--probes-from", "PODSHARE_PROBES_FROM", "auto",
           "where the probe containers get the probes: configmap (the run delivers them into an emptyDir, for a "
           "plain Python 3.11 image), image (the image holds them); auto: configmap for the default public Python "
           "image, image for any other --probe-image", PROBES_FROM),
    Option("--nginx-image", "PODSHARE_NGINX_IMAGE", DEFAULTS["nginx"], "nginx image for the reverse-proxy pattern"),
    Option("--registry", "PODSHARE_REGISTRY", None,
           "pull every image from this registry and path instead (HOST/PATH: keeps each image's last name and tag); "
           "`podshare images --registry` lists what to mirror"),
    Option("--image-pull-policy", "PODSHARE_IMAGE_PULL_POLICY", "IfNotPresent", "imagePullPolicy of every pod",
           PULL_POLICIES),
    Option("--image-pull-secret", "PODSHARE_IMAGE_PULL_SECRET", None, "name of an imagePullSecret in the namespace"),
    Option("--node", "PODSHARE_NODE", None, "run the pods on this node (default: wherever the scheduler puts them)",
           shown_default="the scheduler's choice"),
    Option("--all-nodes", "PODSHARE_ALL_NODES", False,
           "check every node: a probe set per node, the node in each check's id (nodes that cannot be "
           "checked are reported, not dropped)", type=bool),
    Option("--node-selector", "PODSHARE_NODE_SELECTOR", None,
           "check every node these labels select (a label selector, e.g. podshare.io/pool=sandboxed)"),
    Option("--one-per-pool", "PODSHARE_ONE_PER_POOL", False,
           "with --all-nodes or --node-selector: check one node of each distinct configuration (pool labels, "
           "taints, kubelet and runtime versions, kernel, OS image, architecture); the others are named as "
           "represented by it", type=bool),
    Option("--workers", "PODSHARE_WORKERS", 8,
           "at most this many nodes and RuntimeClasses checked side by side (pytest-xdist workers; 1: one "
           "after the other)", type=int),
    Option("--tolerate", "PODSHARE_TOLERATE", None,
           "taint keys the pods tolerate (repeatable; * for every taint), so tainted pools are checked too",
           type=list),
    Option("--keep", "PODSHARE_KEEP", "never", "keep the namespace and pods after the run", KEEP_CHOICES),
    Option("--reports-dir", "PODSHARE_REPORTS_DIR", "reports", "where results.json, report.html, summary.md and junit.xml go"),
    Option("--pod-manifest", "PODSHARE_POD_MANIFEST", "probe-pod.yaml",
           "the probe pod manifest: your own variant of manifests/probe-pod.yaml (runtimeClass, annotations, volumes)"),
    Option("--patterns-dir", "PODSHARE_PATTERNS_DIR", None,
           "a directory with your variants of manifests/patterns/*.yaml (same file names; the shipped one for any missing)"),
    Option("--runtime-class", "PODSHARE_RUNTIME_CLASS", None,
           "run every claim once per RuntimeClass (repeatable; env and ini: comma-separated); "
           "default: the cluster's default runtime", type=list, shown_default="the cluster's default"),
    Option("--user-namespaces", "PODSHARE_USER_NAMESPACES", "off",
           "on: every pod gets hostUsers: false (its own user namespace); both: every claim with and without; "
           "a node or runtime that cannot run such pods is reported as could not check", USER_NAMESPACES),
    Option("--storage-class", "PODSHARE_STORAGE_CLASS", None,
           "run every volume claim on a PersistentVolumeClaim of this StorageClass too (a generic ephemeral volume, "
           "gone with its pod), beside the emptyDirs (repeatable; env and ini: comma-separated; default: the "
           "cluster's default class)", type=list, shown_default="emptyDir and emptyDir:Memory only"),
    Option("--known-divergences", "PODSHARE_KNOWN_DIVERGENCES", None,
           "a YAML list of {claim, reason, seen, runtime_class, node_selector, user_namespaces and/or "
           "storage_class (or where: a list of them)}: those "
           "claims are reported as known divergences "
           "where they fail, and fail the run where they now pass, unless the entry says intermittent: true "
           "(a race the runtime loses only sometimes) (repeatable: the files' entries in order, "
           "the first whose claim and place match decides; env and ini: comma-separated)", type=list),
    Option("--pod-security", "PODSHARE_POD_SECURITY", "restricted",
           "Pod Security level of the generated namespace (a variant with hostIPC or hostPath needs privileged)",
           ("restricted", "baseline", "privileged")),
    Option("--run-role", "PODSHARE_RUN_ROLE", "podshare-run",
           "the ClusterRole a run binds to itself inside the namespace it makes (manifests/rbac.yaml)"),
    Option("--unconfined", "PODSHARE_UNCONFINED", False,
           "run even though the admission policy podshare-confinement is not in force for this identity "
           "(a non-administrator is otherwise stopped at the start; results.json says which)", type=bool),
    Option("--run-id", "PODSHARE_RUN_ID", None, "the run's id (default: time and a random suffix); names and labels use it",
           shown_default="time + random"),
    Option("--pod-timeout", "PODSHARE_POD_TIMEOUT", 120.0, "seconds to wait for a pod to become ready", type=float),
    Option("--history-dir", "PODSHARE_HISTORY_DIR", None,
           "a directory of past runs: this run is added to it, and its reports show each claim's last runs"),
    Option("--pushgateway", "PODSHARE_PUSHGATEWAY", None,
           "a Prometheus Pushgateway URL: the run's metrics (also in reports/metrics.prom) are pushed there"),
)
# The `podshare` command's own (the nightly's manifest, the image list): not a run's.
COMMAND_OPTIONS = (
    Option("--runner-image", "PODSHARE_RUNNER_IMAGE", DEFAULTS["runner"],
           "the image the nightly CronJob runs podshare in (images/runner.Containerfile)"),
)


def option(flag: str) -> Option:
    """The one definition of an option, by its flag."""
    return next(o for o in (*OPTIONS, *COMMAND_OPTIONS) if o.flag == flag)


@dataclass(frozen=True)
class Settings:
    kubeconfig: str | None
    kube_context: str | None
    namespace: str | None
    probe_image: str
    probes_from: str
    nginx_image: str
    registry: str | None
    image_pull_policy: str
    image_pull_secret: str | None
    node: str | None
    all_nodes: bool
    node_selector: str | None
    one_per_pool: bool
    workers: int
    tolerate: tuple[str, ...]
    keep: str
    reports_dir: str
    pod_manifest: str
    patterns_dir: str | None
    runtime_class: tuple[str, ...]
    user_namespaces: str
    storage_class: tuple[str, ...]
    known_divergences: tuple[str, ...]
    pod_security: str
    run_role: str
    unconfined: bool
    run_id: str | None
    pod_timeout: float
    history_dir: str | None
    pushgateway: str | None

    @classmethod
    def from_config(cls, config: pytest.Config) -> "Settings":
        values = {}
        for opt in OPTIONS:
            raw = config.getoption(opt.dest)
            if raw is None:
                raw = os.environ.get(opt.env) or config.getini(opt.ini) or opt.default
            if opt.type is list:
                raw = tuple(raw) if isinstance(raw, list) else tuple(
                    part.strip() for part in (raw or "").split(",") if part.strip())
                if opt.flag == "--runtime-class" and any(
                        not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", c) for c in raw):
                    raise pytest.UsageError(f"{opt.flag} must name RuntimeClasses, not {', '.join(raw)}")
                if opt.flag == "--storage-class" and any(
                        not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", c) for c in raw):
                    raise pytest.UsageError(f"{opt.flag} must name StorageClasses (or default), not {', '.join(raw)}")
                if opt.flag == "--tolerate" and any(
                        not re.fullmatch(r"\*|([a-z0-9.-]+/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?", k) for k in raw):
                    raise pytest.UsageError(f"{opt.flag} takes taint keys (or *), not {', '.join(raw)}")
            if opt.type is int:
                try:
                    raw = int(raw)
                except ValueError:
                    raise pytest.UsageError(f"{opt.flag} must be a whole number, not {raw!r}") from None
                if raw < 1:
                    raise pytest.UsageError(f"{opt.flag} must be at least 1, not {raw}")
            if opt.type is bool:
                raw = raw if isinstance(raw, bool) else str(raw).strip().lower() in ("1", "true", "yes", "on")
            if raw is not None and opt.type is float:
                try:
                    raw = float(raw)
                except ValueError:
                    raise pytest.UsageError(f"{opt.flag} must be a number of seconds, not {raw!r}") from None
                if raw <= 0:
                    raise pytest.UsageError(f"{opt.flag} must be positive, not {raw:g}")
            if opt.flag == "--run-id" and raw is not None and not re.fullmatch(r"[a-z0-9]([a-z0-9-]{4,38}[a-z0-9])", raw):
                raise pytest.UsageError(f"--run-id must be 6-40 lowercase letters, digits and '-', not {raw!r}")
            if opt.flag == "--run-id" and raw in RESERVED_RUN_IDS:
                raise pytest.UsageError(f"--run-id {raw} is reserved: podshare-{raw} is the nightly's namespace "
                                        "(manifests/nightly), which no run may make")
            if opt.choices and raw not in opt.choices:
                raise pytest.UsageError(f"{opt.flag} must be one of {', '.join(opt.choices)}, not {raw!r}")
            values[opt.flag[2:].replace("-", "_")] = raw
        if values["node"] and (values["all_nodes"] or values["node_selector"]):
            raise pytest.UsageError("--node checks one node; --all-nodes and --node-selector several: give one")
        # --node-selector narrows --all-nodes (e.g. the nightly's default to a pool)
        if values["one_per_pool"] and not (values["all_nodes"] or values["node_selector"]):
            raise pytest.UsageError("--one-per-pool picks among several nodes: give --all-nodes or --node-selector")
        values["probes_from"] = probes_from(values["probes_from"], values["probe_image"])
        for image in ("probe_image", "nginx_image"):  # an air-gapped cluster pulls from its mirror
            values[image] = mirrored(values[image], values["registry"])
        missing = missing_wheels() if values["probes_from"] == "configmap" else []
        if missing:
            raise pytest.UsageError(
                f"this podshare has no probe wheels for {', '.join(missing)} (podshare/probe_wheels), which the "
                "public Python image needs: in a checkout run cluster/venv.sh (it downloads them), or give "
                "--probe-image an image built from images/probe.Containerfile")
        return cls(**values)


def probes_from(choice: str, probe_image: str) -> str:
    """configmap or image: where the probe containers get the probes. auto tells by
    the probe image's name as given (before --registry renames it): the default
    public Python image gets them from the run; any other --probe-image is taken to
    be built from images/probe.Containerfile, so its pods stay as they were (no init
    container, no ConfigMap, the image's own PYTHONPATH). A plain Python image of
    one's own says --probes-from configmap."""
    if choice != "auto":
        return choice
    return "configmap" if probe_image == DEFAULTS["probe"] else "image"


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("podshare", "podshare: pod sharing conformance")
    for opt in OPTIONS:
        action = {list: "append", bool: "store_const"}.get(opt.type, "store")
        group.addoption(opt.flag, dest=opt.dest, default=None, action=action,
                        **({"const": True} if opt.type is bool else {}),
                        help=f"{opt.help} [env {opt.env}; ini {opt.ini}]"
                        + (f" (default {opt.default})" if opt.default is not None else ""))
        parser.addini(opt.ini, help=opt.help, default=None)
