"""A real Kubernetes of one to three nodes on this machine, for CI and development.
From the project root:

    python -m cluster.localcluster up      build (cached), start everything, wait for Ready nodes
    python -m cluster.localcluster down    stop what `up` started and remove everything it left
    python -m cluster.localcluster status  say whether a cluster runs, and its kubeconfig
    python -m cluster.localcluster restart-component NAME
                            start one component again as `up` does (after a test
                            killed it, or stop it first), and wait until it serves

All state lives under one directory (PODSHARE_CLUSTER_DIR, default
/var/lib/podshare/cluster); logs under its sibling `logs`, kept after `down`
for a post-mortem. `up` after a crash cleans the leftovers first. The
certificates are pki.py's, the nodes' configuration files configs.py's, the
components' command lines components.py's, and `down` is teardown.py's.
"""
from __future__ import annotations

import argparse
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

from . import addons, runtime_versions, shared_csi, shared_fs, workers
from .components import component_argv, kubernetes_bindirs
from .configs import write_configs
from .images import read_env
from .layout import API_PORT, BRIDGE, COMPONENTS, DEVICE_PLUGIN_DIR, ETCD_PORT, HERE, NODE, PROJECT
from .pki import kubeconfig, make_pki
from .processes import LOGS, STATE, ClusterError, alive, recorded_pid, sh, start, stop, wait_for
from .teardown import teardown

LOCK = STATE.parent / "cluster.lock"
# Kernel settings kube-proxy and the bridge need; the old values come back on `down`.
SYSCTLS = {"net/bridge/bridge-nf-call-iptables": "1", "net/ipv4/conf/all/route_localnet": "1",
           # the host routes between the nodes' pods (the CNI bridge would turn it on anyway)
           "net/ipv4/ip_forward": "1"}


# ---------------------------------------------------------------- helpers

def node_ip() -> str:
    out = sh("ip", "-4", "-o", "addr", "show", "scope", "global", capture=True).stdout.split()
    for i, word in enumerate(out):
        if word == "inet" and not out[i - 1].startswith(BRIDGE):
            return out[i + 1].split("/")[0]
    return "127.0.0.1"


# ---------------------------------------------------------------- up

def https_get(path: str, body: dict | None = None, method: str | None = None,
              content_type: str = "application/json") -> tuple[int, dict]:
    """GET `path` from the API server as admin (POST `body` when given, or `method`)."""
    ctx = ssl.create_default_context(cafile=str(STATE / "pki" / "ca.crt"))
    ctx.load_cert_chain(STATE / "pki" / "admin.crt", STATE / "pki" / "admin.key")
    request = urllib.request.Request(f"https://127.0.0.1:{API_PORT}{path}",
                                     data=json.dumps(body).encode() if body else None, method=method,
                                     headers={"Content-Type": content_type} if body else {})
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


def annotate(node: str, annotations: dict[str, str]) -> None:
    """Merge `annotations` into a node's metadata."""
    code, _ = https_get(f"/api/v1/nodes/{node}", {"metadata": {"annotations": annotations}}, method="PATCH",
                        content_type="application/merge-patch+json")
    if code != 200:
        raise ClusterError(f"annotating node {node}: HTTP {code}")


def wait_for_pod_cidr(name: str, watch: tuple[str, ...]) -> str:
    found = {}

    def allocated() -> bool:
        status, node = https_get(f"/api/v1/nodes/{name}")
        found["cidr"] = node.get("spec", {}).get("podCIDR") if status == 200 else None
        return bool(found["cidr"])
    wait_for(f"node {name}'s pod CIDR", allocated, 120, watch)
    return found["cidr"]


def start_kubelet(name: str, argv: list) -> None:
    """Start one kubelet and wait until its device-plugin registry listens. Each
    kubelet removes the sockets in the one shared DEVICE_PLUGIN_DIR, then listens
    there: two starting at once can each remove before either listens, and the
    second then exits on EADDRINUSE (CI on 2026-12-03). One at a time, they take
    the socket over from each other harmlessly (no device plugins run here)."""
    socket_path = DEVICE_PLUGIN_DIR / "kubelet.sock"
    socket_path.unlink(missing_ok=True)  # so that only this kubelet makes it again
    start(name, argv)
    wait_for(f"{name}'s device-plugin socket", socket_path.exists, 120, (name,))


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
    # so the import below finds them built
    sh(sys.executable, "-m", "cluster.images", "build", capture=True, cwd=PROJECT)
    ip, images = node_ip(), read_env()
    # the current stack's containerd and runc, for a pool on it (cached after the first build)
    current = any(w.pool.stack == "current" for w in nodes)
    runtime_bindir = sh(HERE / "build-runtime.sh", capture=True).stdout.strip() if current else ""
    # gVisor (runsc and its shim), for the pools on the current stack
    gvisor_bindir = sh(HERE / "build-gvisor.sh", capture=True).stdout.strip() if current else ""
    # youki, a runtime of every node's containerd (cached; configs.py finds it by --where)
    sh(HERE / "build-youki.sh", capture=True)
    # the shared file system's CSI driver (cached; shared_csi.start_all finds it built)
    sh(HERE / "build-csi.sh", capture=True)
    t_built = time.monotonic()
    STATE.mkdir(parents=True)
    (STATE / "runtime-bindir").write_text(runtime_bindir)
    (STATE / "gvisor-bindir").write_text(gvisor_bindir)
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
        importers = [subprocess.Popen([sys.executable, "-m", "cluster.images", "import", "--address", sock],
                                      stdout=subprocess.DEVNULL, cwd=PROJECT) for sock in sockets.values()]
        wait_for("etcd health", lambda: http_ok(f"http://127.0.0.1:{ETCD_PORT}/health"), 60, ("etcd",))
        start("kube-apiserver", component_argv("kube-apiserver", bindirs, ip))
        wait_for("kube-apiserver /readyz", lambda: https_get("/readyz")[0] == 200, 90, ("kube-apiserver",))
        for name in ("kube-controller-manager", "kube-scheduler", "kube-proxy"):
            start(name, component_argv(name, bindirs, ip))
        start_kubelet("kubelet", component_argv("kubelet", bindirs, ip))
        for w in nodes:
            start_kubelet(w.component("kubelet"), workers.kubelet_argv(w, bindirs))
            start(w.component("kube-proxy"), workers.kube_proxy_argv(w, bindirs))
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
        for name in workers.RUNTIME_CLASSES:
            code, _ = https_get("/apis/node.k8s.io/v1/runtimeclasses", workers.runtime_class(name))
            if code not in (200, 201):
                raise ClusterError(f"creating RuntimeClass {name}: HTTP {code}")
        # the shared file system (an SFTP export, an sshfs client per node) before the
        # provisioner, whose config names each node's client for the class shared-sshfs
        every_node = [NODE, *(w.name for w in nodes)]
        shared_fs.start_all(every_node)
        # its CSI driver: a node plugin per kubelet (each until its kubelet has
        # registered it), one provisioner, for the ReadWriteMany class shared-sshfs-rwx
        shared_csi.start_all(every_node)
        # each node's runtimes in their own words, for the reports' headers
        for w in nodes:
            annotate(w.name, runtime_versions.annotation(runtime_versions.of_worker(w)))
        annotate(NODE, runtime_versions.annotation(runtime_versions.of_first_node()))
        # GKE Sandbox's emptyDir mount hints, for pods of RuntimeClass gvisor-hinted
        addons.apply(HERE / "gvisor-hints.yaml", {}, https_get)
        # the default StorageClass: rancher's local-path provisioner, its volumes under the state
        (STATE / "local-path").mkdir(exist_ok=True)
        addons.apply(HERE / "local-path.yaml", {
            "LOCAL_PATH_IMAGE": images["LOCAL_PATH_IMAGE"],
            "LOCAL_PATH_CONFIG": shared_fs.provisioner_config(str(STATE / "local-path"), every_node)}, https_get)
        addons.apply(HERE / "shared-sshfs.yaml", {}, https_get)
        addons.apply(shared_csi.MANIFEST, {}, https_get)  # the CSIDriver and shared-sshfs-rwx
    except (ClusterError, addons.AddonError, subprocess.CalledProcessError, OSError) as exc:
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
        start(name, component_argv(name, bindirs, ip), append=True)  # a kubelet alone: no race on its socket
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
