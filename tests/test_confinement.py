"""podshare's identity touches only what is its own, and the API server says so:
as the nightly runner's ServiceAccount (as `podshare nightly-manifest` renders
it) and as a user bound to the shipped ClusterRoles, each attempt on a
namespace that is not podshare's is refused with the API's reason, RBAC's or
the admission policy podshare-confinement's (manifests/rbac.yaml). A third
identity holds podshare-run cluster-wide as well (what a careless binding, or
podshare before the confinement, granted): the policy still refuses every
write and exec; reads are then RBAC's alone (docs/security.md).

The expected answers are docs/security.md's table, read from it, so the table is
what this test checks."""
from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import sys
import uuid
from contextlib import contextmanager, nullcontext

import pytest
import urllib3
import yaml
from kubernetes import client

from podshare import MANAGED_BY, RUN_ID_LABEL, fence, namespace_cap
from podshare.errors import AccessDenied
from podshare.fence import FENCED
from podshare.kube import Kube
from podshare.manifests import MANIFESTS, load_manifests
from podshare.nightly import render
from podshare.retry import NotYet, wait_until

from .conftest import PROJECT, RESTRICTED, rbac, run_suites, run_suites_as

RBAC, ALLOWED = "refused (RBAC)", "allowed"
IDENTITIES = ("nightly runner", "ClusterRole user", "careless binding")


SECURITY_DOC = PROJECT / "docs" / "security.md"
TABLE_HEADING = re.compile(r"^#+ What podshare's identity can do\s*$", re.M)


def security_table(text: str | None = None) -> dict[str, dict[str, str]]:
    """docs/security.md's table of what podshare's identity can do: action -> identity -> answer."""
    text = SECURITY_DOC.read_text() if text is None else text
    section = re.split(r"\n#+ ", text[TABLE_HEADING.search(text).end():])[0]
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
    """The three identities, bound as their column of docs/security.md's table says."""
    rbac_api = client.RbacAuthorizationV1Api(kube.core.api_client)
    docs = [d for d in yaml.safe_load_all(render(pull_policy="Never", runner_by_tag=True)) if d["kind"] != "CronJob"]
    nightly_ns = next(d for d in docs if d["kind"] == "Namespace")["metadata"]["name"]
    kube.create_namespace(nightly_ns, next(d for d in docs if d["kind"] == "Namespace")["metadata"]["labels"])
    bindings = []
    for doc in docs:
        if doc["kind"] in ("ServiceAccount", "RoleBinding", "NetworkPolicy", "ResourceQuota", "LimitRange"):
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
    fence.install(kube, nightly_ns)  # made above from the manifest: waits until its quota counts
    token = kube.service_account_token(nightly_ns, "podshare-runner", 600)
    yield {"nightly runner": Identity(kube, token=token), "ClusterRole user": Identity(kube, user=user),
           "careless binding": Identity(kube, user=careless)}, nightly_ns, user
    for name in bindings:
        rbac_api.delete_cluster_role_binding(name)
    kube.delete_namespace(nightly_ns, timeout=120)


def make_podshare_namespace(kube, run_id: str, without: str | None = None) -> str:
    """A namespace labelled as a podshare run's and fenced, with the fence and quota
    of manifests/fence.yaml, but for the one named by `without` (a kind)."""
    name = f"podshare-confined-{uuid.uuid4().hex[:6]}"
    kube.create_namespace(name, {**MANAGED_BY, RUN_ID_LABEL: run_id, **FENCED, **RESTRICTED})
    for doc in fence.documents():
        if doc["kind"] != without:
            kube.create(name, doc)
    if without != "ResourceQuota":
        wait_until(lambda: kube.quota_counting(name, fence.QUOTA) or _not_yet(), timeout=30,
                   what=f"the quota of {name} to count")
    return name


def _not_yet():
    raise NotYet("not yet")


@pytest.fixture(scope="module")
def podshare_namespaces(kube, podshare_session, identities):
    """Three podshare namespaces, where the ClusterRole user holds podshare-run as a
    run binds it: one as a run makes it (the own namespace of the ClusterRole user and
    the careless binding), one without the fence, one without the quota."""
    _, _, user = identities
    made = {key: make_podshare_namespace(kube, podshare_session.run_id, without)
            for key, without in (("own", None), ("unfenced", "NetworkPolicy"), ("unquotaed", "ResourceQuota"))}
    for name in made.values():
        kube.create(name, {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                           "metadata": {"name": "podshare-run"},
                           "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": user}],
                           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                       "name": "podshare-run"}})
    yield made
    for name in made.values():
        kube.delete_namespace(name, timeout=120)


@pytest.fixture(scope="module")
def high_priority(kube):
    """A PriorityClass above every pod's 0, as a cluster may have."""
    api = client.SchedulingV1Api(kube.core.api_client)
    name = f"podshare-test-high-{uuid.uuid4().hex[:6]}"
    api.create_priority_class({"metadata": {"name": name}, "value": 1000000})
    yield name
    api.delete_priority_class(name)


def pod(**spec) -> dict:
    """A restricted probe pod as podshare starts them (no token), with `spec` on top."""
    body = load_manifests("stranger-pod.yaml")[0]
    body["metadata"] = {"name": "x"}
    body["spec"].update(spec)
    return body


def service(**spec) -> dict:
    return {"metadata": {"name": "x"}, "spec": {"selector": {"a": "b"}, "ports": [{"port": 80}], **spec}}


def network_policy(**spec) -> dict:
    """manifests/fence.yaml's NetworkPolicy podshare-fence, with `spec` on top."""
    body = next(d for d in fence.documents() if d["kind"] == "NetworkPolicy")
    body["spec"].update(spec)
    return body


A_YEAR = 365 * 24 * 3600
CAP_REACHED = "create a podshare namespace with the namespace cap reached"  # asked with the cap at 0


@contextmanager
def cap_set_to(kube, cap: int):
    """The namespace cap's ConfigMap says `cap` (the webhook reads it at each request)."""
    before = kube.configmap_data(namespace_cap.NAMESPACE, namespace_cap.NAME)["cap"]
    kube.update_configmap_data(namespace_cap.NAMESPACE, namespace_cap.NAME, {"cap": str(cap)})
    try:
        yield
    finally:
        kube.update_configmap_data(namespace_cap.NAMESPACE, namespace_cap.NAME, {"cap": before})


def attempts(victim: str, nightly_ns: str, ns: dict[str, str], priority: str) -> dict[str, tuple]:
    """The table's actions as requests: (method, path, body, content type); "{own}"
    in a path is the identity's own namespace (the nightly's for its runner, a run's
    for the others). Writes are dry runs: admission still decides them, and a wrong
    answer harms nothing."""
    run_id = uuid.uuid4().hex[:8]
    ours = f"podshare-{run_id}"
    labels = {**MANAGED_BY, RUN_ID_LABEL: run_id, **FENCED, **RESTRICTED}

    def namespace(name: str = ours, more_labels: dict | None = None, **metadata) -> tuple:
        body = {"metadata": {"name": name, "labels": {**labels, **(more_labels or {})}, **metadata}}
        return "POST", "/api/v1/namespaces?dryRun=All", body
    rbac_path = "/apis/rbac.authorization.k8s.io/v1/namespaces"
    own_pods, own_services = "/api/v1/namespaces/{own}/pods?dryRun=All", "/api/v1/namespaces/{own}/services?dryRun=All"
    own_policies = "/apis/networking.k8s.io/v1/namespaces/{own}/networkpolicies?dryRun=All"
    token_volume = {"name": "token", "projected": {"sources": [{"serviceAccountToken": {
        "path": "token", "expirationSeconds": A_YEAR}}]}}
    return {
        "exec into a pod of another namespace": ("POST", f"/api/v1/namespaces/{victim}/pods/app/exec"
                                                 "?command=true&stdout=true&container=stranger", None),
        "delete a pod of another namespace": ("DELETE", f"/api/v1/namespaces/{victim}/pods/app?dryRun=All", None),
        "create a pod in another namespace": ("POST", f"/api/v1/namespaces/{victim}/pods?dryRun=All",
                                              {"metadata": {"name": "x"}, "spec": {"containers": [
                                                  {"name": "x", "image": "x"}]}}),
        "read a ConfigMap of another namespace": ("GET", f"/api/v1/namespaces/{victim}/configmaps/settings", None),
        "delete a namespace that is not podshare's": ("DELETE", f"/api/v1/namespaces/{victim}?dryRun=All", None),
        "delete the nightly's namespace": ("DELETE", f"/api/v1/namespaces/{nightly_ns}?dryRun=All", None),
        "label-forge a namespace (add podshare's labels)": (
            "PATCH", f"/api/v1/namespaces/{victim}?dryRun=All",
            {"metadata": {"labels": {**MANAGED_BY, RUN_ID_LABEL: "forged", **FENCED}}}, "application/merge-patch+json"),
        "create a namespace without podshare's labels": ("POST", "/api/v1/namespaces?dryRun=All",
                                                         {"metadata": {"name": ours}}),
        "create a podshare namespace with privileged Pod Security": namespace(
            more_labels={"pod-security.kubernetes.io/enforce": "privileged"}),
        "create a podshare namespace with Pod Security enforce-version v1.0": namespace(
            more_labels={"pod-security.kubernetes.io/enforce-version": "v1.0"}),
        "create a podshare namespace not named podshare-<run id>": namespace("kube-public-podshare"),
        "create a podshare namespace with a label that is not podshare's": namespace(more_labels={"team": "payments"}),
        "create a podshare namespace with a finalizer": namespace(finalizers=["example.com/hold"]),
        "create the nightly's namespace as a run's (run id nightly)": (
            "POST", "/api/v1/namespaces?dryRun=All",
            {"metadata": {"name": "podshare-nightly", "labels": {**labels, RUN_ID_LABEL: "nightly"}}}),
        "create a podshare namespace (restricted)": namespace(),
        CAP_REACHED: namespace(),
        "bind podshare-run to someone else in a podshare namespace": (
            "POST", f"{rbac_path}/{ns['own']}/rolebindings?dryRun=All",
            {"metadata": {"name": "x"}, "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io",
                                                      "name": "mallory"}],
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "podshare-run"}}),
        "create a pod in the nightly's namespace": ("POST", f"/api/v1/namespaces/{nightly_ns}/pods?dryRun=All",
                                                    pod()),
        "start a pod as the nightly runner's ServiceAccount with a year-long token": (
            "POST", f"/api/v1/namespaces/{nightly_ns}/pods?dryRun=All",
            pod(serviceAccountName="podshare-runner", volumes=[*pod()["spec"]["volumes"], token_volume])),
        "start a pod that mounts its ServiceAccount's token": ("POST", own_pods, pod(automountServiceAccountToken=True)),
        "start a pod with a priorityClassName above 0": ("POST", own_pods, pod(priorityClassName=priority)),
        "start a pod on a node of its choosing (nodeName)": ("POST", own_pods, pod(nodeName="podshare-no-such-node")),
        "start a pod in a podshare namespace without its fence": (
            "POST", f"/api/v1/namespaces/{ns['unfenced']}/pods?dryRun=All", pod()),
        "start a pod in a podshare namespace without its quota": (
            "POST", f"/api/v1/namespaces/{ns['unquotaed']}/pods?dryRun=All", pod()),
        "create a NodePort Service in a podshare namespace without its quota": (
            "POST", f"/api/v1/namespaces/{ns['unquotaed']}/services?dryRun=All", service(type="NodePort")),
        "create a ConfigMap in a podshare namespace without its quota": (
            "POST", f"/api/v1/namespaces/{ns['unquotaed']}/configmaps?dryRun=All", {"metadata": {"name": "x"}}),
        "create a PersistentVolumeClaim in a podshare namespace without its quota": (
            "POST", f"/api/v1/namespaces/{ns['unquotaed']}/persistentvolumeclaims?dryRun=All",
            {"metadata": {"name": "x"}, "spec": {"accessModes": ["ReadWriteOnce"],
                                                 "resources": {"requests": {"storage": "64Mi"}}}}),
        "start a pod as podshare does, in its own namespace": ("POST", own_pods, pod()),
        "create a Service with externalIPs (CVE-2020-8554)": ("POST", own_services,
                                                               service(externalIPs=["203.0.113.7"])),
        "create a Service of type LoadBalancer": ("POST", own_services, service(type="LoadBalancer")),
        "create a Service of type ExternalName": ("POST", own_services,
                                                  {"metadata": {"name": "x"}, "spec": {
                                                      "type": "ExternalName", "externalName": "example.com"}}),
        "create a NodePort Service on a node port of its choosing": (
            "POST", own_services, service(type="NodePort", ports=[{"port": 80, "nodePort": 30080}])),
        "create the reverse-proxy pattern's NodePort Service": ("POST", own_services, service(type="NodePort")),
        "create a NetworkPolicy that opens egress": (
            "POST", "/apis/networking.k8s.io/v1/namespaces/{own}/networkpolicies?dryRun=All",
            {"metadata": {"name": "podshare-fence"}, "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                                                              "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]}}),
        "create a NetworkPolicy that opens ingress with an empty rule": (
            "POST", own_policies, network_policy(ingress=[{}])),
        "create a NetworkPolicy that opens ingress with an empty from": (
            "POST", own_policies, network_policy(ingress=[{"from": []}])),
        "create a NetworkPolicy that opens ingress on a port range": (
            "POST", own_policies, network_policy(ingress=[{"ports": [{"port": 80, "endPort": 65535}]}])),
        "create the fence of manifests/fence.yaml in a podshare namespace without it": (
            "POST", f"/apis/networking.k8s.io/v1/namespaces/{ns['unfenced']}/networkpolicies?dryRun=All",
            network_policy()),
        "delete its namespace's fence": (
            "DELETE", "/apis/networking.k8s.io/v1/namespaces/{own}/networkpolicies/podshare-fence?dryRun=All", None),
        "delete its namespace's quota": ("DELETE", "/api/v1/namespaces/{own}/resourcequotas/podshare-quota?dryRun=All",
                                         None),
        "create a ConfigMap with a finalizer": ("POST", "/api/v1/namespaces/{own}/configmaps?dryRun=All",
                                                {"metadata": {"name": "x", "finalizers": ["example.com/hold"]}}),
    }


def answer_of(method: str, path: str, status: int, message: str) -> str:
    """The refusing layer, in the table's words: RBAC, or the admission policy or webhook by name."""
    policy = re.search(r"ValidatingAdmissionPolicy '(podshare-[a-z-]+)'", message)
    if status in (403, 422) and policy:  # 422: a parameter not found (no fence, no quota)
        return f"refused ({policy[1]})"
    webhook = re.search(r'admission webhook "[^"]+" denied the request: (podshare-[a-z-]+):', message)
    if status == 403 and webhook:
        return f"refused ({webhook[1]})"
    if status == 403 and re.search(r'cannot \w+ resource "', message):
        return RBAC
    if status < 300 or (status == 400 and path.split("?")[0].endswith("/exec")):  # exec let through, not upgraded
        return ALLOWED
    return f"{status}: {message}"


def test_the_identity_can_do_exactly_what_the_security_doc_says(kube, identities, victim, podshare_namespaces,
                                                                high_priority):
    """Every action of docs/security.md's table as every identity: the API's answer is
    the table's, and a refusal carries the API's reason (RBAC names verb and
    resource; a policy names itself and why)."""
    expected = security_table()
    by_name, nightly_ns, _ = identities
    tried = attempts(victim, nightly_ns, podshare_namespaces, high_priority)
    assert set(expected) == set(tried), set(expected) ^ set(tried)
    own = {"nightly runner": nightly_ns, "ClusterRole user": podshare_namespaces["own"],
           "careless binding": podshare_namespaces["own"]}
    seen, messages = {}, {}
    for action, (method, path, body, *content_type) in tried.items():
        for name, identity in by_name.items():
            where = path.replace("{own}", own[name])
            with cap_set_to(kube, 0) if action == CAP_REACHED else nullcontext():
                status, message = identity.request(method, where, body, *content_type)
            seen[action, name] = answer_of(method, where, status, message)
            messages[action, name] = message
    wrong = {key: (got, expected[key[0]][key[1]], messages[key]) for key, got in seen.items()
             if got != expected[key[0]][key[1]]}
    assert not wrong, json.dumps({f"{a} as {n}": v for (a, n), v in wrong.items()}, indent=1)


def test_the_identity_makes_no_more_podshare_namespaces_than_the_cap(kube, identities, podshare_session):
    """The cap counts the run namespaces that exist, the identity's own among them:
    with room for a few more, the identity makes them, and the next is refused
    with the count. (Other runs may make and delete theirs meanwhile: the
    webhook's own count says where it stood.)"""
    by_name, _, _ = identities
    user = by_name["ClusterRole user"]
    existing = len(kube.list_namespaces(namespace_cap.RUN_SELECTOR))
    made, refusal = [], None
    try:
        with cap_set_to(kube, existing + 3):
            for _ in range(12):
                run_id = f"capped-{uuid.uuid4().hex[:8]}"
                status, message = user.request("POST", "/api/v1/namespaces", {"metadata": {
                    "name": f"podshare-{run_id}", "labels": {**MANAGED_BY, RUN_ID_LABEL: run_id, **FENCED,
                                                             **RESTRICTED}}})
                if status != 201:
                    refusal = status, message
                    break
                made.append(f"podshare-{run_id}")
    finally:
        for name in made:
            kube.delete_namespace(name, timeout=120)
    assert refusal, f"{len(made)} namespaces made, none refused"
    assert answer_of("POST", "/api/v1/namespaces", *refusal) == "refused (podshare-namespace-cap)", refusal
    count, cap = map(int, re.search(r"(\d+) podshare run namespaces exist and the cap is (\d+)", refusal[1]).groups())
    assert cap == existing + 3 and count >= cap, refusal
    assert made, "the first was refused: the cap was reached by others' runs alone"


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
    docs = list(yaml.safe_load_all(render(runner_by_tag=True)))
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


def test_the_quota_the_policy_demands_is_the_quota_a_run_makes():
    """podshare-quota refuses pods unless the namespace's quota bounds each resource
    at most as manifests/fence.yaml does: the two lists are one."""
    caps = next(v["expression"] for v in rbac("podshare-quota")["spec"]["variables"] if v["name"] == "caps")
    demanded = dict(re.findall(r"'([a-z.-]+)': '([0-9A-Za-z]+)'", caps))
    made = next(d for d in fence.documents() if d["kind"] == "ResourceQuota")["spec"]["hard"]
    assert demanded == {k: str(v) for k, v in made.items()}


def test_the_nightly_manifest_names_its_runner_by_digest():
    """A tag can be moved to an image that then runs with the runner's rights."""
    with pytest.raises(ValueError, match="by digest"):
        render(images={"runner": "registry.example/podshare/runner:0.1.0"})
    pinned = "registry.example/podshare/runner@sha256:" + "0" * 64
    docs = list(yaml.safe_load_all(render(images={"runner": pinned})))
    cronjob = next(d for d in docs if d["kind"] == "CronJob")
    assert cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"] == pinned
    namespace = next(d for d in docs if d["kind"] == "Namespace")
    assert namespace["metadata"]["labels"][fence.FENCED_LABEL] == "true"
    assert {d["kind"] for d in docs if d["metadata"].get("namespace") == namespace["metadata"]["name"]} >= {
        "NetworkPolicy", "ResourceQuota", "LimitRange"}


def unmarked(account) -> None:
    """The account's ClusterRoles without podshare's mark: for it, the policy is not in force."""
    for copy in (account.cluster_role_name, account.run_role):
        account.set_rules(copy, [r for r in account.shipped_rules(copy) if r["apiGroups"] != ["podshare.io"]])


def test_a_run_the_policy_does_not_confine_stops_unless_unconfined(account, tmp_path):
    """A non-administrator for whom the policy is not in force (here: its mark is
    missing; alike for a missing policy or binding) stops at the start with one
    line; with --unconfined it runs, and results.json says so."""
    account.bind_cluster_role()
    unmarked(account)
    claim = ("-k", "test_hostname_is_the_pod_name_in_every_container")
    stopped = run_suites_as(*account.options(), "--reports-dir", str(tmp_path / "stopped"), *claim, timeout=300)
    assert stopped.returncode == 2, stopped.stdout[-2000:]
    line = "the confinement is not in force for system:serviceaccount:"
    assert line in stopped.stdout, stopped.stdout[-2000:]
    assert "was not refused by the admission policy podshare-confinement" in stopped.stdout
    ran = run_suites_as(*account.options(), "--unconfined", "--reports-dir", str(tmp_path / "ran"), *claim,
                        timeout=300)
    results = json.loads((tmp_path / "ran" / "results.json").read_text())
    assert ran.returncode == 0, ran.stdout[-2000:]
    assert results["run"]["confinement"].startswith("unconfined: --unconfined (a dry-run namespace without")


def test_an_administrators_run_is_recorded_as_such_and_fences_its_namespace(kube, confinement, tmp_path):
    """CI's runs are an administrator's: they run, say so, and their namespace is
    fenced like anyone's (labelled, the fence, the quota and the limits, before any pod)."""
    run_id = f"fenced-{uuid.uuid4().hex[:8]}"
    name = f"podshare-{run_id}"
    try:
        run = run_suites("--run-id", run_id, "--keep", "always", "--reports-dir", str(tmp_path),
                         "-k", "test_hostname_is_the_pod_name_in_every_container", timeout=300)
        assert run.returncode == 0, run.stdout[-2000:]
        assert json.loads((tmp_path / "results.json").read_text())["run"]["confinement"] == \
            "unconfined: cluster administrator"
        assert kube.core.read_namespace(name).metadata.labels[fence.FENCED_LABEL] == "true"
        made = {(d["kind"], d["metadata"]["name"]) for d in fence.documents()}
        networking = client.NetworkingV1Api(kube.core.api_client)
        found = {("NetworkPolicy", p.metadata.name) for p in networking.list_namespaced_network_policy(name).items}
        found |= {("ResourceQuota", q.metadata.name) for q in kube.core.list_namespaced_resource_quota(name).items}
        found |= {("LimitRange", r.metadata.name) for r in kube.core.list_namespaced_limit_range(name).items}
        assert found == made
    finally:
        kube.delete_namespace(name, timeout=120)


def test_a_confined_run_without_the_namespace_cap_stops_unless_unconfined(account, kube, tmp_path):
    """The cap's webhook removed (as on a cluster where only rbac.yaml was applied):
    a confined run that may create namespaces stops at the start with one line
    naming the cap; with --unconfined it runs and results.json says what was let
    through. The webhook comes back as it was."""
    api = client.AdmissionregistrationV1Api(kube.core.api_client)
    saved = api.read_validating_webhook_configuration(namespace_cap.NAME)
    body = client.ApiClient().sanitize_for_serialization(saved)
    body["metadata"] = {k: v for k, v in body["metadata"].items() if k in ("name", "labels")}
    account.bind_cluster_role()
    as_account = Kube(str(account.kubeconfig()))
    check = f"podshare-{namespace_cap.CHECK_RUN_ID}"
    labels = {**MANAGED_BY, RUN_ID_LABEL: namespace_cap.CHECK_RUN_ID, **FENCED, **RESTRICTED}

    def cap_check_admitted():
        try:
            as_account.create_namespace(check, labels, dry_run=True)
        except AccessDenied as exc:
            raise NotYet(str(exc)) from None
    claim = ("-k", "test_hostname_is_the_pod_name_in_every_container")
    api.delete_validating_webhook_configuration(namespace_cap.NAME)
    try:
        wait_until(cap_check_admitted, timeout=60, what="the API server to drop the cap's webhook")
        stopped = run_suites_as(*account.options(), "--reports-dir", str(tmp_path / "stopped"), *claim, timeout=300)
        ran = run_suites_as(*account.options(), "--unconfined", "--reports-dir", str(tmp_path / "ran"), *claim,
                            timeout=300)
    finally:
        api.create_validating_webhook_configuration(body)

        def cap_check_refused():
            try:
                as_account.create_namespace(check, labels, dry_run=True)
            except AccessDenied as exc:
                if namespace_cap.IN_FORCE in str(exc):
                    return
                raise
            raise NotYet("the cap's check was admitted")
        wait_until(cap_check_refused, timeout=60, what="the cap to be in force again")
    assert stopped.returncode == 2, stopped.stdout[-2000:]
    assert (f"was not refused by the admission webhook {namespace_cap.WEBHOOK} (admitted); install the namespace cap"
            in stopped.stdout), stopped.stdout[-2000:]
    results = json.loads((tmp_path / "ran" / "results.json").read_text())
    assert ran.returncode == 0, ran.stdout[-2000:]
    assert results["run"]["confinement"] == (
        f"unconfined: --unconfined (a dry-run namespace of the run id {namespace_cap.CHECK_RUN_ID}: admitted)")
