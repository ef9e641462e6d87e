"""Worker nodes of the local cluster, one per node pool, as the machines of a
real cluster's pools are: each in a network namespace of its own (a veth on the
host bridge `podshare-nodes`, its own node IP), with its own containerd (root,
state, sockets, CNI configuration, runtime state roots), kubelet (root dir, pod
logs dir, cgroup root, certificates, node IP and name) and kube-proxy (its own
iptables, in its namespace). Pod CIDRs come from the controller-manager; the
host routes each node's pod CIDR to that node.

Only the network namespace is entered (`nsenter --net`), never `ip netns exec`:
that also makes a mount namespace and remounts /sys, where the kubelet would
see no cgroups and runc none of the kubelet's mounts.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .layout import KUBELET_FLAGS
from .processes import STATE, alive, sh, start, stop

NODES_BRIDGE = "podshare-nodes"  # the host side of the node network
HOST_IP = "10.250.0.1"           # the control plane's address on it
NODE_NET_PREFIX = 24
NODE_NET = "10.250.0.0/24"
# The workers reach what the host reaches (its DNS server, registries) through it,
# as a real node reaches them: without this a pull fails only after DNS timeouts.
# localcluster's teardown removes every rule and chain named PODSHARE-*.
EGRESS_CHAIN = "PODSHARE-NODES"
CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class Pool:
    """A node pool: what makes its nodes differ from the others."""
    name: str
    default_runtime: str = "runc"
    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[str, ...] = ()
    why: str = ""
    # "debian": Debian's containerd 1.6 and runc, as the first node; "current": containerd 2
    # and runc 1.5 built from their Go modules (build-runtime.sh)
    stack: str = "debian"
    # the Kubernetes module its kubelet and kube-proxy come from (cluster/<module>):
    # containerd 1.6 needs a 1.35 kubelet, the last release that supports containerd 1.x
    kubernetes: str = "k8s"


# The pools a `--nodes N` cluster gets, in this order, after the first node (pool "default").
# gVisor's shim needs containerd 2 (containerd 1.6 cannot speak its bootstrap protocol),
# so both gVisor pools are on the current stack; the first node keeps runc and crun.
POOLS = (
    # As a managed sandboxed pool (GKE Sandbox): gVisor is the node's default runtime,
    # as the handler whose pods get GKE's emptyDir mount hints (gvisor-hints.yaml: for
    # pods of RuntimeClass gvisor-hinted); tainted and labelled as GKE's, so only
    # pods that tolerate it land there, and RuntimeClass gvisor-hinted selects it.
    Pool("sandboxed", default_runtime="gvisor-hinted", labels={"sandbox.gke.io/runtime": "gvisor"},
         taints=("sandbox.gke.io/runtime=gvisor:NoSchedule",),
         why="a sandboxed pool as GKE Sandbox's: gVisor with its shim and the emptyDir hints",
         stack="current", kubernetes="k8s-1.37"),
    # A pool mid-upgrade: the current container runtime (containerd 2, runc 1.5), and
    # gVisor as a containerd install gives it (RuntimeClass gvisor selects the label).
    Pool("current", labels={"podshare.io/gvisor": "plain"},
         why="a pool on Kubernetes 1.37, containerd 2.4 and runc 1.5, built from their Go modules, "
             "with gVisor plain",
         stack="current", kubernetes="k8s-1.37"),
)

# RuntimeClass name -> (handler, scheduling): where each may run. gVisor's classes
# select the pools that have its shim, so podshare names the other nodes "not
# applicable" (podshare/cluster.py: runtime_class_excludes); the hinted one is
# GKE Sandbox's class (its pool's label, and a toleration of its taint).
RUNTIME_CLASSES: dict[str, tuple[str, dict]] = {
    "runc": ("runc", {}),
    "crun": ("crun", {}),
    "youki": ("youki", {}),
    "gvisor": ("gvisor", {"nodeSelector": {"podshare.io/gvisor": "plain"}}),
    "gvisor-hinted": ("gvisor-hinted", {
        "nodeSelector": {"sandbox.gke.io/runtime": "gvisor"},
        "tolerations": [{"key": "sandbox.gke.io/runtime", "operator": "Equal", "value": "gvisor",
                         "effect": "NoSchedule"}]}),
}


def runtime_class(name: str) -> dict:
    """The RuntimeClass object `up` creates for `name`."""
    handler, scheduling = RUNTIME_CLASSES[name]
    return {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": name},
            "handler": handler, **({"scheduling": scheduling} if scheduling else {})}


@dataclass(frozen=True)
class Worker:
    index: int  # 1, 2, ...: its address and its pool
    cluster: str  # the first node's name, the prefix of every worker's
    pool_name: str = ""  # as recorded by `up`; by default the index's pool

    @property
    def pool(self) -> Pool:
        by_name = {p.name: p for p in POOLS}
        return by_name.get(self.pool_name) or POOLS[(self.index - 1) % len(POOLS)]

    @property
    def name(self) -> str:
        return f"{self.cluster}-{self.pool_name or self.pool.name}" + (f"-{self.index}" if self.index > len(POOLS) else "")

    @property
    def ip(self) -> str:
        return f"10.250.0.{10 + self.index}"

    @property
    def netns(self) -> str:
        return f"podshare-n{self.index}"

    @property
    def dir(self) -> Path:
        return STATE / "nodes" / self.name

    @property
    def cgroup_parent(self) -> str:
        """The kubelet's cgroupRoot: two kubelets under one would kill each other's pods."""
        return f"/podshare-{self.name}"

    def component(self, name: str) -> str:
        return f"{name}-{self.name}"

    @property
    def components(self) -> tuple[str, ...]:
        return tuple(self.component(c) for c in ("containerd", "kubelet", "kube-proxy"))

    @property
    def socket(self) -> Path:
        return self.dir / "containerd.sock"

    @property
    def kubelet_root(self) -> Path:
        """The kubelet's --root-dir (its pods under pods/: gVisor's shim looks there)."""
        return self.dir / "kubelet"


def workers(count: int, cluster: str) -> list[Worker]:
    return [Worker(i, cluster, POOLS[(i - 1) % len(POOLS)].name) for i in range(1, count)]


def recorded() -> list[Worker]:
    """The workers a running (or crashed) cluster has, as `up` recorded them: by
    name and pool, so a `down` finds them even after the pools in this file changed."""
    path = STATE / "workers.json"
    if not path.exists():
        return []
    saved = json.loads(path.read_text())
    return [Worker(w["index"], w["cluster"], w["pool"]) for w in saved["workers"]]


def record(all_workers: list[Worker]) -> None:
    (STATE / "workers.json").write_text(json.dumps({"workers": [
        {"index": w.index, "cluster": w.cluster, "pool": w.pool.name, "name": w.name} for w in all_workers]}))


# ---------------------------------------------------------------- the node network

def in_netns(worker: Worker, *argv) -> list:
    return ["nsenter", f"--net=/var/run/netns/{worker.netns}", "--", *argv]


def make_network(all_workers: list[Worker]) -> None:
    """The host bridge, and per worker a network namespace with eth0 on it."""
    if not all_workers:
        return
    sh("ip", "link", "add", NODES_BRIDGE, "type", "bridge")
    sh("ip", "addr", "add", f"{HOST_IP}/{NODE_NET_PREFIX}", "dev", NODES_BRIDGE)
    sh("ip", "link", "set", NODES_BRIDGE, "up")
    sh("iptables", "-t", "nat", "-N", EGRESS_CHAIN, check=False, capture=True)  # one left by a crash is reused
    sh("iptables", "-t", "nat", "-F", EGRESS_CHAIN)
    sh("iptables", "-t", "nat", "-A", EGRESS_CHAIN, "-s", NODE_NET, "!", "-d", NODE_NET, "-j", "MASQUERADE")
    if sh("iptables", "-t", "nat", "-C", "POSTROUTING", "-j", EGRESS_CHAIN, check=False, capture=True).returncode:
        sh("iptables", "-t", "nat", "-A", "POSTROUTING", "-j", EGRESS_CHAIN)
    for w in all_workers:
        host_end = f"psn{w.index}"
        sh("ip", "netns", "add", w.netns)
        sh("ip", "link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", w.netns)
        sh("ip", "link", "set", host_end, "master", NODES_BRIDGE, "up")
        sh("ip", "-n", w.netns, "addr", "add", f"{w.ip}/{NODE_NET_PREFIX}", "dev", "eth0")
        sh("ip", "-n", w.netns, "link", "set", "eth0", "up")
        sh("ip", "-n", w.netns, "link", "set", "lo", "up")
        # Everything else (the other nodes' pods, the API server's advertised
        # address) through the host, which routes each pod CIDR to its node.
        sh("ip", "-n", w.netns, "route", "add", "default", "via", HOST_IP)
        # A new network namespace starts with forwarding off; kube-proxy's NodePorts
        # on the node's address need route_localnet as on the first node.
        sh(*in_netns(w, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward; "
                                    "echo 1 > /proc/sys/net/ipv4/conf/all/route_localnet; "
                                    "echo 1 > /proc/sys/net/bridge/bridge-nf-call-iptables"))


def route_pod_cidr(worker: Worker, cidr: str) -> None:
    sh("ip", "route", "replace", cidr, "via", worker.ip)


def make_cgroup_parents(all_workers: list[Worker]) -> None:
    """Each worker kubelet's cgroupRoot in every cgroup v1 hierarchy (cpuset needs
    its cpus and mems before a task may join a child)."""
    for hierarchy in cgroup_hierarchies():
        for w in all_workers:
            parent = hierarchy / w.cgroup_parent.lstrip("/")
            parent.mkdir(exist_ok=True)
            for knob in ("cpuset.cpus", "cpuset.mems"):
                if (hierarchy / knob).exists():
                    (parent / knob).write_text((hierarchy / knob).read_text())


def cgroup_hierarchies(with_unified: bool = False) -> list[Path]:
    """The cgroup v1 hierarchies (and, for cleanup, the cgroup2 one, where the
    kubelet's libcontainer also makes the cgroup root's directories)."""
    return [p for p in CGROUP_ROOT.iterdir() if p.is_dir() and not p.is_symlink()
            and (with_unified or p.name != "unified") and (p / "cgroup.procs").exists()]


# ---------------------------------------------------------------- configuration

def write_configs(w: Worker, containerd_toml: str, kubelet: dict, kube_proxy: dict) -> None:
    """The first node's configuration made this worker's: its own paths, address,
    cgroup root, pool labels and default runtime."""
    (w.dir / "cni" / "net.d").mkdir(parents=True)
    (w.dir / "containerd.toml").write_text(containerd_toml)
    (w.dir / "kubelet.yaml").write_text(json.dumps({
        **kubelet, "containerRuntimeEndpoint": f"unix://{w.socket}", "address": w.ip,
        "tlsCertFile": str(STATE / "pki" / f"kubelet-serving-{w.name}.crt"),
        "tlsPrivateKeyFile": str(STATE / "pki" / f"kubelet-serving-{w.name}.key"),
        "cgroupRoot": w.cgroup_parent, "podLogsDir": str(w.dir / "pod-logs"),
        "registerWithTaints": [_taint(t) for t in w.pool.taints],
    }, indent=1))
    (w.dir / "kube-proxy.yaml").write_text(json.dumps({
        **kube_proxy, "hostnameOverride": w.name,
        "clientConnection": {"kubeconfig": str(w.dir / "kube-proxy.kubeconfig")},
    }, indent=1))


def _taint(text: str) -> dict:
    key_value, effect = text.rsplit(":", 1)
    key, _, value = key_value.partition("=")
    return {"key": key, "value": value, "effect": effect}


def labels(w: Worker) -> str:
    return ",".join(f"{k}={v}" for k, v in {"podshare.io/pool": w.pool.name, **w.pool.labels}.items())


# ---------------------------------------------------------------- processes

def containerd_argv(w: Worker) -> list:
    binary = runtime_bindir() / "containerd" if w.pool.stack == "current" else "containerd"
    return in_netns(w, binary, "--config", w.dir / "containerd.toml")


def containerd_env(w: Worker) -> dict[str, str] | None:
    """containerd finds its shim on PATH: the current stack's first, not Debian's."""
    return {"PATH": f"{runtime_bindir()}:{os.environ.get('PATH', '')}"} if w.pool.stack == "current" else None


def runtime_bindir() -> Path:
    """Where build-runtime.sh put the current stack (up builds it first)."""
    saved = STATE / "runtime-bindir"
    return Path(saved.read_text().strip())


def gvisor_bindir() -> Path | None:
    """Where build-gvisor.sh put runsc and its shim (up builds it for a pool on the
    current stack), or None for a cluster brought up before gVisor was built."""
    saved = STATE / "gvisor-bindir"
    return Path(saved.read_text().strip()) if saved.exists() and saved.read_text().strip() else None


def start_containerd(w: Worker) -> None:
    start(w.component("containerd"), containerd_argv(w), env=containerd_env(w))


def kubelet_argv(w: Worker, bindirs: dict[str, Path]) -> list:
    return in_netns(w, bindirs[w.pool.kubernetes] / "kubelet", "--config", w.dir / "kubelet.yaml",
                    "--kubeconfig", w.dir / "kubelet.kubeconfig", "--root-dir", w.kubelet_root,
                    "--node-ip", w.ip, "--hostname-override", w.name, "--node-labels", labels(w),
                    "--v", "1", "--cert-dir", w.dir / "kubelet-certs", *KUBELET_FLAGS)


def kube_proxy_argv(w: Worker, bindirs: dict[str, Path]) -> list:
    return in_netns(w, bindirs[w.pool.kubernetes] / "kube-proxy", "--config", w.dir / "kube-proxy.yaml", "--v", "1")


def component_argv(name: str, bindirs: dict[str, Path]) -> list | None:
    """A worker component's command line (restart-component), or None if not a worker's."""
    for w in recorded():
        if name == w.component("containerd"):
            return containerd_argv(w)
        if name == w.component("kubelet"):
            return kubelet_argv(w, bindirs)
        if name == w.component("kube-proxy"):
            return kube_proxy_argv(w, bindirs)
    return None


# ---------------------------------------------------------------- teardown

def stop_all(all_workers: list[Worker]) -> None:
    for w in all_workers:
        for name in reversed(w.components):
            stop(name)


def kill_cgroups(all_workers: list[Worker], kill_cgroup_tree) -> list[str]:
    """Every process left in a worker kubelet's cgroup root, then the root itself."""
    problems = []
    for w in all_workers:
        for hierarchy in cgroup_hierarchies(with_unified=True):
            parent = hierarchy / w.cgroup_parent.lstrip("/")
            try:
                kill_cgroup_tree(parent)
            except OSError as exc:
                problems.append(f"{w.name}: cgroup {parent}: {exc}")
    return problems


def remove_network(all_workers: list[Worker]) -> list[str]:
    """Each worker's veth pair, then its network namespace (its routes and its
    iptables go with it), then the bridge (the host's routes to
    the pod CIDRs go with it)."""
    problems = []
    for w in all_workers:
        # the veth first, by its host end: a namespace's devices go in the kernel's own time after
        # `ip netns delete` returns (CI: the check right after still saw psn2), a link delete at once
        if Path(f"/sys/class/net/psn{w.index}").exists():
            sh("ip", "link", "delete", f"psn{w.index}", check=False, capture=True)
        if Path(f"/var/run/netns/{w.netns}").exists():
            sh("ip", "netns", "delete", w.netns, check=False, capture=True)
    if Path(f"/sys/class/net/{NODES_BRIDGE}").exists():
        sh("ip", "link", "delete", NODES_BRIDGE, check=False)
    return problems


def left_behind(w: Worker) -> list[str]:
    """What of this worker is still on the machine: processes, mounts, its network
    namespace and links, its cgroups."""
    found = []
    for name in w.components:
        if alive(name):
            found.append(f"process {name}")
    home = str(w.dir).encode()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if home in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(f"process {pid}")
        except OSError:
            pass
    with open("/proc/self/mountinfo") as f:
        found += [f"mount {line.split()[4]}" for line in f if line.split()[4].startswith(str(w.dir))]
    if Path(f"/var/run/netns/{w.netns}").exists():
        found.append(f"network namespace {w.netns}")
    if Path(f"/sys/class/net/psn{w.index}").exists():
        found.append(f"link psn{w.index}")
    found += [f"cgroup {h / w.cgroup_parent.lstrip('/')}" for h in cgroup_hierarchies(with_unified=True)
              if (h / w.cgroup_parent.lstrip("/")).exists()]
    if sh("ip", "route", "show", "via", w.ip, capture=True, check=False).stdout.strip():
        found.append(f"route via {w.ip}")
    return [f"{w.name}: {what}" for what in found]
