"""The run's state, one object per pytest process (`PodshareSession`): its
settings and id, the cluster, the checks so far, and how it ends (fatal, stop,
interrupted). The plugin's hooks (plugin.py) and the fixtures (fixtures.py)
share it through the config's stash; the keys of what the run keeps per claim
live here too, so neither module needs the other.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import time
from typing import Iterator, NoReturn

import pytest

from .cluster import Cluster
from .disruption import Disrupted, Disruption
from .errors import HARNESS_ERRORS, AccessDenied
from .evidence import Evidence
from .known_divergences import KnownDivergences
from .records import Check
from .settings import Settings

SESSION = pytest.StashKey["PodshareSession"]()
EVIDENCE = pytest.StashKey[Evidence]()  # a claim's evidence, made by the autouse fixture
DIAGNOSTICS = pytest.StashKey[list]()  # a failed claim's pods' state, once
KNOWN = pytest.StashKey[tuple]()  # (outcome, message) where --known-divergences decided it
MESSAGE = pytest.StashKey[str]()  # a failed claim's message, kept where its terminal block replaced the traceback
REPORTS = pytest.StashKey[list]()  # a claim's setup, call and teardown reports
# (the disruption, what the claim itself saw or None when it ended before using the pod)
DISRUPTED = pytest.StashKey[tuple]()
RUNTIME_CLASS = pytest.StashKey[str]()  # the class the claim's pods ran under, read while they are at hand
LISTED = pytest.StashKey[Cluster]()  # the controller's cluster, its nodes listed to count the workers


class PodshareSession:
    """Per-run state (settings, the cluster, the checks) and the one way a harness
    error becomes an outcome."""

    def __init__(self, config: pytest.Config, settings: Settings, run_id: str, cluster: Cluster | None) -> None:
        self.config, self.settings, self.run_id = config, settings, run_id
        worker = getattr(config, "workerinput", None)  # a pytest-xdist worker: the controller's run
        self.worker = worker["workerid"] if worker else None
        # Every object name ends in this, so runs sharing a namespace never collide.
        self.suffix = run_id[-6:].lower()
        self.started = time.time()
        self.started_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        self.cluster = cluster or Cluster(settings.kubeconfig, settings.kube_context, run_id, self.worker)
        self.checks: dict[str, Check] = {}
        self.fatal: str | None = None
        self.stop: str | None = None  # why no later test can get further
        self.interrupted: str | None = None  # Ctrl-C or SIGTERM, with what it said
        self.known_divergences = KnownDivergences.load(settings.known_divergences)
        self.collection_errors: list[str] = []
        self.diagnosed: set[Disruption] = set()  # disruptions whose pods' diagnostics a claim already has

    @property
    def nodes_dimension(self) -> bool:
        """Whether the node is a dimension of this run (--all-nodes, --node-selector)."""
        return bool(self.settings.all_nodes or self.settings.node_selector)

    def target_nodes(self) -> list[str]:
        return self.cluster.target_nodes(self.settings.node_selector, self.settings.one_per_pool) \
            if self.nodes_dimension else []

    def fail_run(self, reason: str) -> NoReturn:
        """A failure no claim can get past (no cluster, no namespace, pods that cannot
        start): fail this test with the one-line reason and stop the session."""
        self.fatal = self.stop = reason
        # from None: the harness error it came from says the same again ("During handling ...")
        raise pytest.fail.Exception(reason, pytrace=False) from None

    @contextlib.contextmanager
    def harness_errors(self, fatal: bool, node: str | None = None) -> Iterator[None]:
        """The one way a fixture turns a harness error into an outcome: the run's
        end (fatal), the end of one node's claims (fatal, with several nodes: each
        of them could not be checked, the other nodes go on) or this claim's
        failure, with the one-line reason either way."""
        try:
            yield
        except Disrupted:
            raise
        except HARNESS_ERRORS as exc:
            failure, cause = str(exc), exc
        else:
            return
        if fatal and node is not None and not isinstance(cause, AccessDenied):
            raise Disrupted(self.cluster.disruptions.record(
                Disruption(f"node {node}: the pods every claim there needs could not start: {failure}",
                           node=node))) from cause
        if fatal:
            self.fail_run(failure)
        # the cause stays attached: the report decides whether the cluster moved under the claim
        raise pytest.fail.Exception(failure, pytrace=False) from cause

    def keep(self, session: pytest.Session) -> bool:
        return self.settings.keep == "always" or (self.settings.keep == "on-failure" and session.testsfailed > 0)


def session_of(config: pytest.Config) -> PodshareSession | None:
    return config.stash.get(SESSION, None)
