"""Restart of all containers in place, asked for by a native sidecar (KEP-5532):
the rule may sit on an init container (restartPolicy Always: a sidecar), and its
exit then restarts every container of the pod, the init containers first, in the
same sandbox, as it does for a regular container's rule (suites/test_restart_all.py)."""
from __future__ import annotations

import pytest

from podshare.evidence import describe

pytestmark = [pytest.mark.lifecycle, pytest.mark.pattern, pytest.mark.manifest("patterns/restart-all-sidecar.yaml"),
              pytest.mark.needs("restart all containers")]

RULE_EXIT_CODE = 42  # the manifest's rule; probes/agent.py's RULE_EXIT_CODE
AGENTS = ("sidecar", "alpha", "beta")


def _state(pod) -> dict:
    read = pod.read()
    boot_ids = {}
    for name in AGENTS:
        container = pod.container(name)
        answer = container.run("connect", port=container.port)
        boot_ids[name] = answer["peer"]["boot_id"] if answer["ok"] else None
    return {"uid": read.metadata.uid, "ip": read.status.pod_ip, "boot_ids": boot_ids,
            "restart_counts": {s.name: s.restart_count for s in (read.status.init_container_statuses or [])
                               + (read.status.container_statuses or [])},
            "init_runs": pod.container("beta").run("read", path="/data/disk/init-runs", text=True)}


def test_a_sidecars_exit_its_rule_names_restarts_every_container_in_the_same_pod(pattern_pods, podshare_session,
                                                                                 evidence):
    """After the sidecar exits with the code its RestartAllContainers rule names,
    every container runs again (the sidecar, alpha and beta each with a new boot
    id), the init container ran again over its first run's line, and the pod is
    the same pod: its UID and IP unchanged."""
    pod = pattern_pods["Pod/podshare-restart-all-sidecar"]
    with podshare_session.harness_errors(fatal=False):
        before = _state(pod)
        pod.exit_by_restart_rule("sidecar", RULE_EXIT_CODE)
        after = _state(pod)
    evidence.update(before=before, after=after)
    lines = [a["init_runs"]["text"].count("init ran") if a["init_runs"].get("ok") else None for a in (before, after)]
    for name in AGENTS:
        assert before["boot_ids"][name] and after["boot_ids"][name], f"{name}'s agent did not answer before and after"
    unchanged = [n for n in AGENTS if after["boot_ids"][n] == before["boot_ids"][n]]
    assert not unchanged, (
        f"{' and '.join(unchanged)} kept {'its' if len(unchanged) == 1 else 'their'} boot id across the sidecar's exit "
        f"with {RULE_EXIT_CODE} (restart counts after: "
        f"{', '.join(f'{n} {c}' for n, c in after['restart_counts'].items())}): not every container restarted, as "
        "without a RestartAllContainers rule")
    assert lines == [1, 2], (f"the init container's runs in the volume: {lines[0]} before, {lines[1]} after (2 after: "
                             f"it ran again): {describe(after['init_runs']) if not after['init_runs'].get('ok') else ''}")
    for field in ("uid", "ip"):
        assert after[field] == before[field], (
            f"the pod's {field} changed across the restart of all containers: {before[field]} before, "
            f"{after[field]} after: it was not restarted in place")
