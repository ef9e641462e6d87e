"""The probe channel on a real pod: many verbs over one exec stream, answers
matched to their requests, a stream that breaks is reopened once and reported,
a verb in flight on it fails with the reason, and nothing it held stays held."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from podshare.errors import KubeError
from podshare.waits import restarted, wait_for_pod
from podshare.retry import NotYet, wait_until


def _break(channel) -> None:
    """Cut the exec stream under the harness, as a network hiccup or an API server restart would."""
    channel.ws.close()

    def noticed():
        if not channel.closed:
            raise NotYet("still open")
    wait_until(noticed, timeout=10, what="the channel to notice")


def test_concurrent_verbs_get_their_own_answers(probe_set, ipc_name):
    alpha = probe_set.container("alpha")
    paths = [f"/data/disk/{ipc_name}-{i}" for i in range(16)]
    with ThreadPoolExecutor(8) as pool:
        written = list(pool.map(lambda p: alpha.run("write", path=p, size=4096, seed=p), paths))
        read = list(pool.map(lambda p: alpha.run("read", path=p), paths))
    assert [w["path"] for w in written] == [r["path"] for r in read] == paths
    assert [w["sha256"] for w in written] == [r["sha256"] for r in read]
    assert len({w["sha256"] for w in written}) == len(paths)  # each seed its own payload


def test_a_broken_channel_is_reopened_once_and_the_evidence_says_so(probe_set, evidence):
    alpha = probe_set.container("alpha")
    before = alpha.run("identity")
    channel = probe_set.main.channel("alpha")
    _break(channel)
    after = alpha.run("identity")
    assert after["hostname"] == before["hostname"] == probe_set.name
    assert probe_set.main.channel("alpha") is not channel
    assert len(evidence["channel_reopened"]) == 1 and "/alpha:" in evidence["channel_reopened"][0]


def test_a_verb_in_flight_fails_with_the_reason_and_its_holder_can_be_released(probe_set, free_port):
    """The exec behind a broken stream may live on in the container (CRI does not
    always close its stdin): the reopened channel's server ends the old server,
    which releases its holders; `release` finds any that remain by their name."""
    alpha, beta = probe_set.container("alpha"), probe_set.container("beta")
    holder = alpha.start("hold-port", port=free_port, seconds=60).wait_ready()
    assert beta.run("bind", port=free_port)["errno"] == "EADDRINUSE"
    _break(probe_set.main.channel("alpha"))
    with pytest.raises(KubeError, match="closed before hold-port answered"):
        holder.result()
    alpha.run("release")  # over a new channel

    def port_free():
        answer = beta.run("bind", port=free_port)
        if not answer["ok"]:
            raise NotYet(answer["errno"])
    wait_until(port_free, timeout=10, what=f"port {free_port} to be free again (the holder's deadline is 60 s)")


def test_stop_agent_answers_before_its_container_goes(lifecycle_pod):
    pod = lifecycle_pod.pod_of("alpha")
    before = pod.restart_count("alpha")
    answer = pod.container("alpha").run("stop-agent")  # raises if the answer died with the container
    assert answer["ok"] and answer["stopping"]
    pod.close_channels("alpha")
    wait_for_pod(pod.kube, pod.namespace, pod.name, 60, restarted("alpha", before))
    assert pod.container("alpha").run("identity")["container"] == "alpha"  # a new channel to the new container
