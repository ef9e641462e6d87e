"""Helpers for the harness's own tests."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from podshare import MANAGED_BY, RUN_ID_LABEL
from podshare.fence import FENCED_LABEL, pod_security
from podshare.manifests import load_manifests
from podshare.settings import OPTIONS

from .suite_run import PROJECT, SUITES

# The suites' default --pod-timeout, what a run waits out where a fail-fast or
# disruption path does not work.
POD_TIMEOUT = next(o.default for o in OPTIONS if o.flag == "--pod-timeout")


def unchecked_exit(results: dict) -> int:
    """The documented exit of a run that could not check some claims and saw no
    promise broken: 2, or 1 where it also left objects behind (leftovers outrank)."""
    return 1 if results["run"]["leftovers"] else 2


def not_applicable(check: dict) -> bool:
    """A claim skipped because where it ran lacks what it needs (a StorageClass
    that provisions no ReadWriteMany, for the two-node across-pod claims): not a
    pass, and not a promise seen to hold or break either."""
    return check["outcome"] == "skipped" and (check.get("message") or "").startswith("Skipped: not applicable")


def well_before(timeout: float) -> float:
    """The bound a test puts on a path that must END ON ITS EVENT rather than on
    `timeout`: half of it. A bound near the path's own time proves nothing more
    and fails under load (CI on 2 shared cores once took 10.8 s for a 10 s
    bound); the time itself is a figure for tests/benchmark.py, not a claim."""
    return timeout / 2


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
    while '"step"' in line and '"ready": true' not in line:  # the steps a verb announces before it is ready
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


RESTRICTED = pod_security("restricted")


def rbac(name: str) -> dict:
    """One document of manifests/rbac.yaml, by its name (podshare, podshare-run,
    podshare-nodes, podshare-confinement: the policy and its binding have one name)."""
    return next(d for d in load_manifests("rbac.yaml") if d["metadata"]["name"] == name
                and d["kind"] not in ("ValidatingAdmissionPolicyBinding",))


def rbac_documents() -> list[dict]:
    return load_manifests("rbac.yaml")


@pytest.fixture(scope="session")
def confinement(kube):
    """The shipped admission policy and its binding in force for the whole session
    (every ServiceAccount test runs confined, as a user's would), then removed."""
    from kubernetes import client
    api = client.AdmissionregistrationV1Api(kube.core.api_client)
    docs = [d for d in rbac_documents() if d["kind"].startswith("ValidatingAdmissionPolicy")]
    made = []
    for doc in docs:
        create, delete = ((api.create_validating_admission_policy, api.delete_validating_admission_policy)
                          if doc["kind"] == "ValidatingAdmissionPolicy" else
                          (api.create_validating_admission_policy_binding,
                           api.delete_validating_admission_policy_binding))
        try:
            create(doc)
            made.append((delete, doc["metadata"]["name"]))
        except client.ApiException as exc:
            if exc.status != 409:  # already there: someone else's, leave it
                raise
    try:
        capped = _install_namespace_cap(kube)
        _wait_until_confining(kube)
        _wait_until_fencing(kube)
        yield
    finally:
        if "capped" in locals():
            _remove_namespace_cap(kube, capped)
        for delete, name in reversed(made):
            delete(name)


def _install_namespace_cap(kube) -> list[dict]:
    """The namespace cap as `podshare namespace-cap-manifest | kubectl apply -f -`
    makes it, with this session's runner image; its objects (none if one was there)."""
    from kubernetes import client, utils
    from podshare import namespace_cap
    docs = list(yaml.safe_load_all(namespace_cap.render(
        os.environ.get("PODSHARE_RUNNER_IMAGE", "podshare.local/runner:dev"),
        cap=40, pull_policy=os.environ.get("PODSHARE_IMAGE_PULL_POLICY", "IfNotPresent"))))  # CI's own runs beside stay below it
    webhook = client.AdmissionregistrationV1Api(kube.core.api_client)
    try:
        webhook.read_validating_webhook_configuration(namespace_cap.NAME)
        return []  # someone else's: leave it
    except client.ApiException as exc:
        if exc.status != 404:
            raise
    for doc in docs:
        utils.create_from_dict(kube.core.api_client, doc)
    return docs


def _remove_namespace_cap(kube, docs: list[dict]) -> None:
    """The webhook first: while it exists and cannot be asked, it refuses."""
    from kubernetes import client
    from podshare import namespace_cap
    if not docs:
        return
    client.AdmissionregistrationV1Api(kube.core.api_client).delete_validating_webhook_configuration(
        namespace_cap.NAME)
    for kind in ("ClusterRoleBinding", "ClusterRole"):
        kube.delete_cluster_scoped(kind, namespace_cap.NAME)
    kube.delete_namespace(namespace_cap.NAMESPACE, timeout=120)


def _wait_until_fencing(kube) -> None:
    """Likewise for podshare-fence and podshare-quota: each refuses a (dry-run) pod
    in a fenced namespace that lacks its object, for anyone."""
    from podshare import fence
    from podshare.retry import NotYet, wait_until
    pod = load_manifests("stranger-pod.yaml")[0]
    pod["metadata"] = {"name": "podshare-fence-check"}
    made = []
    try:
        for lacking, policy in (("NetworkPolicy", "podshare-fence"), ("ResourceQuota", "podshare-quota")):
            name = f"podshare-fencecheck-{uuid.uuid4().hex[:6]}"
            kube.create_namespace(name, {**MANAGED_BY, RUN_ID_LABEL: name, **fence.FENCED, **RESTRICTED})
            made.append(name)
            for doc in fence.documents():
                if doc["kind"] != lacking:
                    kube.create(name, doc)

            def refused(name=name, policy=policy):
                try:
                    kube.create(name, pod, dry_run=True)
                except Exception as exc:  # noqa: BLE001 (a KubeError: the answer is in its text)
                    if f"admission policy {policy} " in str(exc):
                        return
                    raise NotYet(str(exc)) from None
                raise NotYet(f"a pod was admitted in {name}, which lacks its {lacking}")
            wait_until(refused, timeout=60, what=f"the policy {policy} to be in force")
    finally:
        for name in made:
            kube.delete_namespace(name, timeout=60)


def _wait_until_confining(kube) -> None:
    """The API server reads policies from a cache: wait until it refuses a marked
    identity's (impersonated, dry-run) unlabelled namespace."""
    from kubernetes import client
    from podshare.retry import NotYet, wait_until
    name, user = f"podshare-mark-{uuid.uuid4().hex[:6]}", f"podshare-mark-{uuid.uuid4().hex[:6]}"
    mark = next(r for r in rbac("podshare")["rules"] if r["apiGroups"] == ["podshare.io"])
    kube.create_cluster_scoped({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                                "metadata": {"name": name}, "rules": [mark, {"apiGroups": [""], "resources": [
                                    "namespaces"], "verbs": ["create"]}]})
    kube.create_cluster_scoped({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                                "metadata": {"name": name},
                                "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": user}],
                                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                            "name": name}})
    marked = client.ApiClient(kube.configuration)
    marked.set_default_header("Impersonate-User", user)

    def refused(body, by, what):
        def attempt():
            try:
                client.CoreV1Api(marked).create_namespace(body, dry_run="All")
            except client.ApiException as exc:
                if exc.status == 403 and by in (exc.body or ""):
                    return
                raise NotYet(f"{exc.status}: {exc.body}") from None
            raise NotYet(f"{what} was admitted")
        return attempt
    from podshare import namespace_cap
    check = {"metadata": {"name": f"podshare-{namespace_cap.CHECK_RUN_ID}", "labels": {
        **MANAGED_BY, RUN_ID_LABEL: namespace_cap.CHECK_RUN_ID, FENCED_LABEL: "true", **RESTRICTED}}}
    try:
        wait_until(refused({"metadata": {"name": name}}, "podshare-confinement", "an unlabelled namespace"),
                   timeout=30, what="the confinement policy to be in force")
        # the webhook's pod starts from the runner image: on a loaded machine, a while
        wait_until(refused(check, namespace_cap.IN_FORCE, "the cap's check"), timeout=180,
                   what="the namespace cap to be in force")
    finally:
        kube.delete_cluster_scoped("ClusterRoleBinding", name)
        kube.delete_cluster_scoped("ClusterRole", name)


@pytest.fixture
def make_account(kube, podshare_session, tmp_path, confinement):
    """Makes ServiceAccounts, each in a namespace of its own, with copies of the
    shipped ClusterRoles made for it (so a test may change their rules) and bound
    to nothing until asked, with a kubeconfig holding its token; removes them all
    afterwards. The confinement policy is in force."""
    cluster_objects, namespaces = [], []

    def make():
        suffix = uuid.uuid4().hex[:6]
        namespace = f"podshare-rbac-{suffix}"
        kube.create_namespace(namespace, {**MANAGED_BY, RUN_ID_LABEL: podshare_session.run_id, **RESTRICTED})
        namespaces.append(namespace)
        kube.create(namespace, {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "runner"}})
        subject = [{"kind": "ServiceAccount", "name": "runner", "namespace": namespace}]
        # copy name -> the shipped ClusterRoles it holds the rules of
        roles = {f"podshare-test-{suffix}": ("podshare", "podshare-nodes"), f"podshare-run-test-{suffix}": ("podshare-run",)}

        def cluster_role(name: str, rules: list[dict]) -> dict:
            return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                    "metadata": {"name": name, "labels": dict(MANAGED_BY)}, "rules": rules}

        def made(body: dict) -> None:
            kube.create_cluster_scoped(body)
            cluster_objects.append((body["kind"], body["metadata"]["name"]))

        class Account:
            name = f"system:serviceaccount:{namespace}:runner"
            home = namespace
            cluster_role_name, run_role = roles

            holds = roles

            def rules_of(self, shipped: str) -> list[dict]:
                """A shipped ClusterRole's rules, `bind` naming this account's run role."""
                return [{**rule, "resourceNames": [self.run_role]} if rule.get("resourceNames") == ["podshare-run"]
                        else dict(rule) for rule in rbac(shipped)["rules"]]

            def shipped_rules(self, copy: str) -> list[dict]:
                return [rule for shipped in roles[copy] for rule in self.rules_of(shipped)]

            def set_rules(self, copy: str, rules: list[dict]) -> None:
                """Replace the rules of one of this account's ClusterRoles (bindings stay)."""
                kube.delete_cluster_scoped("ClusterRole", copy)
                kube.create_cluster_scoped(cluster_role(copy, rules))

            def bind_cluster_role(self):
                """The ClusterRoles podshare and podshare-nodes, as a user binds them."""
                made({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                      "metadata": {"name": self.cluster_role_name}, "subjects": subject,
                      "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": self.cluster_role_name}})

            def bind_run_role_in(self, target: str):
                """podshare-run inside one namespace, as a user of --namespace binds it."""
                kube.create(target, {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                                     "metadata": {"name": "podshare"}, "subjects": subject,
                                     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                                 "name": self.run_role}})

            def kubeconfig(self):
                token = kube.service_account_token(namespace, "runner", 3600)
                return kubeconfig_for(tmp_path / f"sa-{suffix}.kubeconfig", kube, token=token)

            def options(self) -> list[str]:
                """The suites' options for running as this account."""
                return ["--kubeconfig", str(self.kubeconfig()), "--run-role", self.run_role]

        account = Account()
        for copy in roles:
            made(cluster_role(copy, account.shipped_rules(copy)))
        return account

    yield make
    for kind, name in reversed(cluster_objects):
        kube.delete_cluster_scoped(kind, name)
    for namespace in namespaces:
        kube.delete_namespace(namespace, timeout=120)


@pytest.fixture
def account(make_account):
    """One ServiceAccount (see make_account)."""
    return make_account()
