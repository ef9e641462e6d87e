"""The kube layer: the only code in podshare that talks to the Kubernetes API.

Config loading, create/read/delete, the waits for deletions (through
podshare.retry), the exec stream, events and logs. Every call goes through one
funnel, `api_call` (podshare.kube_calls): an API failure leaves as a KubeError
with the HTTP status, the API's reason and one line naming the cause; callers
test `.status == 404`, and waits retry what `.retryable` says they may.
"""
from __future__ import annotations

import json
import os
import re
import threading
from typing import Any, Callable

from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException
from kubernetes.stream import stream

from .errors import KubeError
from .kube_calls import COST, _absent_ok, api_call
from .retry import GaveUp, NotYet, wait_until

# How long a create may keep meeting its namespace's ResourceQuota being updated
# by the creates beside it (409 Conflict on resourcequotas) before that is its answer.
QUOTA_BUSY_FOR = 30.0


class Kube:
    """A connection to one cluster."""

    def __init__(self, kubeconfig: str | None = None, context: str | None = None) -> None:
        cfg = client.Configuration()
        self.context = context
        path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or os.path.expanduser("~/.kube/config")
        in_cluster = "KUBERNETES_SERVICE_HOST" in os.environ and not (kubeconfig or context or os.environ.get("KUBECONFIG"))
        try:
            if in_cluster:
                config.load_incluster_config(client_configuration=cfg)
                self.context, self.source = "in-cluster", "in-cluster service account"
            elif not os.path.exists(path):
                raise KubeError(f"no kubeconfig at {path} (set --kubeconfig, $KUBECONFIG or ~/.kube/config) "
                                "and not running inside a cluster")
            else:
                config.load_kube_config(config_file=path, context=context, client_configuration=cfg)
                if not context:
                    _, active = config.list_kube_config_contexts(config_file=path)
                    self.context = active["name"]
                self.source = f"kubeconfig {path}"
        except (ConfigException, OSError, TypeError, ValueError) as exc:
            raise KubeError(f"cannot load the cluster config from {path}: {exc}") from None
        cfg.retries = 2
        self.server = cfg.host
        self.core = client.CoreV1Api(client.ApiClient(cfg))
        self._version = client.VersionApi(self.core.api_client)
        self._rbac = client.RbacAuthorizationV1Api(self.core.api_client)
        self._node_api = client.NodeV1Api(self.core.api_client)
        self._networking = client.NetworkingV1Api(self.core.api_client)
        self._authn = client.AuthenticationV1Api(self.core.api_client)
        self._authz = client.AuthorizationV1Api(self.core.api_client)
        self._storage = client.StorageV1Api(self.core.api_client)
        self.configuration = cfg
        self.warnings: list[str] = []
        # stream() swaps the ApiClient's request method while it connects:
        # execs get their own client and connect one at a time.
        self._exec_core = client.CoreV1Api(client.ApiClient(cfg))
        self._exec_lock = threading.Lock()

    # ------------------------------------------------------------ cluster
    def server_version(self) -> str:
        return api_call("read the server version", self._version.get_code).git_version

    def nodes(self, label_selector: str | None = None) -> list[client.V1Node]:
        return api_call("list nodes", self.core.list_node, label_selector=label_selector or "").items

    def node(self, name: str, timeout: float | None = None) -> client.V1Node:
        return api_call(f"read node {name}", self.core.read_node, name, _request_timeout=timeout)

    def kubelet_config(self, node: str) -> dict[str, Any]:
        """The node's kubelet configuration as the kubelet itself serves it (configz,
        through the API server's node proxy: RBAC nodes/proxy get)."""
        raw = api_call(f"read the kubelet configuration (configz) of node {node}",
                       self.core.connect_get_node_proxy_with_path, node, "configz", _preload_content=False)
        return json.loads(raw.data).get("kubeletconfig", {})

    def runtime_class(self, name: str) -> client.V1RuntimeClass:
        return api_call(f"read RuntimeClass {name}", self._node_api.read_runtime_class, name)

    # ------------------------------------------------------------ who we are, what we may do
    def whoami(self) -> str:
        """The user name the API server authenticated us as (SelfSubjectReview)."""
        review = api_call("ask the API server who we are", self._authn.create_self_subject_review,
                          {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
        return review.status.user_info.username

    def can_i(self, verb: str, resource: str, namespace: str, group: str = "") -> bool:
        """Whether RBAC lets us `verb` `resource` in `namespace` ("": cluster-wide)
        (SelfSubjectAccessReview)."""
        body = {"spec": {"resourceAttributes": {"verb": verb, "resource": resource, "namespace": namespace,
                                                "group": group}}}
        review = api_call(f"ask whether we may {verb} {resource} in {namespace or 'the cluster'}",
                          self._authz.create_self_subject_access_review, body)
        return bool(review.status.allowed)

    def bind_self(self, namespace: str, cluster_role: str, labels: dict[str, str], timeout: float = 10) -> None:
        """Bind a ClusterRole to ourselves inside one namespace, and wait until the
        authorizer honours it (RBAC reads bindings from a cache). A role that never
        grants creating pods is not waited for longer: the run's next call names
        what is missing in the API's own words."""
        user = self.whoami()
        sa = re.fullmatch(r"system:serviceaccount:([^:]+):([^:]+)", user)
        subject = ({"kind": "ServiceAccount", "namespace": sa[1], "name": sa[2]} if sa else
                   {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": user})
        self.create(namespace, {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                                "metadata": {"name": cluster_role, "labels": labels}, "subjects": [subject],
                                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                            "name": cluster_role}})

        def honoured():
            if not self.can_i("create", "pods", namespace):
                raise NotYet(f"the RoleBinding to {cluster_role} in {namespace} is not in force yet")
        try:
            wait_until(honoured, timeout=timeout, what=f"the RoleBinding to {cluster_role} in {namespace}")
        except GaveUp:
            pass

    # ------------------------------------------------------------ namespaces
    def namespace_exists(self, name: str) -> bool:
        return _absent_ok(f"read namespace {name}", self.core.read_namespace, name) is not None

    def create_namespace(self, name: str, labels: dict[str, str], dry_run: bool = False) -> None:
        body = {"metadata": {"name": name, "labels": labels}}
        api_call(f"create namespace {name}", self.core.create_namespace, body,
                 **({"dry_run": "All"} if dry_run else {}))

    def quota_counting(self, namespace: str, name: str) -> bool:
        """Whether a ResourceQuota's usage is known yet: until the quota controller
        has counted, quota admission refuses every pod ("status unknown for quota")."""
        quota = api_call(f"read resourcequota {name} in {namespace}", self.core.read_namespaced_resource_quota,
                         name, namespace)
        return bool(quota.status and quota.status.hard and quota.status.used is not None)

    def delete_namespace(self, name: str, timeout: float) -> list[str]:
        """Delete and wait until gone; returns what remained if the wait timed out."""
        if _absent_ok(f"delete namespace {name}", self.core.delete_namespace, name,
                      propagation_policy="Foreground") is None:
            return []

        def gone():
            if self.namespace_exists(name):
                raise NotYet(f"namespace {name} still exists")
        try:
            wait_until(gone, timeout=timeout, what=f"namespace {name} to be deleted")
            return []
        except KubeError as exc:  # could not look: that it is gone is not known
            return [f"namespace/{name} (deleted, but not seen gone: {exc})"]
        except GaveUp:
            try:
                pods = api_call("list pods", self.core.list_namespaced_pod, name).items
            except KubeError:  # e.g. the run's own RoleBinding went first
                return [f"namespace/{name}"]
            return [f"pod/{p.metadata.name}" for p in pods] or [f"namespace/{name}"]

    def storage_class(self, name: str) -> Any:
        return api_call(f"read storageclass {name}", self._storage.read_storage_class, name)

    def pvc(self, namespace: str, name: str) -> Any:
        return api_call(f"read persistentvolumeclaim {name}", self.core.read_namespaced_persistent_volume_claim,
                        name, namespace)

    def storage_classes(self) -> list[Any]:
        return api_call("list storageclasses", self._storage.list_storage_class).items

    def volumes_claimed_in(self, namespace: str) -> list[str]:
        """The PersistentVolumes bound to claims of a namespace (cluster-scoped: a
        provisioner deletes them after their claims go)."""
        pvs = api_call("list persistentvolumes", self.core.list_persistent_volume).items
        return [pv.metadata.name for pv in pvs if pv.spec.claim_ref and pv.spec.claim_ref.namespace == namespace]

    def list_namespaces(self, label_selector: str) -> list[client.V1Namespace]:
        return api_call("list namespaces", self.core.list_namespace, label_selector=label_selector).items

    def list_labelled(self, namespace: str, kind: str, label_selector: str) -> list[Any]:
        fn = {"Pod": self.core.list_namespaced_pod, "ConfigMap": self.core.list_namespaced_config_map,
              "Service": self.core.list_namespaced_service}[kind]
        return api_call(f"list {kind.lower()}s in {namespace}", fn, namespace, label_selector=label_selector).items

    # ------------------------------------------------------------ objects
    def _namespaced(self, verb: str) -> dict[str, Callable]:
        rbac = self._rbac
        return {"Pod": getattr(self.core, f"{verb}_namespaced_pod"),
                "ConfigMap": getattr(self.core, f"{verb}_namespaced_config_map"),
                "Service": getattr(self.core, f"{verb}_namespaced_service"),
                "ServiceAccount": getattr(self.core, f"{verb}_namespaced_service_account"),
                "PersistentVolumeClaim": getattr(self.core, f"{verb}_namespaced_persistent_volume_claim"),
                "NetworkPolicy": getattr(self._networking, f"{verb}_namespaced_network_policy"),
                "ResourceQuota": getattr(self.core, f"{verb}_namespaced_resource_quota"),
                "LimitRange": getattr(self.core, f"{verb}_namespaced_limit_range"),
                "Role": getattr(rbac, f"{verb}_namespaced_role"),
                "RoleBinding": getattr(rbac, f"{verb}_namespaced_role_binding")}

    def create(self, namespace: str, body: dict, dry_run: bool = False) -> Any:
        """Create an object; a dry run is decided by admission as a real one, and stores nothing."""
        kind, name = body["kind"], body["metadata"]["name"]
        create = self._namespaced("create")[kind]
        with_info = getattr(create.__self__, create.__name__ + "_with_http_info")
        action = f"create {kind.lower()} {name} in {namespace}"

        def attempt():
            try:
                return api_call(action, with_info, namespace, body, _return_http_data_only=False,
                                **({"dry_run": "All"} if dry_run else {}))
            except KubeError as exc:
                if exc.quota_busy:  # nothing was made: as the API says, apply it again
                    raise NotYet(str(exc)) from None
                raise
        created, _status, headers = wait_until(attempt, timeout=QUOTA_BUSY_FOR, what=action)
        if dry_run:
            return created
        COST[f"{kind.lower()}s_created"] += 1
        # Admission warnings (e.g. Pod Security "would violate ...") come as headers.
        if headers and headers.get("Warning"):
            self.warnings.append(f"{kind} {namespace}/{name}: {headers.get('Warning')}")
        return created

    def create_cluster_scoped(self, body: dict) -> Any:
        kind = body["kind"]
        fn = {"ClusterRole": self._rbac.create_cluster_role,
              "ClusterRoleBinding": self._rbac.create_cluster_role_binding}[kind]
        return api_call(f"create {kind} {body['metadata']['name']}", fn, body)

    def delete_cluster_scoped(self, kind: str, name: str) -> None:
        fn = {"ClusterRole": self._rbac.delete_cluster_role,
              "ClusterRoleBinding": self._rbac.delete_cluster_role_binding}[kind]
        _absent_ok(f"delete {kind} {name}", fn, name)

    def configmap_data(self, namespace: str, name: str) -> dict[str, str]:
        return api_call(f"read configmap {name} in {namespace}", self.core.read_namespaced_config_map,
                        name, namespace).data or {}

    def update_configmap_data(self, namespace: str, name: str, data: dict[str, str]) -> Any:
        """Replace a ConfigMap's data (a merge patch: keys not in `data` stay)."""
        return api_call(f"update configmap {name} in {namespace}", self.core.patch_namespaced_config_map,
                        name, namespace, {"data": data})

    def service_account_token(self, namespace: str, name: str, seconds: int = 3600) -> str:
        """A short-lived token for a ServiceAccount (TokenRequest API)."""
        body = {"spec": {"expirationSeconds": seconds}}
        return api_call(f"request a token for {namespace}/{name}", self.core.create_namespaced_service_account_token,
                        name, namespace, body).status.token

    def read_pod(self, namespace: str, name: str, timeout: float | None = None) -> client.V1Pod:
        """The pod; `timeout` bounds the request (no bound by default: a frozen API server is waited for)."""
        return api_call(f"read pod {name}", self.core.read_namespaced_pod, name, namespace, _request_timeout=timeout)

    def delete(self, namespace: str, kind: str, name: str) -> None:
        # the pod's own grace period: kubelet confirms the containers ended
        _absent_ok(f"delete {kind.lower()} {name}", self._namespaced("delete")[kind], name, namespace)

    def delete_pod(self, namespace: str, name: str, timeout: float) -> None:
        """Delete a pod and wait until the API no longer has it."""
        pod = _absent_ok(f"read pod {name}", self.core.read_namespaced_pod, name, namespace)
        if pod is None:
            return
        uid = pod.metadata.uid
        self.delete(namespace, "Pod", name)
        self.wait_pod_gone(namespace, name, uid, timeout)

    def wait_pod_gone(self, namespace: str, name: str, uid: str | None, timeout: float) -> None:
        """Wait until the API no longer has this pod (a new pod of the same name is not it)."""
        def gone():
            pod = _absent_ok(f"read pod {name}", self.core.read_namespaced_pod, name, namespace)
            if pod is None:
                return
            if uid is None or pod.metadata.uid == uid:
                raise NotYet(f"pod {name} is {pod.status.phase}, deletion pending")
        wait_until(gone, timeout=timeout, what=f"pod {name} to be deleted")

    def event_records(self, namespace: str, name: str, timeout: float | None = None) -> list[dict[str, Any]]:
        """The events about an object (they outlive a deleted pod), oldest first:
        type, reason, message, time (a datetime or None), the reporting component
        and the part of the object it is about (a container: "spec.containers{beta}")."""
        items = api_call("list events", self.core.list_namespaced_event, namespace,
                         field_selector=f"involvedObject.name={name}", _request_timeout=timeout).items
        records = [{"type": e.type, "reason": e.reason, "message": e.message,
                    "time": e.last_timestamp or e.event_time or e.metadata.creation_timestamp,
                    "source": (e.source.component if e.source else None) or e.reporting_component,
                    "field_path": e.involved_object.field_path if e.involved_object else None}
                   for e in items]
        return sorted(records, key=lambda r: r["time"].isoformat() if r["time"] else "")

    def events(self, namespace: str, name: str) -> list[str]:
        return [f"{e['type']} {e['reason']}: {e['message']}" for e in self.event_records(namespace, name)]

    def read_log(self, namespace: str, pod: str, container: str, tail: int | None = None,
                 timeout: float | None = None) -> str:
        """A container's log for a claim: a refusal is an error, not text. The
        kubelet serves it: a 5xx here is the API server failing to reach the kubelet."""
        return api_call(f"read the log of {pod}/{container}", self.core.read_namespaced_pod_log, pod, namespace,
                        container=container, tail_lines=tail, _request_timeout=timeout)

    def logs(self, namespace: str, pod: str, container: str, previous: bool = False, tail: int = 50) -> str:
        """The tail of a container's log for diagnostics: never raises."""
        try:
            return api_call(f"read the log of {pod}/{container}", self.core.read_namespaced_pod_log, pod, namespace,
                            container=container, previous=previous, tail_lines=tail)
        except KubeError as exc:
            return f"(no logs: {exc})"

    # ------------------------------------------------------------ exec
    def exec_stream(self, namespace: str, pod: str, container: str, argv: list[str]) -> Any:
        """An exec with stdin, stdout and stderr open: the websocket, for the probe channel."""
        with self._exec_lock:
            return api_call(f"exec in {pod}/{container}", stream, self._exec_core.connect_get_namespaced_pod_exec,
                            pod, namespace, container=container, command=argv, stdin=True, stdout=True,
                            stderr=True, tty=False, _preload_content=False)
