"""podshare's identity touches only what is its own, and the API server says so:
as the nightly runner's ServiceAccount (as `podshare nightly-manifest` renders
it) and as a user bound to the shipped ClusterRoles, each attempt on a
namespace that is not podshare's is refused with the API's reason, RBAC's or
the admission policy podshare-confinement's (manifests/rbac.yaml). A third
identity holds podshare-run cluster-wide as well (what a careless binding, or
podshare before the confinement, granted): the policy still refuses every
write and exec; reads are then RBAC's alone (README: Security).

The expected answers are the README's table, read from it, so the table is
what this test checks."""
from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import sys
import uuid

import pytest
import urllib3
import yaml
from kubernetes import client

from podshare import MANAGED_BY, RUN_ID_LABEL
from podshare.errors import AccessDenied
from podshare.kube import Kube
from podshare.manifests import MANIFESTS, load_manifests
from podshare.nightly import render

from .conftest import PROJECT, RESTRICTED, rbac, run_suites_as

RBAC, POLICY, ALLOWED = "refused (RBAC)", "refused (policy)", "allowed"
IDENTITIES = ("nightly runner", "ClusterRole user", "careless binding")


def readme_table() -> dict[str, dict[str, str]]:
    """The README's table of what podshare's identity can do: action -> identity -> answer."""
    text = (PROJECT / "README.md").read_text()
    section = re.split(r"\n#+ ", text.split("### What podshare's identity can do", 1)[1])[0]
    table = re.search(r"(^\|.*\n)+", section, re.M)[0]
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in table.splitlines()]
    header, body = rows[0], rows[2:]
    assert tuple(header[1:]) == IDENTITIES, header
    return {row[0]: dict(zip(IDENTITIES, row[1:])) for row in body}


class Identity:
    """Raw requests to the API server as one identity: a bearer token, or the test's
    own client certificate impersonating a user (as `kubectl --as` does)."""

    def __init__(self, kube, token: str | None = None, user: str | None = None) -> None:
        cfg = kube.configuration
        self.base = cfg.host
        self.headers = {"Authorization": f"Bearer {token}"} if token else {"Impersonate-User": user}
        cert = {} if token else {"cert_file": cfg.cert_file, "key_file": cfg.key_file}
        self.http = urllib3.PoolManager(cert_reqs=ssl.CERT_REQUIRED, ca_certs=cfg.ssl_ca_cert, **cert)

    def request(self, method: str, path: str, body: dict | None = None, content_type: str = "application/json"):
        """(status, the API's message)."""
        answer = self.http.request(method, self.base + path, headers={**self.headers, "Content-Type": content_type},
                                   body=json.dumps(body) if body is not None else None, timeout=30, retries=False)
        try:
            message = json.loads(answer.data).get("message", "")
        except ValueError:
            message = answer.data.decode(errors="replace")[:300]
        return answer.status, message


@pytest.fixture(scope="module")
def shipped_roles(kube):
    """The shipped ClusterRoles, as `kubectl apply -f manifests/rbac.yaml` makes them."""
    rbac_api = client.RbacAuthorizationV1Api(kube.core.api_client)
    made = []
    for name in ("podshare", "podshare-run", "podshare-nodes"):
        try:
            rbac_api.create_cluster_role(rbac(name))
            made.append(name)
        except client.ApiException as exc:
            assert exc.status == 409, exc
    yield
    for name in made:
        rbac_api.delete_cluster_role(name)


@pytest.fixture(scope="module")
def victim(kube):
    """A namespace that is not podshare's, with a pod and a ConfigMap in it."""
    name = f"someone-else-{uuid.uuid4().hex[:6]}"
    kube.create_namespace(name, {"team": "payments"})
    kube.create(name, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
                       "data": {"password": "hunter2"}})
    pod = load_manifests("stranger-pod.yaml")[0]
    container = pod["spec"]["containers"][0]
    container["image"] = os.environ.get("PODSHARE_PROBE_IMAGE", container["image"])
    container["imagePullPolicy"] = "IfNotPresent"
    pod["metadata"] = {"name": "app"}
    kube.create(name, pod)
    yield name
    kube.delete_namespace(name, timeout=120)


@pytest.fixture(scope="module")
def identities(kube, confinement, shipped_roles):
    """The three identities, bound as their README column says."""
    rbac_api = client.RbacAuthorizationV1Api(kube.core.api_client)
    docs = [d for d in yaml.safe_load_all(render(pull_policy="Never")) if d["kind"] != "CronJob"]
    nightly_ns = next(d for d in docs if d["kind"] == "Namespace")["metadata"]["name"]
    kube.create_namespace(nightly_ns, next(d for d in docs if d["kind"] == "Namespace")["metadata"]["labels"])
    bindings = []
    for doc in docs:
        if doc["kind"] in ("ServiceAccount", "RoleBinding"):
            kube.create(nightly_ns, doc)
        elif doc["kind"] == "ClusterRoleBinding":
            rbac_api.create_cluster_role_binding(doc)
            bindings.append(doc["metadata"]["name"])
    user, careless = (f"podshare-test-{kind}-{uuid.uuid4().hex[:6]}" for kind in ("user", "careless"))
    for subject, roles in ((user, ("podshare", "podshare-nodes")),
                           (careless, ("podshare", "podshare-nodes", "podshare-run"))):
        for role in roles:
            name = f"{subject}-{role}"
            rbac_api.create_cluster_role_binding({
                "metadata": {"name": name},
                "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": subject}],
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role}})
            bindings.append(name)
    token = kube.service_account_token(nightly_ns, "podshare-runner", 600)
    yield {"nightly runner": Identity(kube, token=token), "ClusterRole user": Identity(kube, user=user),
           "careless binding": Identity(kube, user=careless)}, nightly_ns
    for name in bindings:
        rbac_api.delete_cluster_role_binding(name)
    kube.delete_namespace(nightly_ns, timeout=120)


@pytest.fixture(scope="module")
def podshare_namespace(kube, podshare_session):
    """A namespace labelled as a podshare run's."""
    name = f"podshare-confined-{uuid.uuid4().hex[:6]}"
    kube.create_namespace(name, {**MANAGED_BY, RUN_ID_LABEL: podshare_session.run_id, **RESTRICTED})
    yield name
    kube.delete_namespace(name, timeout=120)


def attempts(victim: str, nightly_ns: str, ours_ns: str) -> dict[str, tuple]:
    """The README's actions as requests: (method, path, body, content type). Writes are
    dry runs: admission still decides them, and a wrong answer harms nothing."""
    ours = f"podshare-{uuid.uuid4().hex[:8]}"
    labels = {**MANAGED_BY, RUN_ID_LABEL: "x", **RESTRICTED}
    return {
        "exec into a pod of another namespace": ("POST", f"/api/v1/namespaces/{victim}/pods/app/exec"
                                                 "?command=true&stdout=true&container=stranger", None),
        "delete a pod of another namespace": ("DELETE", f"/api/v1/namespaces/{victim}/pods/app?dryRun=All", None),
        "create a pod in another namespace": ("POST", f"/api/v1/namespaces/{victim}/pods?dryRun=All",
                                              {"metadata": {"name": "x"}, "spec": {"containers": [
                                                  {"name": "x", "image": "x"}]}}),
        "read a ConfigMap of another namespace": ("GET", f"/api/v1/namespaces/{victim}/configmaps/settings", None),
        "delete a namespace that is not podshare's": ("DELETE", f"/api/v1/namespaces/{victim}?dryRun=All", None),
        "label-forge a namespace (add podshare's labels)": (
            "PATCH", f"/api/v1/namespaces/{victim}?dryRun=All",
            {"metadata": {"labels": {**MANAGED_BY, RUN_ID_LABEL: "forged"}}}, "application/merge-patch+json"),
        "create a namespace without podshare's labels": ("POST", "/api/v1/namespaces?dryRun=All",
                                                         {"metadata": {"name": ours}}),
        "create a podshare namespace with privileged Pod Security": (
            "POST", "/api/v1/namespaces?dryRun=All",
            {"metadata": {"name": ours, "labels": {**labels, "pod-security.kubernetes.io/enforce": "privileged"}}}),
        "create a podshare namespace (restricted)": ("POST", "/api/v1/namespaces?dryRun=All",
                                                     {"metadata": {"name": ours, "labels": labels}}),
        "bind podshare-run to someone else in a podshare namespace": (
            "POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ours_ns}/rolebindings?dryRun=All",
            {"metadata": {"name": "x"}, "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io",
                                                      "name": "mallory"}],
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "podshare-run"}}),
        "create a pod in the nightly's namespace": ("POST", f"/api/v1/namespaces/{nightly_ns}/pods?dryRun=All",
                                                    load_manifests("stranger-pod.yaml")[0]),
    }


def answer_of(status: int, message: str) -> str:
    if status == 403 and "ValidatingAdmissionPolicy 'podshare-confinement'" in message:
        return POLICY
    if status == 403 and re.search(r'cannot \w+ resource "', message):
        return RBAC
    return ALLOWED if status < 300 or status == 400 else f"{status}: {message}"  # 400: exec let through, not upgraded


def test_the_identity_can_do_exactly_what_the_readme_says(identities, victim, podshare_namespace):
    """Every action of the README's table as every identity: the API's answer is
    the table's, and a refusal carries the API's reason (RBAC names verb and
    resource; the policy names itself and why)."""
    expected = readme_table()
    by_name, nightly_ns = identities
    tried = attempts(victim, nightly_ns, podshare_namespace)
    assert set(expected) == set(tried), set(expected) ^ set(tried)
    seen, messages = {}, {}
    for action, (method, path, body, *content_type) in tried.items():
        for name, identity in by_name.items():
            status, message = identity.request(method, path, body, *content_type)
            seen[action, name] = answer_of(status, message)
            messages[action, name] = message
    wrong = {key: (got, expected[key[0]][key[1]], messages[key]) for key, got in seen.items()
             if got != expected[key[0]][key[1]]}
    assert not wrong, json.dumps({f"{a} as {n}": v for (a, n), v in wrong.items()}, indent=1)


def test_a_refusal_by_the_policy_reads_as_a_sentence_in_a_run(account, kube, tmp_path):
    """A run as the confined identity pointed at a namespace that is not podshare's
    (--namespace, with podshare-run bound there) ends with the policy's own words,
    not as an RBAC problem."""
    account.bind_cluster_role()
    account.bind_run_role_in("default")
    try:
        run = run_suites_as(*account.options(), "--namespace", "default", "--reports-dir", str(tmp_path),
                            "-k", "test_hostname_is_the_pod_name_in_every_container", timeout=180)
    finally:
        client.RbacAuthorizationV1Api(kube.core.api_client).delete_namespaced_role_binding(
            "podshare", "default")
    assert run.returncode == 2, run.stdout[-2000:]
    assert "refused by the admission policy podshare-confinement (403), not by RBAC" in run.stdout
    assert "only namespaces labelled app.kubernetes.io/managed-by=podshare" in run.stdout


def test_no_probe_or_pattern_pod_mounts_an_api_token():
    """The pods podshare starts talk to no API: none gets a ServiceAccount token."""
    pods = [d for path in [MANIFESTS / "probe-pod.yaml", MANIFESTS / "stranger-pod.yaml",
                           *sorted((MANIFESTS / "patterns").glob("*.yaml"))]
            for d in load_manifests(path) if d.get("kind") == "Pod"]
    assert len(pods) >= 6
    assert all(p["spec"].get("automountServiceAccountToken") is False for p in pods), [
        p["metadata"]["name"] for p in pods if p["spec"].get("automountServiceAccountToken") is not False]


def test_the_nightly_runner_mounts_a_short_lived_token_only():
    docs = list(yaml.safe_load_all(render()))
    pod = next(d for d in docs if d["kind"] == "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    sources = next(v for v in pod["volumes"] if v["name"] == "api-token")["projected"]["sources"]
    assert next(s for s in sources if "serviceAccountToken" in s)["serviceAccountToken"]["expirationSeconds"] <= 3600
    assert not [d for d in docs if d["kind"] == "ClusterRoleBinding" and d["roleRef"]["name"] != "podshare-nodes"]



def test_gc_as_the_confined_identity_removes_podshare_orphans_and_nothing_else(account, kube, podshare_session):
    """podshare gc keeps working under the policy, and only on what is podshare's:
    an orphaned run namespace goes; namespaces that merely look like podshare's
    stay, and deleting them directly is refused by the policy."""
    orphan_run = f"orphan-{uuid.uuid4().hex[:8]}"
    orphan = f"podshare-{orphan_run}"
    kube.create_namespace(orphan, {**MANAGED_BY, RUN_ID_LABEL: orphan_run, **RESTRICTED})
    decoys = {f"podshare-decoy-{uuid.uuid4().hex[:6]}": labels for labels in (
        {}, dict(MANAGED_BY), {RUN_ID_LABEL: "someone"})}
    for name, labels in decoys.items():
        kube.create_namespace(name, labels)
    account.bind_cluster_role()
    kubeconfig = str(account.kubeconfig())
    try:
        gc = subprocess.run([sys.executable, "-m", "podshare", "gc", "--older-than", "0", "--run-id", orphan_run,
                             "--kubeconfig", kubeconfig], capture_output=True, text=True, timeout=180)
        assert gc.returncode == 0, gc.stdout + gc.stderr
        assert not kube.namespace_exists(orphan)
        as_account = Kube(kubeconfig)
        for name in decoys:
            with pytest.raises(AccessDenied, match="refused by the admission policy podshare-confinement"):
                as_account.delete_namespace(name, timeout=10)
            assert kube.namespace_exists(name)
    finally:
        for name in [orphan, *decoys]:
            kube.delete_namespace(name, timeout=60)
