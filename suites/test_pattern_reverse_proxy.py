"""Reverse proxy (adapter): nginx in front of an app that listens on loopback
only. The pattern works only because the pod's containers share localhost;
only nginx's port is declared and exposed."""
import json
import urllib.request

import pytest

from podshare.evidence import describe, failed_with
from podshare.retry import NotYet, wait_until

pytestmark = [pytest.mark.pattern, pytest.mark.manifest("patterns/reverse-proxy.yaml")]


@pytest.fixture(scope="module")
def proxy(pattern_pods):
    return pattern_pods


def fetch(host: str, port: int, path: str) -> dict:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=3) as r:
            return {"status": r.status, "body": json.loads(r.read())}
    except OSError as exc:
        raise NotYet(f"{host}:{port}: {exc}") from None


def test_nodeport_request_reaches_the_app_through_nginx_over_localhost(proxy, evidence):
    """A request to the node's address at the Service's NodePort gets the app's
    answer; the app saw it from 127.0.0.1 with nginx's header: node -> nginx ->
    localhost -> app."""
    pod, service = proxy["Pod/podshare-proxy"], proxy["Service/podshare-proxy"]
    host_ip = pod.read().status.host_ip
    node_port = service.spec.ports[0].node_port
    answer = wait_until(lambda: fetch(host_ip, node_port, "/podshare"), timeout=30,
                        what=f"http://{host_ip}:{node_port}/ through kube-proxy")
    evidence.update(url=f"http://{host_ip}:{node_port}/podshare", answer=answer)
    assert answer["status"] == 200, f"the NodePort answered {answer['status']}, not 200"
    assert answer["body"]["container"] == "app", f"the answer came from {answer['body']['container']!r}, not the app"
    assert answer["body"]["client"] == "127.0.0.1", "the app was reached from outside its pod's loopback"
    assert answer["body"]["headers"].get("X-Forwarded-By") == "podshare-nginx", "the request did not pass nginx"


def test_app_port_is_not_reachable_through_the_pod_ip(proxy, stranger, evidence):
    """From another pod, nginx answers on the pod IP's port 80 (positive control)
    but port 5000 is refused: the app listens on the pod's loopback only."""
    pod_ip = proxy["Pod/podshare-proxy"].read().status.pod_ip
    through_nginx = stranger.run("http-get", url=f"http://{pod_ip}:80/from-stranger")
    direct = stranger.run("connect", host=pod_ip, port=5000)
    evidence.update(pod_ip=pod_ip, through_nginx=through_nginx, direct_to_app=direct)
    assert through_nginx["ok"] and through_nginx["status"] == 200 and through_nginx["body"]["container"] == "app", (
        f"nginx on the pod IP's port 80 did not bring another pod to the app: {describe(through_nginx)}")
    assert failed_with(direct, "ECONNREFUSED"), (
        f"the app's port 5000 answers on the pod IP, not only on the pod's loopback: {describe(direct)}")


def test_only_nginx_port_is_declared_and_exposed(proxy, evidence):
    """The pod declares only port 80 and the Service has no port for 5000."""
    pod = proxy["Pod/podshare-proxy"].read()
    declared = sorted(p.container_port for c in pod.spec.containers for p in (c.ports or []))
    exposed = sorted(p.target_port if isinstance(p.target_port, int) else p.port
                     for p in proxy["Service/podshare-proxy"].spec.ports)
    evidence.update(declared_ports=declared, service_ports=exposed)
    assert declared == [80], f"the pod declares ports {declared}, not only nginx's 80"
    assert 5000 not in exposed and exposed == [80], f"the Service exposes {exposed}, not only port 80"
