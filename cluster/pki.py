"""The local cluster's certificates, under STATE/pki: a CA, each component's
serving and client certificates, each node's own (the Node authorizer checks
them), the service-account key pair; and the kubeconfigs made from them."""
from __future__ import annotations

import base64
import json
from pathlib import Path

from . import workers
from .layout import API_PORT, NODE, SERVICE_API_IP
from .processes import STATE, sh


def make_pki(ip: str, all_workers: list[workers.Worker]) -> None:
    pki = STATE / "pki"
    pki.mkdir(parents=True)

    def key(name):
        sh("openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", pki / f"{name}.key", capture=True)

    def cert(name, subject, *, client=True, sans=()):
        key(name)
        ext = pki / f"{name}.ext"
        usage = "clientAuth" if client else "serverAuth"
        lines = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment",
                 f"extendedKeyUsage={usage}"]
        if sans:
            lines.append("subjectAltName=" + ",".join(sans))
        ext.write_text("\n".join(lines) + "\n")
        sh("openssl", "req", "-new", "-key", pki / f"{name}.key", "-subj", subject,
           "-out", pki / f"{name}.csr", capture=True)
        sh("openssl", "x509", "-req", "-in", pki / f"{name}.csr", "-CA", pki / "ca.crt",
           "-CAkey", pki / "ca.key", "-CAcreateserial", "-days", "30", "-extfile", ext,
           "-out", pki / f"{name}.crt", capture=True)

    key("ca")
    sh("openssl", "req", "-x509", "-new", "-key", pki / "ca.key", "-subj", "/CN=podshare-local-ca",
       "-days", "30", "-out", pki / "ca.crt", capture=True)
    api_sans = [f"IP:{a}" for a in ("127.0.0.1", SERVICE_API_IP, ip, workers.HOST_IP)] + [
        f"DNS:{d}" for d in ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                             "kubernetes.default.svc.cluster.local")]
    cert("apiserver", "/CN=kube-apiserver", client=False, sans=api_sans)
    cert("kubelet-serving", f"/CN={NODE}", client=False, sans=[f"IP:{ip}", "IP:127.0.0.1", f"DNS:{NODE}"])
    cert("admin", "/O=system:masters/CN=podshare-admin")
    cert("apiserver-kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client")
    cert("controller-manager", "/CN=system:kube-controller-manager")
    cert("scheduler", "/CN=system:kube-scheduler")
    cert("kubelet", f"/O=system:nodes/CN=system:node:{NODE}")
    cert("kube-proxy", "/CN=system:kube-proxy")
    for w in all_workers:  # each node its own identity (the Node authorizer checks it) and serving address
        cert(f"kubelet-serving-{w.name}", f"/CN={w.name}", client=False, sans=[f"IP:{w.ip}", f"DNS:{w.name}"])
        cert(f"kubelet-{w.name}", f"/O=system:nodes/CN=system:node:{w.name}")
    key("sa")
    sh("openssl", "ec", "-in", pki / "sa.key", "-pubout", "-out", pki / "sa.pub", capture=True)


def kubeconfig(name: str, path: Path | None = None, server: str = f"https://127.0.0.1:{API_PORT}") -> Path:
    """A kubeconfig for the PKI's client certificate `name` (workers reach the API
    server at its address on the node network)."""
    pki = STATE / "pki"
    b64 = lambda p: base64.b64encode(p.read_bytes()).decode()  # noqa: E731
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "podshare-local",
        "clusters": [{"name": "podshare-local", "cluster": {
            "server": server, "certificate-authority-data": b64(pki / "ca.crt")}}],
        "users": [{"name": name, "user": {"client-certificate-data": b64(pki / f"{name}.crt"),
                                          "client-key-data": b64(pki / f"{name}.key")}}],
        "contexts": [{"name": "podshare-local", "context": {"cluster": "podshare-local", "user": name}}],
    }
    path = path or STATE / f"{name}.kubeconfig"
    path.write_text(json.dumps(config, indent=1))  # JSON is YAML: every client reads it
    path.chmod(0o600)
    return path
