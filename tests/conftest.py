"""Helpers for the harness's own tests."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from podshare import MANAGED_BY, RUN_ID_LABEL
from podshare.pods import load_manifests

from .suite_run import PROJECT, SUITES


def probe(*args: str, prefix: tuple[str, ...] = (), timeout: float = 30) -> dict:
    """Run a probe verb on this host (optionally inside `unshare ...`) and parse its one JSON line."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    out = subprocess.run([*prefix, sys.executable, "-m", "probes", *args], capture_output=True, text=True,
                         env=env, timeout=timeout)
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"probe printed {len(lines)} lines: {out.stdout!r} {out.stderr!r}"
    return json.loads(lines[0])


@pytest.fixture
def run_probe():
    return probe


@pytest.fixture
def start_probe():
    """Start a probe verb in the background; yields a function returning the Popen."""
    procs = []

    def start(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": str(PROJECT)}
        p = subprocess.Popen([*prefix, sys.executable, "-m", "probes", *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, stdin=subprocess.PIPE, text=True, env=env)
        procs.append(p)
        return p
    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def wait_ready(proc: subprocess.Popen) -> dict:
    """Block until a holding verb prints its ready line on stderr."""
    line = proc.stderr.readline()
    assert '"ready": true' in line, f"not ready: {line!r} {proc.stdout.read() if proc.poll() is not None else ''}"
    return json.loads(line)


def finish(proc: subprocess.Popen, timeout: float = 10) -> dict:
    out, _ = proc.communicate(timeout=timeout)
    return json.loads(out.strip().splitlines()[-1])


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="unshare of IPC/net namespaces needs root")


def kubeconfig_for(path: Path, kube, *, token: str | None = None, server: str | None = None) -> Path:
    """A kubeconfig for the same cluster: with the given token, or the test's own
    credentials; optionally pointing at another server."""
    import base64
    cfg = kube.configuration
    b64 = lambda p: base64.b64encode(Path(p).read_bytes()).decode()  # noqa: E731
    if token:
        user = {"token": token}
    elif cfg.cert_file:
        user = {"client-certificate-data": b64(cfg.cert_file), "client-key-data": b64(cfg.key_file)}
    else:
        user = {"token": cfg.api_key.get("authorization", "").removeprefix("Bearer ")}
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "c", "cluster": {"server": server or cfg.host,
                                               "certificate-authority-data": b64(cfg.ssl_ca_cert)}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "test", "context": {"cluster": "c", "user": "u"}}]}))
    return path




def run_suites(*args: str, timeout: float = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The suites in a pytest process of their own, against the same cluster."""
    return subprocess.run([*SUITES, *args], cwd=PROJECT, env=os.environ if env is None else env,
                          capture_output=True, text=True, timeout=timeout)


def start_suites(*args: str, **popen) -> subprocess.Popen:
    """The suites started in the background (output merged on a pipe), for tests
    that signal or race them."""
    return subprocess.Popen([*SUITES, *args], cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **popen)


def run_suites_as(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """The suites without the outer KUBECONFIG: the caller passes credentials of its own."""
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "PODSHARE_KUBECONFIG")}
    return run_suites(*args, timeout=timeout, env=env)


RESTRICTED = {f"pod-security.kubernetes.io/{m}": "restricted" for m in ("enforce", "warn", "audit")}


def rbac(kind: str) -> dict:
    return next(d for d in load_manifests("rbac.yaml") if d["kind"] == kind)


@pytest.fixture
def make_account(kube, podshare_session, tmp_path):
    """Makes ServiceAccounts, each in a namespace of its own, bound to nothing until
    asked, with a kubeconfig holding its token; removes them all afterwards."""
    cluster_objects, namespaces = [], []

    def make():
        suffix = uuid.uuid4().hex[:6]
        namespace = f"podshare-rbac-{suffix}"
        kube.create_namespace(namespace, {**MANAGED_BY, RUN_ID_LABEL: podshare_session.run_id, **RESTRICTED})
        namespaces.append(namespace)
        kube.create(namespace, {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "runner"}})
        subject = [{"kind": "ServiceAccount", "name": "runner", "namespace": namespace}]

        class Account:
            name = f"system:serviceaccount:{namespace}:runner"
            home = namespace

            def bind_cluster_role(self):
                role = {**rbac("ClusterRole"), "metadata": {"name": f"podshare-test-{suffix}"}}
                binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                           "metadata": {"name": f"podshare-test-{suffix}"}, "subjects": subject,
                           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                       "name": role["metadata"]["name"]}}
                for body in (role, binding):
                    kube.create_cluster_scoped(body)
                    cluster_objects.append((body["kind"], body["metadata"]["name"]))

            def set_cluster_role_rules(self, rules: list[dict]):
                """Replace the bound ClusterRole's rules (the binding stays)."""
                name = f"podshare-test-{suffix}"
                kube.delete_cluster_scoped("ClusterRole", name)
                kube.create_cluster_scoped({**rbac("ClusterRole"), "metadata": {"name": name}, "rules": rules})

            def bind_role_in(self, target: str):
                kube.create(target, {**rbac("Role"), "metadata": {"name": "podshare"}})
                kube.create(target, {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                                     "metadata": {"name": "podshare"}, "subjects": subject,
                                     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                                 "name": "podshare"}})

            def kubeconfig(self):
                token = kube.service_account_token(namespace, "runner", 3600)
                return kubeconfig_for(tmp_path / f"sa-{suffix}.kubeconfig", kube, token=token)
        return Account()

    yield make
    for kind, name in reversed(cluster_objects):
        kube.delete_cluster_scoped(kind, name)
    for namespace in namespaces:
        kube.delete_namespace(namespace, timeout=120)


@pytest.fixture
def account(make_account):
    """One ServiceAccount (see make_account)."""
    return make_account()
