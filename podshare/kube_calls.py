"""The funnel every request to the Kubernetes API goes through (`api_call`): an
API failure leaves it as a KubeError with the HTTP status, the API's reason and
one line naming the cause; what is retryable is retried (podshare.retry); every
request is counted (COST, the run's API cost). Part of the kube layer: only
podshare.kube calls the client, through this.
"""
from __future__ import annotations

import errno
import json
import os
import re
from collections import Counter
from typing import Any, Callable

import urllib3
from kubernetes import client
from kubernetes.client.rest import ApiException

from .errors import AccessDenied, KubeError


def _status_body(exc: ApiException) -> dict:
    """The API's Status object (message, reason...) in a failed call, or {}."""
    try:
        body = json.loads(exc.body or "{}")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _unreachable(exc: BaseException) -> str:
    """Why the API server could not be reached, in the system's words (urllib3
    wraps the socket's error in its own reprs: "HTTPSConnection(host=...): Failed
    to establish a new connection: [Errno 111] Connection refused")."""
    chain: BaseException | None = exc
    seen: set[int] = set()
    while chain is not None and id(chain) not in seen:
        seen.add(id(chain))
        if isinstance(chain, OSError) and chain.errno:
            return f"{chain.strerror or os.strerror(chain.errno)} ({errno.errorcode.get(chain.errno, chain.errno)})"
        reason = getattr(chain, "reason", None)
        chain = reason if isinstance(reason, BaseException) else (chain.__cause__ or chain.__context__)
    text = str(getattr(exc, "reason", None) or exc)
    return re.sub(r"<?[\w.]*(?:HTTPS?Connection|Pool)\w*(?:\([^)]*\)| object at 0x[0-9a-f]+>?):? ?", "", text) or text


def _status_and_message(exc: ApiException) -> tuple[int, str]:
    """The HTTP status and the API's message of a failed call. exec is a websocket:
    its refusals arrive as a failed handshake, status 0, the real status in the text."""
    message = _status_body(exc).get("message") or exc.reason
    handshake = re.search(r"Handshake status (\d+)", str(exc.reason or ""))
    if exc.status != 0 or not handshake:
        return exc.status, message
    status, message = int(handshake[1]), _handshake_message(str(exc.reason))
    if status == 403:  # the API's message names no verb for a refused upgrade: we do
        message = (f'cannot create or get resource "pods/exec" (a websocket exec needs both verbs '
                   f'since Kubernetes 1.30); the API said: {message}')
    return status, message


def _describe(status: int, message: str, action: str) -> str:
    """One line naming the action and who refused it (RBAC, an admission policy, Pod Security)."""
    if status == 401:
        return f"{action}: unauthorized (401): the credentials in the kubeconfig are wrong or expired"
    if status in (403, 422) and "ValidatingAdmissionPolicy" in str(message):  # 422: a parameter not found
        policy = re.search(r"ValidatingAdmissionPolicy '([^']+)'", str(message))
        said = str(message).split("denied request: ", 1)[-1]
        return (f"{action}: refused by the admission policy {policy[1] if policy else '?'} ({status}), not by RBAC: "
                f"{said}")
    webhook = re.search(r'admission webhook "([^"]+)" denied the request: (.*)', str(message), re.S)
    if webhook:
        return f"{action}: refused by the admission webhook {webhook[1]} ({status}), not by RBAC: {webhook[2]}"
    unreachable = re.search(r'failed calling webhook "([^"]+)"', str(message))
    if unreachable:  # a webhook that fails closed refuses while it is down
        return f"{action}: the admission webhook {unreachable[1]} could not be asked ({status}): {message}"
    if status == 403 and "violates PodSecurity" in str(message):
        return (f"{action}: refused by Pod Security admission (403), not by RBAC: {message} "
                "(a variant that needs this runs with --pod-security privileged)")
    if status == 403:
        return f"{action}: forbidden (403), RBAC does not allow it: {message}"
    return f"{action}: {status} {message}"


def _handshake_message(reason: str) -> str:
    """The Status message in a failed websocket handshake ("Handshake status 403
    Forbidden -+-+- {headers} -+-+- {body}"), without the headers."""
    parts = reason.split(" -+-+- ")
    try:
        return json.loads(parts[-1]).get("message") or parts[0]
    except ValueError:
        return parts[0]


def to_manifest(obj: Any) -> Any:
    """An API object as a manifest spells it (camelCase dicts), for checks and evidence."""
    return client.ApiClient().sanitize_for_serialization(obj)


def _retry_after(exc: ApiException) -> float | None:
    try:
        return float((exc.headers or {}).get("Retry-After"))
    except (TypeError, ValueError):
        return None


# What this process asked of the API server, for the run's cost (results.json
# run.api_cost; docs/nodes.md: "Large clusters"): every request, retries included.
COST: Counter[str] = Counter()


def api_call(action: str, fn: Callable[..., Any], *args, **kwargs) -> Any:
    """The one funnel to the API: call it, turning client exceptions into
    one-line KubeErrors that carry the status, reason and Retry-After."""
    COST["api_calls"] += 1
    if action.startswith("exec "):
        COST["execs"] += 1
    try:
        return fn(*args, **kwargs)
    except ApiException as exc:
        if isinstance(exc.__context__, (KeyboardInterrupt, SystemExit)):
            # the client's websocket call wraps even Ctrl-C and SIGTERM as status 0: they stop the run
            raise exc.__context__ from None
        status, message = _status_and_message(exc)
        cls = AccessDenied if status in (401, 403) else KubeError
        raise cls(_describe(status, message, action), status, _status_body(exc).get("reason") or exc.reason,
                  _retry_after(exc)) from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise KubeError(f"{action}: cannot reach the API server: {_unreachable(exc)}", unreachable=True) from None


def _absent_ok(action: str, fn: Callable[..., Any], *args, **kwargs) -> Any:
    """api_call where "not found" is an answer (None), not an error."""
    try:
        return api_call(action, fn, *args, **kwargs)
    except KubeError as exc:
        if exc.status == 404:
            return None
        raise
