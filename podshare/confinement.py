"""Whether the run's identity is confined, asked of the API server at the start
of a run, so that a missing policy or binding (a cluster older than 1.30, a
partial apply, a lost mark) stops the run instead of letting it run unconfined
without a word.

The question is a dry run that the admission policy podshare-confinement must
refuse: an unlabelled namespace (where the identity may create namespaces) and
an ExternalName Service in the run's namespace; and, where the identity may
create namespaces, one of the run id that the namespace cap's webhook refuses
with its count (podshare/namespace_cap.py): without the cap, a leaked token
makes namespaces without end. An identity that may do
everything (a cluster administrator) is not what the confinement is for: it
runs, and the report says so. Anyone else whose dry run is let through stops
with one line, unless --unconfined; results.json says which (run.confinement)."""
from __future__ import annotations

from . import MANAGED_BY, RUN_ID_LABEL, namespace_cap
from .errors import AccessDenied, KubeError
from .fence import FENCED, pod_security
from .kube import Kube

POLICY = "podshare-confinement"
CONFINED = f"confined: {POLICY} in force"
ADMINISTRATOR = "unconfined: cluster administrator"
CHECK = "podshare-confinement-check"  # the dry runs' name; nothing is stored


class NotConfined(KubeError):
    """The policy is not in force for a non-administrator, and --unconfined was not given."""


def _let_through(attempt, refuser: str = f"admission policy {POLICY} ") -> str | None:
    """None if `refuser` refused the attempt, else what became of it instead."""
    try:
        attempt()
    except AccessDenied as exc:
        if refuser in str(exc):
            return None
        return f"refused, but not by the {refuser.split()[0]}: {exc}"
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
        self.cap = ""  # the cap's own words: its count and cap

    @property
    def verdict(self) -> str:
        """What results.json records."""
        if self.administrator:
            return ADMINISTRATOR
        if self.holes:
            return f"unconfined: --unconfined ({'; '.join(self.holes)})"
        return f"{CONFINED}; {self.cap}" if self.cap else CONFINED

    def _expect_refused(self, what: str, attempt, refuser: str = f"admission policy {POLICY}",
                        install: str = "apply manifests/rbac.yaml (Kubernetes 1.30+)") -> None:
        seen = _let_through(attempt, refuser + " ")
        if seen is None:
            return
        self.holes.append(f"{what}: {seen}")
        if not self.unconfined_allowed:
            raise NotConfined(
                f"the confinement is not in force for {self.kube.whoami()}: {what} was not refused by the "
                f"{refuser} ({seen}); {install}, or run with --unconfined to run without it", 403)

    def before_namespace(self) -> None:
        """Where the identity may create namespaces: an unlabelled one must be refused."""
        if self.administrator or not self.kube.can_i("create", "namespaces", ""):
            return
        self._expect_refused("a dry-run namespace without podshare's labels",
                             lambda: self.kube.create_namespace(CHECK, {}, dry_run=True))
        labels = {**MANAGED_BY, RUN_ID_LABEL: namespace_cap.CHECK_RUN_ID, **FENCED,
                  **pod_security("restricted")}

        def cap_check():
            try:
                self.kube.create_namespace(f"podshare-{namespace_cap.CHECK_RUN_ID}", labels, dry_run=True)
            except AccessDenied as exc:
                if namespace_cap.IN_FORCE not in str(exc):
                    raise KubeError(f"refused, but not as the cap's check: {exc}", 403) from None
                said = str(exc).split(namespace_cap.IN_FORCE, 1)[1].split(" (the run id", 1)[0]
                self.cap = namespace_cap.IN_FORCE + said
                raise
        self._expect_refused(f"a dry-run namespace of the run id {namespace_cap.CHECK_RUN_ID}", cap_check,
                             refuser=f"admission webhook {namespace_cap.WEBHOOK}",
                             install="install the namespace cap (podshare namespace-cap-manifest | kubectl apply -f -)")

    def in_namespace(self, namespace: str) -> None:
        """In the run's namespace: an ExternalName Service must be refused."""
        if self.administrator:
            return
        service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": CHECK},
                   "spec": {"type": "ExternalName", "externalName": "podshare.invalid"}}
        self._expect_refused(f"a dry-run ExternalName Service in {namespace}",
                             lambda: self.kube.create(namespace, service, dry_run=True))
