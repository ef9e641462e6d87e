"""How the local cluster starts each component: the Kubernetes builds it runs
and each component's command line, for `up` and for `restart-component`."""
from __future__ import annotations

from pathlib import Path

from . import workers
from .layout import (API_PORT, CLUSTER_CIDR, CONTROL_PLANE, ETCD_PEER_PORT, ETCD_PORT, FIRST_NODE_KUBERNETES, HERE,
                     KUBELET_FLAGS, NODE, SERVICE_CIDR)
from .processes import STATE, sh


def kubernetes_bindirs(node_workers: list[workers.Worker]) -> dict[str, Path]:
    """Each Kubernetes module the cluster runs, built (cached by its inputs): the control
    plane's and every node's (kubelets may be up to three minors older than it)."""
    modules = {CONTROL_PLANE, FIRST_NODE_KUBERNETES, *(w.pool.kubernetes for w in node_workers)}
    return {m: Path(sh(HERE / "build-binaries.sh", m, capture=True).stdout.strip()) for m in sorted(modules)}


def component_argv(name: str, bindirs: dict[str, Path], ip: str) -> list:
    """How `up` starts each component (and `restart-component` starts one again):
    the control plane's, the first node's, or a worker's (`kubelet-NODE`...)."""
    worker = workers.component_argv(name, bindirs)
    if worker is not None:
        return worker
    bindir, node_bindir = bindirs[CONTROL_PLANE], bindirs[FIRST_NODE_KUBERNETES]
    pki, state = STATE / "pki", str(STATE)
    common = ["--bind-address", "127.0.0.1", "--leader-elect=false", "--profiling=false"]
    return {
        "containerd": ["containerd", "--config", STATE / "containerd.toml"],
        "etcd": [bindir / "etcd", "--name", NODE, "--data-dir", STATE / "etcd",
                 "--listen-client-urls", f"http://127.0.0.1:{ETCD_PORT}",
                 "--advertise-client-urls", f"http://127.0.0.1:{ETCD_PORT}",
                 "--listen-peer-urls", f"http://127.0.0.1:{ETCD_PEER_PORT}",
                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{ETCD_PEER_PORT}",
                 "--initial-cluster", f"{NODE}=http://127.0.0.1:{ETCD_PEER_PORT}",
                 "--listen-metrics-urls", "http://127.0.0.1:23810",
                 "--unsafe-no-fsync", "--log-level", "warn"],
        "kube-apiserver": [
            bindir / "kube-apiserver", "--etcd-servers", f"http://127.0.0.1:{ETCD_PORT}",
            # All addresses: pods reach the API through the kubernetes Service, which
            # kube-proxy sends to the advertised node IP (in-cluster runs need it).
            "--bind-address", "0.0.0.0", "--secure-port", API_PORT, "--advertise-address", ip,
            "--tls-cert-file", pki / "apiserver.crt", "--tls-private-key-file", pki / "apiserver.key",
            "--client-ca-file", pki / "ca.crt",
            "--kubelet-client-certificate", pki / "apiserver-kubelet-client.crt",
            "--kubelet-client-key", pki / "apiserver-kubelet-client.key",
            "--kubelet-certificate-authority", pki / "ca.crt",
            "--kubelet-preferred-address-types", "InternalIP",
            "--service-account-key-file", pki / "sa.pub", "--service-account-signing-key-file", pki / "sa.key",
            "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
            "--service-cluster-ip-range", SERVICE_CIDR, "--service-node-port-range", "30000-32767",
            "--authorization-mode", "Node,RBAC", "--enable-admission-plugins", "NodeRestriction",
            "--profiling=false", "--cert-dir", STATE / "apiserver-certs", "--v", "1"],
        "kube-controller-manager": [
            bindir / "kube-controller-manager", *common,
            "--kubeconfig", STATE / "controller-manager.kubeconfig",
            "--authentication-kubeconfig", STATE / "controller-manager.kubeconfig",
            "--authorization-kubeconfig", STATE / "controller-manager.kubeconfig",
            "--service-account-private-key-file", pki / "sa.key", "--root-ca-file", pki / "ca.crt",
            "--cluster-signing-cert-file", pki / "ca.crt", "--cluster-signing-key-file", pki / "ca.key",
            "--use-service-account-credentials=true", "--service-cluster-ip-range", SERVICE_CIDR,
            "--allocate-node-cidrs", "--cluster-cidr", CLUSTER_CIDR, "--node-cidr-mask-size", "24",
            "--cert-dir", STATE / "controller-manager-certs"],
        "kube-scheduler": [
            bindir / "kube-scheduler", *common, "--kubeconfig", STATE / "scheduler.kubeconfig",
            "--authentication-kubeconfig", STATE / "scheduler.kubeconfig",
            "--authorization-kubeconfig", STATE / "scheduler.kubeconfig"],
        "kubelet": [node_bindir / "kubelet", "--config", STATE / "kubelet.yaml",
                    "--kubeconfig", STATE / "kubelet.kubeconfig", "--root-dir", STATE / "kubelet",
                    "--node-ip", ip, "--hostname-override", NODE, "--node-labels", "podshare.io/pool=default",
                    "--v", "1", "--cert-dir", f"{state}/kubelet-certs", *KUBELET_FLAGS],
        "kube-proxy": [node_bindir / "kube-proxy", "--config", STATE / "kube-proxy.yaml", "--v", "1"],
    }[name]
