"""Whether the run's identity is confined, asked of the API server at the start
of a run, so that a missing policy or binding (a cluster older than 1.30, a
partial apply, a lost mark) stops the run instead of letting it run unconfined
without a word.

The question is a dry run that the admission policy podshare-confinement must
refuse: an unlabelled namespace (where the identity may create namespaces) and
an ExternalName Service in the run's namespace. An identity that may do
everything (a cluster administrator) is not what the confinement is for: it
runs, and the report says so. Anyone else whose dry run is let through stops
with one line, unless --unconfined; results.json says which (run.confinement)."""
from __future__ import annotations

from .errors import AccessDenied, KubeError
from .kube import Kube

POLICY = "podshare-confinement"
CONFINED = f"confined: {POLICY} in force"
ADMINISTRATOR = "unconfined: cluster administrator"
CHECK = "podshare-confinement-check"  # the dry runs' name; nothing is stored


class NotConfined(KubeError):
    """The policy is not in force for a non-administrator, and --unconfined was not given."""


def _let_through(attempt) -> str | None:
    """None if the policy refused the attempt, else what became of it instead."""
    try:
        attempt()
    except AccessDenied as exc:
        if f"admission policy {POLICY} " in str(exc):
            return None
        return f"refused, but not by the policy: {exc}"
    except KubeError as exc:
        return f"{exc}"
    return "admitted"


class Confinement:
    """The start-of-run check for one identity (see the module's docstring)."""

    def __init__(self, kube: Kube, unconfined_allowed: bool) -> None:
        self.kube = kube
        self.unconfined_allowed = unconfined_allowed
        self.administrator = kube.can_i("*", "*", "", group="*")
        self.holes: list[str] = []

    @property
    def verdict(self) -> str:
        """What results.json records."""
        if self.administrator:
            return ADMINISTRATOR
        if self.holes:
            return f"unconfined: --unconfined ({'; '.join(self.holes)})"
        return CONFINED

    def _expect_refused(self, what: str, attempt) -> None:
        seen = _let_through(attempt)
        if seen is None:
            return
        self.holes.append(f"{what}: {seen}")
        if not self.unconfined_allowed:
            raise NotConfined(
                f"the confinement is not in force for {self.kube.whoami()}: {what} was not refused by the "
                f"admission policy {POLICY} ({seen}); apply manifests/rbac.yaml (Kubernetes 1.30+), "
                "or run with --unconfined to run without it", 403)

    def before_namespace(self) -> None:
        """Where the identity may create namespaces: an unlabelled one must be refused."""
        if self.administrator or not self.kube.can_i("create", "namespaces", ""):
            return
        self._expect_refused("a dry-run namespace without podshare's labels",
                             lambda: self.kube.create_namespace(CHECK, {}, dry_run=True))

    def in_namespace(self, namespace: str) -> None:
        """In the run's namespace: an ExternalName Service must be refused."""
        if self.administrator:
            return
        service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": CHECK},
                   "spec": {"type": "ExternalName", "externalName": "podshare.invalid"}}
        self._expect_refused(f"a dry-run ExternalName Service in {namespace}",
                             lambda: self.kube.create(namespace, service, dry_run=True))
