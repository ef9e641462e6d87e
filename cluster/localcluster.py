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

from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

HERE = Path(__file__).resolve().parent
STATE = Path(os.environ.get("PODSHARE_CLUSTER_DIR", "/var/lib/podshare/cluster"))
LOGS = STATE.parent / "logs"
LOCK = STATE.parent / "cluster.lock"
NODE = socket.gethostname().lower()

ETCD_PORT, ETCD_PEER_PORT, API_PORT = 23790, 23800, 6443
POD_CIDR, SERVICE_CIDR, SERVICE_API_IP = "10.244.0.0/24", "10.96.0.0/24", "10.96.0.1"
BRIDGE = "podshare0"
CNI_BIN = "/usr/lib/cni"
# Started in this order, stopped in the reverse one.
COMPONENTS = ("containerd", "etcd", "kube-apiserver", "kube-controller-manager",
              "kube-scheduler", "kubelet", "kube-proxy")
# Kernel settings kube-proxy and the bridge need; the old values come back on `down`.
SYSCTLS = {"net/bridge/bridge-nf-call-iptables": "1", "net/ipv4/conf/all/route_localnet": "1"}
CHAIN_PREFIXES = ("KUBE-", "CNI-")
# RuntimeClass name -> containerd runtime (handler); runc is also the default.
RUNTIME_CLASSES = {"runc": "runc", "crun": "crun", "gvisor": "gvisor"}


class ClusterError(Exception):
    pass


# ---------------------------------------------------------------- helpers

def sh(*cmd, check=True, capture=False, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], check=check, text=True,
                          stdout=subprocess.PIPE if capture else None,
                          stderr=subprocess.PIPE if capture else None, **kw)


def wait_for(what: str, probe, timeout: float, watch: tuple[str, ...] = ()) -> None:
    """Retry `probe` (raising or returning False) until it holds; fail fast when
    a watched component has exited, with its log tail."""
    def attempt():
        for name in watch:
            if not alive(name):
                code = _children[name].returncode if name in _children else "?"
                raise ClusterError(f"{name} exited (status {code}) while waiting for {what}\n{log_tail(name)}")
        if not probe():
            raise TimeoutError(what)
    try:
        for a in Retrying(stop=stop_after_delay(timeout), retry=retry_if_exception_type((OSError, TimeoutError, ValueError)),
                          wait=wait_exponential(multiplier=0.05, max=1.0)):
            with a:
                attempt()
    except RetryError as exc:
        tails = "\n".join(log_tail(n) for n in watch)
        raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}: "
                           f"{exc.last_attempt.exception()}\n{tails}") from None


def log_tail(name: str, lines: int = 25) -> str:
    path = LOGS / f"{name}.log"
    if not path.exists():
        return f"--- {name}: no log"
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return f"--- last {len(text)} lines of {path}\n" + "\n".join(text)


def node_ip() -> str:
    out = sh("ip", "-4", "-o", "addr", "show", "scope", "global", capture=True).stdout.split()
    for i, word in enumerate(out):
        if word == "inet" and not out[i - 1].startswith(BRIDGE):
            return out[i + 1].split("/")[0]
    return "127.0.0.1"


# ---------------------------------------------------------------- processes

def pidfile(name: str) -> Path:
    return STATE / "pids" / f"{name}.pid"


def recorded_pid(name: str) -> int | None:
    try:
        return int(pidfile(name).read_text())
    except (OSError, ValueError):
        return None


_children: dict[str, subprocess.Popen] = {}  # started by this invocation


def alive(name: str) -> bool:
    if name in _children:
        return _children[name].poll() is None
    pid = recorded_pid(name)
    if pid is None:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    # A recycled PID is not ours: every component's command line names STATE.
    return str(STATE).encode() in cmdline and state != "Z"


def start(name: str, argv: list[str], env: dict | None = None, append: bool = False) -> None:
    LOGS.mkdir(parents=True, exist_ok=True)
    pidfile(name).parent.mkdir(parents=True, exist_ok=True)
    with open(LOGS / f"{name}.log", "ab" if append else "wb") as log:
        proc = subprocess.Popen([str(a) for a in argv], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                env={**os.environ, **(env or {})})
    pidfile(name).write_text(str(proc.pid))
    _children[name] = proc


def stop(name: str, grace: float = 10.0) -> None:
    """SIGTERM, wait up to `grace`, then SIGKILL; only ever our own recorded PID."""
    pid = recorded_pid(name)
    if pid is None or not alive(name):
        return
    os.kill(pid, signal.SIGTERM)
    try:
        for attempt in Retrying(stop=stop_after_delay(grace), wait=wait_exponential(multiplier=0.02, max=0.5),
                                retry=retry_if_exception_type(TimeoutError), reraise=True):
            with attempt:
                if alive(name):
                    raise TimeoutError(name)
    except TimeoutError:
        os.kill(pid, signal.SIGKILL)
    if name in _children:
        _children.pop(name).wait()


# ---------------------------------------------------------------- PKI

def make_pki(ip: str) -> None:
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
    api_sans = [f"IP:{a}" for a in ("127.0.0.1", SERVICE_API_IP, ip)] + [
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
    key("sa")
    sh("openssl", "ec", "-in", pki / "sa.key", "-pubout", "-out", pki / "sa.pub", capture=True)


def kubeconfig(name: str) -> Path:
    pki = STATE / "pki"
    b64 = lambda p: base64.b64encode(p.read_bytes()).decode()  # noqa: E731
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "podshare-local",
        "clusters": [{"name": "podshare-local", "cluster": {
            "server": f"https://127.0.0.1:{API_PORT}", "certificate-authority-data": b64(pki / "ca.crt")}}],
        "users": [{"name": name, "user": {"client-certificate-data": b64(pki / f"{name}.crt"),
                                          "client-key-data": b64(pki / f"{name}.key")}}],
        "contexts": [{"name": "podshare-local", "context": {"cluster": "podshare-local", "user": name}}],
    }
    path = STATE / f"{name}.kubeconfig"
    path.write_text(json.dumps(config, indent=1))  # JSON is YAML: every client reads it
    path.chmod(0o600)
    return path


# ---------------------------------------------------------------- configs

def write_configs(ip: str, images: dict[str, str]) -> None:
    cni = STATE / "cni" / "net.d"
    cni.mkdir(parents=True)
    (cni / "10-podshare.conflist").write_text(json.dumps({
        "cniVersion": "0.4.0", "name": "podshare", "plugins": [
            {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False, "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR}]],
                      "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(STATE / "cni" / "ipam")}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ]}, indent=1))
    (STATE / "containerd.toml").write_text(f"""\
version = 2
root = "{STATE}/containerd/root"
state = "{STATE}/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{STATE}/containerd.sock"
[ttrpc]
  address = "{STATE}/containerd.ttrpc.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "{STATE}/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{images['PAUSE_IMAGE']}"
  # CAP_SYS_RESOURCE is withheld here: a negative oom_score_adj makes runc fail.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
    # crun under the same shim, with a state root of its own.
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun.options]
        BinaryName = "/usr/bin/crun"
        Root = "/run/containerd/crun"
        SystemdCgroup = false
    # gVisor: Debian's runsc behind our wrapper (cluster/runtimes/runsc-podshare);
    # every container of a pod under one root, so runsc finds the pod's sandbox.
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.gvisor]
      runtime_type = "io.containerd.runc.v2"
      pod_annotations = ["dev.gvisor.*"]
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.gvisor.options]
        BinaryName = "{HERE / 'runtimes' / 'runsc-podshare'}"
        Root = "/run/containerd/runsc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{cni}"
""")
    pki = STATE / "pki"
    (STATE / "kubelet.yaml").write_text(json.dumps({
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
    }, indent=1))
    (STATE / "kube-proxy.yaml").write_text(json.dumps({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "mode": "iptables", "clusterCIDR": POD_CIDR, "hostnameOverride": NODE,
        "clientConnection": {"kubeconfig": str(STATE / "kube-proxy.kubeconfig")},
        "oomScoreAdj": 0,
        # 0 leaves the conntrack sysctls as they are (they are not namespaced here).
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        "healthzBindAddress": "127.0.0.1:10256", "metricsBindAddress": "127.0.0.1:10249",
    }, indent=1))


# ---------------------------------------------------------------- components

def component_argv(name: str, bindir: Path, ip: str) -> list:
    """How `up` starts each component (and `restart-component` starts one again)."""
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
            "--cert-dir", STATE / "controller-manager-certs"],
        "kube-scheduler": [
            bindir / "kube-scheduler", *common, "--kubeconfig", STATE / "scheduler.kubeconfig",
            "--authentication-kubeconfig", STATE / "scheduler.kubeconfig",
            "--authorization-kubeconfig", STATE / "scheduler.kubeconfig"],
        "kubelet": [bindir / "kubelet", "--config", STATE / "kubelet.yaml",
                    "--kubeconfig", STATE / "kubelet.kubeconfig", "--root-dir", STATE / "kubelet",
                    "--node-ip", ip, "--hostname-override", NODE, "--v", "1",
                    "--cert-dir", f"{state}/kubelet-certs"],
        "kube-proxy": [bindir / "kube-proxy", "--config", STATE / "kube-proxy.yaml", "--v", "1"],
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


def node_ready(since: str = "") -> bool:
    """The node is Ready; with `since` (RFC 3339, UTC), by a heartbeat at or after it."""
    status, node = https_get(f"/api/v1/nodes/{NODE}")
    return status == 200 and any(c["type"] == "Ready" and c["status"] == "True" and c["lastHeartbeatTime"] >= since
                                 for c in node.get("status", {}).get("conditions", []))


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
    bindir = Path(sh(HERE / "build-binaries.sh", capture=True).stdout.strip())
    sh(sys.executable, HERE / "images.py", "build", capture=True)  # so the import below finds them built
    t_built = time.monotonic()
    ip, images = node_ip(), read_images()
    STATE.mkdir(parents=True)
    shutil.rmtree(LOGS, ignore_errors=True)
    make_pki(ip)
    for name in ("admin", "controller-manager", "scheduler", "kubelet", "kube-proxy"):
        kubeconfig(name)
    write_configs(ip, images)
    saved = {}
    for key, value in SYSCTLS.items():
        path = Path("/proc/sys") / key
        saved[key] = path.read_text().strip()
        path.write_text(value)
    (STATE / "sysctls.json").write_text(json.dumps(saved))
    bind_v2_controllers_to_v1()
    (STATE / "components.json").write_text(json.dumps({"bindir": str(bindir), "ip": ip}))  # for restart-component
    try:
        start("containerd", component_argv("containerd", bindir, ip))
        start("etcd", component_argv("etcd", bindir, ip))
        wait_for("containerd's socket", lambda: (STATE / "containerd.sock").exists(), 30, ("containerd",))
        # Importing the images overlaps with the control plane's start.
        importer = subprocess.Popen([sys.executable, HERE / "images.py", "import", "--address",
                                     STATE / "containerd.sock"], stdout=subprocess.DEVNULL)
        wait_for("etcd health", lambda: http_ok(f"http://127.0.0.1:{ETCD_PORT}/health"), 60, ("etcd",))
        start("kube-apiserver", component_argv("kube-apiserver", bindir, ip))
        wait_for("kube-apiserver /readyz", lambda: https_get("/readyz")[0] == 200, 90, ("kube-apiserver",))
        for name in ("kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"):
            start(name, component_argv(name, bindir, ip))
        if importer.wait() != 0:
            raise ClusterError("importing the images into containerd failed")
        watch = COMPONENTS
        wait_for(f"node {NODE} Ready", node_ready, 120, watch)
        wait_for("the default ServiceAccount",
                 lambda: https_get("/api/v1/namespaces/default/serviceaccounts/default")[0] == 200, 60, watch)
        wait_for("kube-proxy healthz", lambda: http_ok("http://127.0.0.1:10256/healthz"), 60, watch)
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
    print(f"podshare cluster: node {NODE} Ready; build check {t_built - t0:.1f}s, "
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
        # kubepods cgroups (--ignore-cgroups): found by runsc's root or the wrapper.
        elif any(b"/run/containerd/runsc" in a for a in argv) or \
                any(a.endswith(b"runtimes/runsc-podshare") for a in argv[:2]):
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
    """Remove everything `up` made; returns what could not be removed."""
    problems = []
    for name in reversed(COMPONENTS):
        stop(name)
    shims = _our_shims()
    for controller in Path("/sys/fs/cgroup").iterdir():
        try:
            _kill_cgroup_tree(controller / "kubepods")
        except OSError as exc:
            problems.append(f"cgroup {controller}/kubepods: {exc}")
    for pid in shims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
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
    running = [c for c in COMPONENTS if alive(c)]
    if not running:
        print("podshare cluster: not running")
        return 1
    print(f"podshare cluster: running ({', '.join(running)})\nKUBECONFIG={STATE / 'admin.kubeconfig'}")
    return 0 if len(running) == len(COMPONENTS) else 1


# ---------------------------------------------------------------- restart one component

def _unix_socket_answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(2)
        s.connect(str(path))
    return True


def serving(name: str, since: str):
    """What says a (re)started component serves again: its health endpoint, and for
    the kubelet a Ready node by a heartbeat posted after the restart."""
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
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # never in the middle of an `up` or `down`
        if not (STATE / "pki").is_dir():
            print("podshare cluster: not running", file=sys.stderr)
            return 1
        saved = STATE / "components.json"
        if saved.exists():
            where = json.loads(saved.read_text())
            bindir, ip = Path(where["bindir"]), where["ip"]
        else:  # a cluster brought up before `up` saved them: the same lookups `up` makes
            bindir, ip = Path(sh(HERE / "build-binaries.sh", capture=True).stdout.strip()), node_ip()
        t0 = time.monotonic()
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1))
        stop(name)
        pid = recorded_pid(name)
        if pid is not None:
            try:  # a frozen (SIGSTOPped) one does not act on SIGTERM until continued
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        start(name, component_argv(name, bindir, ip), append=True)
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
    sub.add_parser("down")
    sub.add_parser("status")
    r = sub.add_parser("restart-component", help="start one component again as `up` does, wait until it serves")
    r.add_argument("name", choices=COMPONENTS)
    args = p.parse_args()
    if os.geteuid() != 0:
        print("podshare cluster: must run as root", file=sys.stderr)
        return 2
    return {"up": up, "down": down, "status": status, "restart-component": restart_component}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
