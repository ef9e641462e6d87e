#!/usr/bin/env python3
"""A real single-node Kubernetes on this machine, for CI and development.

    localcluster.py up      build (cached), start everything, wait for a Ready node
    localcluster.py down    stop what `up` started and remove everything it left
    localcluster.py status  say whether a cluster runs, and its kubeconfig
    localcluster.py restart-component NAME
                            start one component again as `up` does (after a test
                            killed it, or stop it first), and wait until it serves

All state lives under one directory (PODSHARE_CLUSTER_DIR, default
/var/lib/podshare/cluster); logs under its sibling `logs`, kept after `down`
for a post-mortem. `up` after a crash cleans the leftovers first.
"""
from __future__ import annotations

import argparse
import base64
import fcntl
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

import workers
from processes import (LOGS, STATE, ClusterError, alive, log_tail, recorded_pid, sh, start, stop,  # noqa: F401
                       wait_for)

HERE = Path(__file__).resolve().parent
LOCK = STATE.parent / "cluster.lock"
NODE = socket.gethostname().lower()

ETCD_PORT, ETCD_PEER_PORT, API_PORT = 23790, 23800, 6443
# Pod CIDRs: a /24 per node, allocated by the controller-manager from this.
CLUSTER_CIDR, SERVICE_CIDR, SERVICE_API_IP = "10.244.0.0/16", "10.96.0.0/24", "10.96.0.1"
BRIDGE = "podshare0"
CNI_BIN = "/usr/lib/cni"
# Started in this order, stopped in the reverse one.
# The control plane runs the newest Kubernetes; the first node keeps 1.35, the last
# release whose kubelet supports its containerd 1.6 (the `current` pool runs 1.37).
CONTROL_PLANE = "k8s-1.37"
FIRST_NODE_KUBERNETES = "k8s"
COMPONENTS = ("containerd", "etcd", "kube-apiserver", "kube-controller-manager",
              "kube-scheduler", "kubelet", "kube-proxy")
# Kernel settings kube-proxy and the bridge need; the old values come back on `down`.
SYSCTLS = {"net/bridge/bridge-nf-call-iptables": "1", "net/ipv4/conf/all/route_localnet": "1",
           # the host routes between the nodes' pods (the CNI bridge would turn it on anyway)
           "net/ipv4/ip_forward": "1"}
CHAIN_PREFIXES = ("KUBE-", "CNI-", "PODSHARE-")
# RuntimeClass name -> containerd runtime (handler); runc is also the default.
RUNTIME_CLASSES = {"runc": "runc", "crun": "crun", "gvisor": "gvisor"}


# ---------------------------------------------------------------- helpers

def node_ip() -> str:
    out = sh("ip", "-4", "-o", "addr", "show", "scope", "global", capture=True).stdout.split()
    for i, word in enumerate(out):
        if word == "inet" and not out[i - 1].startswith(BRIDGE):
            return out[i + 1].split("/")[0]
    return "127.0.0.1"


# ---------------------------------------------------------------- PKI

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


# ---------------------------------------------------------------- configs

def containerd_config(home: Path, images: dict[str, str], default_runtime: str, runtime_roots: str) -> str:
    """A node's containerd: its own root, state, sockets and CNI directories. The
    CNI configuration is written by containerd from the template once the kubelet
    hands it the node's pod CIDR (allocated by the controller-manager)."""
    cni = home / "cni"
    (cni / "template.json").write_text(json.dumps({
        "cniVersion": "0.4.0", "name": "podshare", "plugins": [
            {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False, "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "{{.PodCIDR}}"}]],
                      "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(cni / "ipam")}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ]}, indent=1))
    return f"""\
version = 2
root = "{home}/containerd/root"
state = "{home}/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{home}/containerd.sock"
[ttrpc]
  address = "{home}/containerd.ttrpc.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "{home}/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{images['PAUSE_IMAGE']}"
  # CAP_SYS_RESOURCE is withheld here: a negative oom_score_adj makes runc fail.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "{default_runtime}"
    # Each runtime's state under a root of this node's (several containerds share /run).
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "/run/containerd/runc{runtime_roots}"
        SystemdCgroup = false
    # crun under the same shim.
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun.options]
        BinaryName = "/usr/bin/crun"
        Root = "/run/containerd/crun{runtime_roots}"
        SystemdCgroup = false
    # gVisor: Debian's runsc behind our wrapper (cluster/runtimes/runsc-podshare);
    # every container of a pod under one root, so runsc finds the pod's sandbox.
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.gvisor]
      runtime_type = "io.containerd.runc.v2"
      pod_annotations = ["dev.gvisor.*"]
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.gvisor.options]
        BinaryName = "{HERE / 'runtimes' / 'runsc-podshare'}"
        Root = "/run/containerd/runsc{runtime_roots}"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{cni / 'net.d'}"
    conf_template = "{cni / 'template.json'}"
"""


def containerd2_config(home: Path, images: dict[str, str], default_runtime: str) -> str:
    """containerd 2's (version 3, containerd2.py's, proven standalone there), with
    this node's default runtime and the same CNI template as the other nodes."""
    import containerd2
    containerd_config(home, images, default_runtime, "")  # writes cni/template.json; its own text is unused
    toml = containerd2.config(home, workers.runtime_bindir(), images["PAUSE_IMAGE"])
    toml = toml.replace("default_runtime_name = 'runc'", f"default_runtime_name = '{default_runtime}'")
    return toml.replace(f"      conf_dir = '{home}/cni/net.d'",
                        f"      conf_dir = '{home}/cni/net.d'\n      conf_template = '{home}/cni/template.json'")


def write_configs(ip: str, images: dict[str, str], all_workers: list[workers.Worker]) -> None:
    (STATE / "cni" / "net.d").mkdir(parents=True)
    (STATE / "containerd.toml").write_text(containerd_config(STATE, images, "runc", ""))
    pki = STATE / "pki"
    kubelet = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,            # these VMs have cgroup v1 controllers only
        "oomScoreAdj": 0,                 # a negative value needs CAP_SYS_RESOURCE
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{STATE}/containerd.sock",
        "address": ip, "readOnlyPort": 0, "healthzBindAddress": "127.0.0.1", "healthzPort": 10248,
        "tlsCertFile": str(pki / "kubelet-serving.crt"), "tlsPrivateKeyFile": str(pki / "kubelet-serving.key"),
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(pki / "ca.crt")}},
        "authorization": {"mode": "Webhook"},
        "resolvConf": "/etc/resolv.conf",
        # Images here cannot be pulled again: never garbage-collect them, never evict for disk.
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "serializeImagePulls": False,
        "staticPodPath": "", "syncFrequency": "10s", "fileCheckFrequency": "10s",
        "nodeStatusUpdateFrequency": "5s",
    }
    kube_proxy = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "mode": "iptables", "clusterCIDR": CLUSTER_CIDR, "hostnameOverride": NODE,
        "clientConnection": {"kubeconfig": str(STATE / "kube-proxy.kubeconfig")},
        "oomScoreAdj": 0,
        # 0 leaves the conntrack sysctls as they are (they are not namespaced here).
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        "healthzBindAddress": "127.0.0.1:10256", "metricsBindAddress": "127.0.0.1:10249",
    }
    (STATE / "kubelet.yaml").write_text(json.dumps(kubelet, indent=1))
    (STATE / "kube-proxy.yaml").write_text(json.dumps(kube_proxy, indent=1))
    for w in all_workers:
        (w.dir / "cni").mkdir(parents=True)
        toml = (containerd2_config(w.dir, images, w.pool.default_runtime) if w.pool.stack == "current" else
                containerd_config(w.dir, images, w.pool.default_runtime, f"-{w.name}"))
        workers.write_configs(w, toml, kubelet, kube_proxy)
        server = f"https://{workers.HOST_IP}:{API_PORT}"
        kubeconfig(f"kubelet-{w.name}", w.dir / "kubelet.kubeconfig", server)
        kubeconfig("kube-proxy", w.dir / "kube-proxy.kubeconfig", server)


# ---------------------------------------------------------------- components

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
                    "--v", "1", "--cert-dir", f"{state}/kubelet-certs"],
        "kube-proxy": [node_bindir / "kube-proxy", "--config", STATE / "kube-proxy.yaml", "--v", "1"],
    }[name]


# ---------------------------------------------------------------- up

def read_images() -> dict[str, str]:
    env = {}
    for line in (HERE / "images.env").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, _, v = line.partition("=")
            env[k.strip()] = v.strip()
    return env


def https_get(path: str, body: dict | None = None) -> tuple[int, dict]:
    """GET `path` from the API server as admin (POST `body` when given)."""
    ctx = ssl.create_default_context(cafile=str(STATE / "pki" / "ca.crt"))
    ctx.load_cert_chain(STATE / "pki" / "admin.crt", STATE / "pki" / "admin.key")
    request = urllib.request.Request(f"https://127.0.0.1:{API_PORT}{path}",
                                     data=json.dumps(body).encode() if body else None,
                                     headers={"Content-Type": "application/json"} if body else {})
    try:
        with urllib.request.urlopen(request, context=ctx, timeout=5) as r:
            body = r.read()
            return r.status, (json.loads(body) if body.startswith(b"{") else {})
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status == 200


def node_ready(since: str = "", name: str = NODE) -> bool:
    """The node is Ready; with `since` (RFC 3339, UTC), by a heartbeat at or after it."""
    status, node = https_get(f"/api/v1/nodes/{name}")
    return status == 200 and any(c["type"] == "Ready" and c["status"] == "True" and c["lastHeartbeatTime"] >= since
                                 for c in node.get("status", {}).get("conditions", []))


def wait_for_pod_cidr(name: str, watch: tuple[str, ...]) -> str:
    found = {}

    def allocated() -> bool:
        status, node = https_get(f"/api/v1/nodes/{name}")
        found["cidr"] = node.get("spec", {}).get("podCIDR") if status == 200 else None
        return bool(found["cidr"])
    wait_for(f"node {name}'s pod CIDR", allocated, 120, watch)
    return found["cidr"]


def up(args) -> int:
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    lock = open(LOCK, "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("podshare cluster: another `up` or `down` is in progress", file=sys.stderr)
        return 1
    running = [c for c in COMPONENTS if alive(c)]
    if running:
        print(f"podshare cluster: already running ({', '.join(running)}); "
              f"KUBECONFIG={STATE / 'admin.kubeconfig'}; `down` first", file=sys.stderr)
        return 1
    if STATE.exists():
        print("podshare cluster: cleaning up after an earlier run that did not `down`", file=sys.stderr)
        teardown()
    t0 = time.monotonic()
    nodes = workers.workers(args.nodes, NODE)
    bindirs = kubernetes_bindirs(nodes)
    sh(sys.executable, HERE / "images.py", "build", capture=True)  # so the import below finds them built
    ip, images = node_ip(), read_images()
    # the current stack's containerd and runc, for a pool on it (cached after the first build)
    runtime_bindir = (sh(HERE / "build-runtime.sh", capture=True).stdout.strip()
                      if any(w.pool.stack == "current" for w in nodes) else "")
    t_built = time.monotonic()
    STATE.mkdir(parents=True)
    (STATE / "runtime-bindir").write_text(runtime_bindir)
    workers.record(nodes)  # before anything of theirs exists: `down` finds them even after a crash
    shutil.rmtree(LOGS, ignore_errors=True)
    make_pki(ip, nodes)
    for name in ("admin", "controller-manager", "scheduler", "kubelet", "kube-proxy"):
        kubeconfig(name)
    write_configs(ip, images, nodes)
    saved = {}
    for key, value in SYSCTLS.items():
        path = Path("/proc/sys") / key
        saved[key] = path.read_text().strip()
        path.write_text(value)
    (STATE / "sysctls.json").write_text(json.dumps(saved))
    bind_v2_controllers_to_v1()
    (STATE / "components.json").write_text(json.dumps({"bindirs": {m: str(d) for m, d in bindirs.items()}, "ip": ip}))  # for restart-component
    every = COMPONENTS + tuple(c for w in nodes for c in w.components)
    try:
        workers.make_network(nodes)
        workers.make_cgroup_parents(nodes)
        start("containerd", component_argv("containerd", bindirs, ip))
        for w in nodes:
            workers.start_containerd(w)
        start("etcd", component_argv("etcd", bindirs, ip))
        sockets = {"containerd": STATE / "containerd.sock", **{w.component("containerd"): w.socket for w in nodes}}
        for name, sock in sockets.items():
            wait_for(f"{name}'s socket", sock.exists, 30, (name,))
        # Importing the images overlaps with the control plane's start.
        importers = [subprocess.Popen([sys.executable, HERE / "images.py", "import", "--address", sock],
                                      stdout=subprocess.DEVNULL) for sock in sockets.values()]
        wait_for("etcd health", lambda: http_ok(f"http://127.0.0.1:{ETCD_PORT}/health"), 60, ("etcd",))
        start("kube-apiserver", component_argv("kube-apiserver", bindirs, ip))
        wait_for("kube-apiserver /readyz", lambda: https_get("/readyz")[0] == 200, 90, ("kube-apiserver",))
        for name in ("kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"):
            start(name, component_argv(name, bindirs, ip))
        for w in nodes:
            workers.start_node_agents(w, bindirs)
        if any(importer.wait() != 0 for importer in importers):
            raise ClusterError("importing the images into a node's containerd failed")
        # A node is Ready once its CNI configuration exists, which needs its pod CIDR;
        # the host routes each worker's pod CIDR to it.
        for w in nodes:
            cidr = wait_for_pod_cidr(w.name, every)
            workers.route_pod_cidr(w, cidr)
        for name in (NODE, *(w.name for w in nodes)):
            wait_for(f"node {name} Ready", lambda name=name: node_ready(name=name), 120, every)
        wait_for("the default ServiceAccount",
                 lambda: https_get("/api/v1/namespaces/default/serviceaccounts/default")[0] == 200, 60, every)
        wait_for("kube-proxy healthz", lambda: http_ok("http://127.0.0.1:10256/healthz"), 60, every)
        for name, handler in RUNTIME_CLASSES.items():
            code, _ = https_get("/apis/node.k8s.io/v1/runtimeclasses", {
                "apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
                "metadata": {"name": name}, "handler": handler})
            if code not in (200, 201):
                raise ClusterError(f"creating RuntimeClass {name}: HTTP {code}")
    except (ClusterError, subprocess.CalledProcessError, OSError) as exc:
        print(f"podshare cluster: up failed: {exc}", file=sys.stderr)
        if not args.keep_on_failure:
            teardown()
        return 1
    t_ready = time.monotonic()
    names = ", ".join([NODE, *(f"{w.name} ({w.pool.why})" for w in nodes)])
    print(f"podshare cluster: {1 + len(nodes)} node(s) Ready: {names}; build check {t_built - t0:.1f}s, "
          f"start to Ready {t_ready - t_built:.1f}s", file=sys.stderr)
    print(f"KUBECONFIG={STATE / 'admin.kubeconfig'}")
    return 0


# ---------------------------------------------------------------- down

def _kill_cgroup_tree(root: Path) -> None:
    """SIGKILL every process in a cgroup tree, then remove its directories."""
    if not root.is_dir():
        return
    for dirpath, _dirs, _files in os.walk(root, topdown=False):
        try:
            pids = Path(dirpath, "cgroup.procs").read_text().split()
        except OSError:
            pids = []
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
    for attempt in Retrying(stop=stop_after_delay(15), wait=wait_exponential(multiplier=0.05, max=0.5),
                            retry=retry_if_exception_type(OSError), reraise=True):
        with attempt:
            for dirpath, _dirs, _files in os.walk(root, topdown=False):
                if Path(dirpath).exists():
                    os.rmdir(dirpath)


def _our_shims() -> list[int]:
    """containerd shims of this cluster, and the gVisor processes behind them."""
    pids = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"containerd-shim-runc-v2") and \
                any(str(STATE).encode() in a for a in argv):
            pids.append(int(entry))
        # gVisor's sandboxes, gofers and our wrapper's holders live outside the
        # kubepods cgroups (--ignore-cgroups): found by runsc's root (a node's own,
        # under /run/containerd or under the state directory) or the wrapper.
        elif any(b"/run/containerd/runsc" in a for a in argv) or \
                any(a.endswith(b"runtimes/runsc-podshare") for a in argv[:2]) or \
                (b"runsc" in argv[0] and any(str(STATE).encode() in a for a in argv)):
            pids.append(int(entry))
    return pids


def _mounts_under(*roots: str) -> list[str]:
    found = []
    real_roots = [os.path.realpath(r) for r in roots]  # /var/run is a link to /run
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mountpoint = line.split()[4].replace("\\040", " ")
            if any(mountpoint == r or mountpoint.startswith(r.rstrip("/") + "/") for r in real_roots):
                found.append(mountpoint)
    return sorted(found, key=len, reverse=True)


def _remove_iptables_rules() -> None:
    """Drop every KUBE-* and CNI-* chain and every rule that mentions one,
    leaving all other rules as they were."""
    for save, restore in (("iptables-save", "iptables-restore"), ("ip6tables-save", "ip6tables-restore")):
        if not shutil.which(save):
            continue
        dump = sh(save, capture=True, check=False).stdout
        if not any(p in dump for p in CHAIN_PREFIXES):
            continue
        kept = [line for line in dump.splitlines()
                if not any(p in line for p in CHAIN_PREFIXES) and not line.startswith("#")]
        sh(restore, input="\n".join(kept) + "\n", capture=True)


def bind_v2_controllers_to_v1() -> None:
    """crun refuses a hybrid cgroup layout whose cgroup2 has any controller (here:
    hugetlb, which no v1 hierarchy holds). A controller no cgroup2 subtree uses
    can move to a v1 hierarchy of its own: do that, and record it for `down`."""
    unified = Path("/sys/fs/cgroup/unified")
    if not (unified / "cgroup.controllers").exists() or (unified / "cgroup.subtree_control").read_text().strip():
        return
    moved = []
    for controller in (unified / "cgroup.controllers").read_text().split():
        target = Path("/sys/fs/cgroup") / controller
        target.mkdir(exist_ok=True)
        sh("mount", "-t", "cgroup", "-o", controller, "cgroup", target)
        moved.append(str(target))
    (STATE / "cgroup-v1-mounts.json").write_text(json.dumps(moved))


def teardown() -> list[str]:
    """Remove everything `up` made, on every node; returns what could not be removed."""
    problems = []
    nodes = workers.recorded()
    workers.stop_all(nodes)
    for name in reversed(COMPONENTS):
        stop(name)
    shims = _our_shims()
    for controller in Path("/sys/fs/cgroup").iterdir():
        try:
            _kill_cgroup_tree(controller / "kubepods")
        except OSError as exc:
            problems.append(f"cgroup {controller}/kubepods: {exc}")
    problems += workers.kill_cgroups(nodes, _kill_cgroup_tree)
    for pid in shims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    problems += workers.remove_network(nodes)  # before the mounts below: `ip netns delete` unmounts its own
    netns = Path("/var/run/netns")
    for mountpoint in _mounts_under(str(STATE), str(netns), "/run/containerd"):
        if sh("umount", "-l", mountpoint, check=False, capture=True).returncode != 0:
            problems.append(f"mount {mountpoint}")
    if netns.is_dir():
        for ns in netns.glob("cni-*"):  # the CRI plugin's network namespaces
            try:
                ns.unlink()
            except OSError as exc:
                problems.append(f"netns {ns}: {exc.strerror}")
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        sh("ip", "link", "delete", BRIDGE, check=False)
    _remove_iptables_rules()
    moved = STATE / "cgroup-v1-mounts.json"
    for target in (json.loads(moved.read_text()) if moved.exists() else []):
        # unmounted, the controller goes back to cgroup2
        if sh("umount", target, check=False, capture=True).returncode != 0:
            problems.append(f"cgroup mount {target}")
        else:
            Path(target).rmdir()
    saved = STATE / "sysctls.json"
    if saved.exists():
        for key, value in json.loads(saved.read_text()).items():
            Path("/proc/sys", key).write_text(value)
    problems += [p for w in nodes for p in workers.left_behind(w)]
    for leftover in (STATE, Path("/run/containerd"), Path("/var/lib/cni")):
        shutil.rmtree(leftover, ignore_errors=True)
        if leftover.exists():
            problems.append(f"directory {leftover}")
    return problems


def down(_args) -> int:
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        problems = teardown()
    if problems:
        print("podshare cluster: down left: " + "; ".join(problems), file=sys.stderr)
        return 1
    print("podshare cluster: down, nothing left behind", file=sys.stderr)
    return 0


def status(_args) -> int:
    every = COMPONENTS + tuple(c for w in workers.recorded() for c in w.components)
    running = [c for c in every if alive(c)]
    if not running:
        print("podshare cluster: not running")
        return 1
    print(f"podshare cluster: running ({', '.join(running)})\nKUBECONFIG={STATE / 'admin.kubeconfig'}")
    return 0 if len(running) == len(every) else 1


# ---------------------------------------------------------------- restart one component

def _unix_socket_answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(2)
        s.connect(str(path))
    return True


def serving(name: str, since: str):
    """What says a (re)started component serves again: its health endpoint, and for
    the kubelet a Ready node by a heartbeat posted after the restart."""
    for w in workers.recorded():  # a worker's: its socket, its Ready node (its health ports are in its netns)
        if name == w.component("containerd"):
            return lambda: _unix_socket_answers(w.socket)
        if name == w.component("kubelet"):
            return lambda: node_ready(since, name=w.name)
    return {
        "containerd": lambda: _unix_socket_answers(STATE / "containerd.sock"),
        "etcd": lambda: http_ok(f"http://127.0.0.1:{ETCD_PORT}/health"),
        "kube-apiserver": lambda: https_get("/readyz")[0] == 200,
        "kubelet": lambda: http_ok("http://127.0.0.1:10248/healthz") and node_ready(since),
        "kube-proxy": lambda: http_ok("http://127.0.0.1:10256/healthz"),
    }.get(name, lambda: True)


def restart_component(args) -> int:
    """Start one component of a running cluster again with `up`'s own arguments:
    stopped first if it still runs (a test that killed or froze it restores it so)."""
    name = args.name
    known = COMPONENTS + tuple(c for w in workers.recorded() for c in w.components)
    if name not in known:
        print(f"podshare cluster: no component {name!r} (this cluster has {', '.join(known)})", file=sys.stderr)
        return 2
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # never in the middle of an `up` or `down`
        if not (STATE / "pki").is_dir():
            print("podshare cluster: not running", file=sys.stderr)
            return 1
        saved = STATE / "components.json"
        if saved.exists():
            where = json.loads(saved.read_text())
            bindirs, ip = {m: Path(d) for m, d in where["bindirs"].items()}, where["ip"]
        else:  # a cluster brought up before `up` saved them: the same lookups `up` makes
            bindirs, ip = kubernetes_bindirs(workers.recorded()), node_ip()
        t0 = time.monotonic()
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1))
        stop(name)
        pid = recorded_pid(name)
        if pid is not None:
            try:  # a frozen (SIGSTOPped) one does not act on SIGTERM until continued
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        start(name, component_argv(name, bindirs, ip), append=True)
        try:
            wait_for(f"{name} to serve again", serving(name, since), 120, (name,))
        except ClusterError as exc:
            print(f"podshare cluster: restart of {name} failed: {exc}", file=sys.stderr)
            return 1
    print(f"podshare cluster: {name} restarted (pid {recorded_pid(name)}), serving after "
          f"{time.monotonic() - t0:.1f}s", file=sys.stderr)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("up")
    u.add_argument("--keep-on-failure", action="store_true", help="leave a failed cluster for inspection")
    u.add_argument("--nodes", type=int, default=int(os.environ.get("PODSHARE_NODES", "1")),
                   help="nodes in all: the first (control plane machine) and N-1 workers, each a pool of "
                        "its own (default $PODSHARE_NODES or 1)")
    sub.add_parser("down")
    sub.add_parser("status")
    r = sub.add_parser("restart-component", help="start one component again as `up` does, wait until it serves")
    r.add_argument("name", help=f"one of {', '.join(COMPONENTS)}, or a worker's: containerd-NODE, kubelet-NODE, "
                                "kube-proxy-NODE")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("podshare cluster: must run as root", file=sys.stderr)
        return 2
    return {"up": up, "down": down, "status": status, "restart-component": restart_component}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
