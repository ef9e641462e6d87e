"""Network: the pod's containers share one network namespace, so localhost is
the same host for all of them and one container's listener is reachable from
the others on the loopback address; another pod's never is."""
import pytest

from podshare.evidence import describe, failed_with

pytestmark = pytest.mark.network


def stranger_not_refused(answer: dict) -> str:
    """Why the negative control did not hold, as far as the stranger's answer shows."""
    if answer.get("ok"):
        return "the stranger pod reached alpha's listener too, so it is not the pod's own localhost"
    return f"the stranger pod's connection to alpha's listener was not refused: {describe(answer)}, not ECONNREFUSED"


def test_alpha_listener_answers_beta_on_ipv4_loopback(alpha, beta, stranger, evidence):
    """beta reaches alpha's TCP listener on 127.0.0.1; the stranger pod on the same node is refused."""
    seen = beta.run("connect", host="127.0.0.1", port=alpha.port)
    refused = stranger.run("connect", host="127.0.0.1", port=alpha.port)
    evidence.update(beta=seen, stranger=refused)
    assert seen["ok"], f"beta could not reach alpha on 127.0.0.1:{alpha.port}: {describe(seen)}"
    assert seen["peer"]["container"] == "alpha", f"beta reached {seen['peer']['container']!r}, not alpha"
    assert failed_with(refused, "ECONNREFUSED"), stranger_not_refused(refused)


def test_alpha_listener_answers_beta_on_ipv6_loopback(alpha, beta, stranger, evidence):
    """beta reaches alpha's TCP listener on ::1, where the pod has IPv6."""
    families = beta.run("loopback")
    evidence["loopback"] = families
    if not families["ipv6"]:
        pytest.skip("the pod's network namespace has no ::1 (IPv6 disabled on this node)")
    seen = beta.run("connect", host="::1", port=alpha.port)
    refused = stranger.run("connect", host="::1", port=alpha.port)
    evidence.update(beta=seen, stranger=refused)
    assert seen["ok"], f"beta could not reach alpha on [::1]:{alpha.port}: {describe(seen)}"
    assert seen["peer"]["container"] == "alpha", f"beta reached {seen['peer']['container']!r}, not alpha"
    assert failed_with(refused, "ECONNREFUSED"), stranger_not_refused(refused)


def test_abstract_unix_socket_of_alpha_is_reachable_from_beta(alpha, beta, stranger, ipc_name, evidence):
    """An abstract unix socket lives in the network namespace: alpha's is reachable
    from beta, and not from the stranger pod."""
    with alpha.start("hold-unix", abstract=ipc_name):
        seen = beta.run("connect-unix", abstract=ipc_name)
        refused = stranger.run("connect-unix", abstract=ipc_name)
    evidence.update(beta=seen, stranger=refused)
    assert seen["ok"], f"beta could not reach alpha's abstract socket @{ipc_name}: {describe(seen)}"
    assert seen["peer"]["container"] == "alpha", f"beta reached {seen['peer']['container']!r}, not alpha"
    assert failed_with(refused, "ECONNREFUSED"), stranger_not_refused(refused)
