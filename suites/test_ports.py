"""Ports: the pod has one port space. Two containers cannot listen on the same
port, which is why a pod's containers must agree on their ports."""
import pytest

from podshare.evidence import describe, failed_with

pytestmark = pytest.mark.network


def test_port_held_by_alpha_is_in_use_for_beta_until_released(alpha, beta, stranger, free_port, evidence):
    """While alpha listens on a port, beta's bind gets EADDRINUSE and the stranger
    pod binds the same port freely; once alpha lets go, beta can bind it."""
    with alpha.start("hold-port", port=free_port) as hold:
        while_held = beta.run("bind", port=free_port)
        stranger_bind = stranger.run("bind", port=free_port)
    held = hold.result()
    after_release = beta.run("bind", port=free_port)
    evidence.update(port=free_port, alpha=held, beta_while_held=while_held,
                    stranger_while_held=stranger_bind, beta_after_release=after_release)
    assert held["ok"] and held["released"], f"alpha could not hold port {free_port}: {describe(held)}"
    assert failed_with(while_held, "EADDRINUSE"), (
        f"beta could bind port {free_port} while alpha listened on it: not one port space" if while_held["ok"] else
        f"beta's bind of port {free_port} while alpha listened on it: {describe(while_held)}, not EADDRINUSE")
    assert stranger_bind["ok"], f"the stranger pod could not bind {free_port}: {describe(stranger_bind)}"
    assert after_release["ok"], f"beta could not bind {free_port} after alpha released it: {describe(after_release)}"
