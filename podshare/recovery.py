"""Recovery where it is cheap: a claim whose probe pod the cluster deleted or
evicted under it is run once more, on a fresh probe set.

Only for that cause: the facts read back from the API (podshare.disruption)
must show the probe set's own pod deleted, being deleted or evicted. A node
NotReady, a silent kubelet or an unreachable API are not cheap to recover from
(a fresh pod would wait on the same node), and a lifecycle or pattern pod is
its claim's own subject: those stay could-not-check. A failure whose diagnosis
finds no disruption is a real failure and is never run again.

Never more than once: each claim is re-run at most once, and each probe set is
replaced at most once per run; a second disruption ends the claims it takes as
could-not-check. The re-run's outcome is the claim's outcome, with what the
first attempt met in its message ("disrupted: pod ... was deleted at ...;
passed on a fresh pod ...") and in its evidence (`first_attempt`).
"""
from __future__ import annotations

from typing import Any, Iterator

import pytest

from .disruption import Disruption
from .errors import HARNESS_ERRORS
from .factory import PodFactory
from .pods import ProbeSet
from .records import PASSED
from .verbs import ProbeContainer

RERUN = pytest.StashKey[tuple]()  # (the first attempt's disruption, what it saw, the fresh pods' names)


def _pod_level(disruption: Disruption, probes: ProbeSet) -> bool:
    """The disruption took one of the probe set's own pods (not its node, not the
    API; not a container the kubelet restarted, nor an eviction for the pod's own
    limits, which a fresh pod would meet again)."""
    return (not disruption.everywhere and disruption.node is None and disruption.container is None
            and not disruption.by_spec
            and any(disruption.covers(p.uid, None) for p in probes.pods))


def _probe_set_of(item: pytest.Item) -> tuple[ProbeSet | None, PodFactory | None]:
    """The run's probe set, where the claim uses it, and the factory that made it
    (a lifecycle claim's own probe set is its subject, not a probe set to replace)."""
    values = [v for value in (getattr(item, "funcargs", None) or {}).values()
              for v in (value if isinstance(value, tuple) else (value,))]  # probes_here: (probe set, stranger)
    factory = next((v for v in values if isinstance(v, PodFactory)), None)
    made = factory.probes[0] if factory is not None and factory.probes else None
    return (made, factory) if made is not None and any(v is made for v in values) else (None, None)


def rerun_message(item: pytest.Item, outcome: str, message: str) -> str:
    """The claim's message with its first attempt in it, for a claim that was re-run:
    a pass leads with the disruption; anything else leads with its own message."""
    if RERUN not in item.stash:
        return message
    disruption, _seen, fresh = item.stash[RERUN]
    on = f"a fresh pod {', '.join(fresh)}"
    if outcome == PASSED:
        return f"disrupted: {disruption.cause}; passed on {on}"
    return f"{message} (re-run on {on}; its first attempt was disrupted: {disruption.cause})"


class Recovery:
    """The hooks (registered beside the PodshareSession): `session` gives the
    cluster and its diagnosis; `disrupted_key` the stash key under which the
    session keeps a claim's disruption."""

    def __init__(self, session: Any, disrupted_key: pytest.StashKey, evidence_key: pytest.StashKey) -> None:
        self.session, self.disrupted_key, self.evidence_key = session, disrupted_key, evidence_key
        self.replaced: set[int] = set()  # probe sets replaced once already (by id)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Iterator[None]:
        try:
            return (yield)
        except (AssertionError, pytest.fail.Exception, *HARNESS_ERRORS) as exc:
            first = exc
        disruption = self._probe_pod_taken(item, first)
        if disruption is None:
            raise first
        probes, factory = _probe_set_of(item)
        self.replaced.add(id(probes))
        old = {id(p) for p in probes.pods}
        try:
            fresh = factory.replace_probe_set(probes)
        except HARNESS_ERRORS as exc:  # no fresh pod: the first attempt's outcome stands
            item.user_properties.append(("podshare_rerun", f"a fresh probe pod could not start: {exc}"))
            raise first from None
        seen = item.stash.get(self.disrupted_key, (None, None))[1]
        if self.disrupted_key in item.stash:  # the re-run decides the outcome now
            del item.stash[self.disrupted_key]
        if seen is None and not isinstance(first, pytest.fail.Exception):
            seen = str(first).strip().splitlines()[0] if str(first).strip() else None
        item.stash[RERUN] = (disruption, seen, fresh)
        self._fresh_containers(item, old, probes)
        self._keep_first_attempt(item, disruption, seen)
        item.user_properties.append(("podshare_rerun", f"disrupted: {disruption.cause}; re-run on a fresh pod "
                                                       f"{', '.join(fresh)}"))
        item.runtest()  # once; its outcome is the claim's

    def _probe_pod_taken(self, item: pytest.Item, exc: BaseException) -> Disruption | None:
        """The disruption of the claim's probe set's own pod, when that is what the
        first attempt met and the set was not replaced before; else None."""
        if RERUN in item.stash:
            return None
        probes, factory = _probe_set_of(item)
        if probes is None or id(probes) in self.replaced:
            return None
        known = item.stash.get(self.disrupted_key, None)  # the claim ended before its body: already known
        if known is not None:
            disruption = known[0]
        elif isinstance(exc, pytest.fail.Exception) and not isinstance(exc.__cause__, HARNESS_ERRORS):
            return None  # a claim's own pytest.fail: its verdict
        else:
            try:
                disruption = self.session.cluster.diagnose(list(probes.pods))
            except Exception:  # diagnosing must never hide the failure itself
                return None
        return disruption if disruption is not None and _pod_level(disruption, probes) else None

    @staticmethod
    def _fresh_containers(item: pytest.Item, old: set[int], probes: ProbeSet) -> None:
        """The claim's alpha and beta (function-scoped handles on the old pods) now on the fresh set."""
        for name, value in list(item.funcargs.items()):
            if isinstance(value, ProbeContainer) and id(value.pod) in old:
                item.funcargs[name] = probes.container(value.name)

    def _keep_first_attempt(self, item: pytest.Item, disruption: Disruption, seen: str | None) -> None:
        """The evidence starts again for the re-run; the first attempt's is kept under `first_attempt`."""
        ev = item.stash.get(self.evidence_key, None)
        if ev is None:
            return
        first = {"disruption": disruption.cause, "claim_saw": seen, "evidence": dict(ev),
                 "transcript": list(ev.transcript)}
        ev.clear()
        ev.transcript.clear()
        ev.pods.clear()
        ev.figures.clear()
        ev["first_attempt"] = first
