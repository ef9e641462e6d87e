"""The errors podshare reports: what went wrong talking to the cluster, in one line.

The kube layer raises them; every other layer catches them by class and status
(`.status == 404`), never by their text.
"""
from __future__ import annotations

from .retry import GaveUp

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


class KubeError(Exception):
    """A failure talking to the cluster. `status` is the HTTP status where the
    API answered (None when it could not be reached), `reason` the API's reason
    (NotFound, Forbidden, AlreadyExists...), `retry_after` its Retry-After."""

    def __init__(self, message: str, status: int | None = None, reason: str | None = None,
                 retry_after: float | None = None, unreachable: bool = False) -> None:
        super().__init__(message)
        self.status, self.reason, self.retry_after = status, reason, retry_after
        self.unreachable = unreachable

    @property
    def quota_busy(self) -> bool:
        """409 on the namespace's ResourceQuota: creates side by side updated it first
        and this one was not admitted; nothing was made, the same request may go again."""
        return self.status == 409 and self.reason == "Conflict" and "resourcequotas" in str(self)

    @property
    def retryable(self) -> bool:
        """Worth trying again inside a wait: throttled, a server error, or no answer at all."""
        return self.unreachable or self.status in RETRYABLE_STATUSES


class AccessDenied(KubeError):
    """401 or 403: no test can get past it."""


class PodNotReady(KubeError):
    """The pod reached a state from which it will not become ready by itself.
    `outside` where the cause is not the promise under test but the cluster's
    (an image the node cannot get, no node that takes the pod): its claims could
    not be checked; otherwise (a crash, a readiness probe that never passes) its
    claims, which rely on the pod, see the promise not kept."""

    def __init__(self, message: str, outside: bool = False, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.outside = outside


class SandboxRefused(PodNotReady):
    """The kubelet (or the runtime behind it) could not create the pod's sandbox as
    asked, e.g. in a user namespace on a runtime that does not support one."""


# What the harness itself can fail with (as opposed to a claim's assertion).
HARNESS_ERRORS: tuple[type[BaseException], ...] = (KubeError, GaveUp)
