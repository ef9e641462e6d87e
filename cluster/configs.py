"""The configuration files the local cluster's nodes run with: containerd's,
version 2 for Debian's containerd 1.6 and version 3 for the current stack's
containerd 2 (the one containerd2.py's standalone check proves), the CNI
template both fill with a node's pod CIDR, and the kubelet's and kube-proxy's."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from . import workers
from .layout import API_PORT, BRIDGE, CLUSTER_CIDR, CNI_BIN, HERE, NODE
from .pki import kubeconfig
from .processes import STATE

WRAPPERS = HERE / "runtimes"  # crun's wrapper (cluster/runtimes)
# gVisor's two handlers: the same shim and runsc; pods of the hinted one carry the
# emptyDir mount annotations GKE Sandbox's admission controller adds (cluster/gvisor-hints.yaml).
GVISOR_HANDLERS = ("gvisor", "gvisor-hinted")
# runsc's platform: systrap, its default. No KVM works on these VMs (/dev/kvm hung
# a bundle); ptrace only where neither would.
GVISOR_PLATFORM = "systrap"


def write_cni_template(home: Path) -> None:
    """The template of a node's CNI configuration, for either containerd: it writes
    the configuration once the kubelet hands it the node's pod CIDR (allocated by
    the controller-manager)."""
    cni = home / "cni"
    (cni / "template.json").write_text(json.dumps({
        "cniVersion": "0.4.0", "name": "podshare", "plugins": [
            {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False, "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "{{.PodCIDR}}"}]],
                      "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(cni / "ipam")}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ]}, indent=1))


def youki_binary() -> Path:
    """build-youki.sh's youki, found without building (`up` and the check build it first)."""
    where = subprocess.run([HERE / "build-youki.sh", "--where"], capture_output=True, text=True)
    return Path(where.stdout.strip()) / "youki"


def containerd_top(version: int, home: Path, sockets: Path, snapshotters_off: tuple[str, ...]) -> str:
    """How either version of containerd's config begins: where it keeps its content
    and state, the snapshotters it leaves out (none here is used), its two sockets."""
    off = ", ".join(f"'io.containerd.snapshotter.v1.{name}'" for name in snapshotters_off)
    return (f"version = {version}\nroot = '{home}/root'\nstate = '{home}/state'\ndisabled_plugins = [{off}]\n"
            f"[grpc]\n  address = '{sockets}/containerd.sock'\n[ttrpc]\n  address = '{sockets}/containerd.ttrpc.sock'\n")


def containerd_config(home: Path, pause_image: str, default_runtime: str, runtime_roots: str) -> str:
    """Debian's containerd 1.6 on a node (version 2): its own root, state, sockets
    and CNI directories, each runtime's state under a root of the node's own."""
    cni = home / "cni"
    return containerd_top(2, home / "containerd", home, ("btrfs", "zfs", "aufs", "devmapper")) + f"""\
[plugins."io.containerd.internal.v1.opt"]
  path = "{home}/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause_image}"
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
    # youki (build-youki.sh) under the same shim, as youki's docs set it up.
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.youki]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.youki.options]
        BinaryName = "{youki_binary()}"
        Root = "/run/containerd/youki{runtime_roots}"
        SystemdCgroup = false
    # crun under the same shim.
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun.options]
        BinaryName = "/usr/bin/crun"
        Root = "/run/containerd/crun{runtime_roots}"
        SystemdCgroup = false
    # No gVisor: its shim speaks a bootstrap protocol containerd 1.6 does not
    # (it dials the JSON of its bootstrap parameters as a socket path); gVisor
    # runs on the containerd 2 pools.
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{cni / 'net.d'}"
    conf_template = "{cni / 'template.json'}"
"""


def containerd2_runtimes(bindir: Path, roots: Path, gvisor: Path | None = None) -> dict[str, dict]:
    """The RuntimeClass handlers, each with a state root of its own (under
    `roots`, so no two containerds share one): runc from the current stack's
    build and Debian's crun behind a wrapper that lets it take containerd 2's
    spec version (runtimes/crun-podshare), both under containerd's runc v2 shim;
    and with `gvisor` (build-gvisor.sh's directory) gVisor under its own shim,
    containerd-shim-runsc-v1, configured by a runsc.toml per handler
    (runsc_toml)."""
    found = {
        "runc": {"binary": str(bindir / "runc"), "root": str(roots / "runc")},
        "youki": {"binary": str(youki_binary()), "root": str(roots / "youki")},  # build-youki.sh's
        "crun": {"binary": str(WRAPPERS / "crun-podshare"), "root": str(roots / "crun")},
    }
    for handler in GVISOR_HANDLERS if gvisor else ():
        found[handler] = {"shim": "io.containerd.runsc.v1", "shim_path": str(gvisor / "containerd-shim-runsc-v1"),
                          "binary": str(gvisor / "runsc"), "root": str(roots / handler),
                          "config": str(roots / f"{handler}.toml"), "pod_annotations": ["dev.gvisor.*"]}
    return found


def runsc_toml(runtime: dict, kubelet_pods_dir: Path | None) -> str:
    """A gVisor handler's runsc.toml, read by its shim (containerd's ConfigPath):
    runsc by its path (the shim would look for `runsc` on PATH), a state root of
    the node's own (the shim's default, /run/containerd/runsc, every containerd
    here would share), where this node's kubelet keeps pods (the shim finds hinted
    emptyDirs there: cluster/gvisor/patches/03), and runsc's flags. Nothing else
    differs from gVisor's documented containerd setup."""
    pods = f"kubelet_pods_dir = '{kubelet_pods_dir}'\n" if kubelet_pods_dir else ""
    return (f"binary_name = '{runtime['binary']}'\nroot = '{runtime['root']}'\n{pods}"
            f"[runsc_config]\n  platform = '{GVISOR_PLATFORM}'\n")


def write_runsc_tomls(runtimes: dict[str, dict], kubelet_pods_dir: Path | None) -> None:
    for r in runtimes.values():
        if "config" in r:
            Path(r["config"]).parent.mkdir(parents=True, exist_ok=True)
            Path(r["config"]).write_text(runsc_toml(r, kubelet_pods_dir))


def runtime_table(handler: str, r: dict) -> str:
    """One handler in containerd 2's config: under the runc v2 shim with runc's
    options, or under gVisor's shim (by its path, runtime_path) with its
    runsc.toml (TypeUrl and ConfigPath, as gVisor's containerd docs set them)."""
    head = f"    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.{handler}]"
    annotations = f"\n      pod_annotations = {json.dumps(r['pod_annotations'])}" if "pod_annotations" in r else ""
    if "shim" in r:
        return f"""{head}
      runtime_type = '{r['shim']}'
      runtime_path = '{r['shim_path']}'{annotations}
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.{handler}.options]
        TypeUrl = 'io.containerd.runsc.v1.options'
        ConfigPath = '{r['config']}'"""
    return f"""{head}
      runtime_type = 'io.containerd.runc.v2'{annotations}
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.{handler}.options]
        BinaryName = '{r['binary']}'
        Root = '{r['root']}'
        SystemdCgroup = false"""


def containerd2_config(directory: Path, bindir: Path, pause_image: str, default_runtime: str = "runc",
                       conf_template: Path | None = None, gvisor: Path | None = None) -> str:
    """containerd 2's config, version 3: the CRI plugin is split into
    io.containerd.cri.v1.images (snapshotter, the pinned pause image) and
    io.containerd.cri.v1.runtime (runtimes, CNI, restrict_oom_score_adj);
    io.containerd.grpc.v1.cri keeps only the streaming server. A node of the
    cluster names its default runtime and its CNI template (write_cni_template).
    With `gvisor`, gVisor's handlers too (their runsc.toml: write_runsc_tomls)."""
    runtimes = containerd2_runtimes(bindir, directory / "runtimes", gvisor)
    joined = "\n".join(runtime_table(handler, r) for handler, r in runtimes.items())
    template = f"\n      conf_template = '{conf_template}'" if conf_template else ""
    return containerd_top(3, directory, directory, ("btrfs", "zfs", "devmapper", "erofs")) + f"""\
[plugins]
  [plugins.'io.containerd.internal.v1.opt']
    path = '{directory}/opt'
  # NRI is on by default in containerd 2 and would listen on /var/run/nri/nri.sock,
  # a path shared by every containerd on the machine; nothing here uses it.
  [plugins.'io.containerd.nri.v1.nri']
    disable = true
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = '{pause_image}'
  [plugins.'io.containerd.cri.v1.runtime']
    # CAP_SYS_RESOURCE is withheld here: a negative oom_score_adj makes runc fail.
    restrict_oom_score_adj = true
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = '{default_runtime}'
{joined}
    # Pods' network namespaces under the state directory, not /var/run/netns,
    # which every containerd on the machine would share.
    netns_mounts_under_state_dir = true
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ['{CNI_BIN}']
      conf_dir = '{directory}/cni/net.d'{template}
  [plugins.'io.containerd.grpc.v1.cri']
    stream_server_address = '127.0.0.1'
    stream_server_port = '0'
"""


def write_configs(ip: str, images: dict[str, str], all_workers: list[workers.Worker]) -> None:
    """Every node's configuration files, and the workers' kubeconfigs."""
    (STATE / "cni" / "net.d").mkdir(parents=True)
    write_cni_template(STATE)
    (STATE / "containerd.toml").write_text(containerd_config(STATE, images["PAUSE_IMAGE"], "runc", ""))
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
        # how often a volume's usage is measured (default 1m): an emptyDir over its sizeLimit is
        # evicted within a run (tests/test_pods_that_end.py); du of a few small volumes, cheap
        "volumeStatsAggPeriod": "10s",
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
        write_cni_template(w.dir)
        if w.pool.stack == "current":
            gvisor = workers.gvisor_bindir()
            toml = containerd2_config(w.dir, workers.runtime_bindir(), images["PAUSE_IMAGE"], w.pool.default_runtime,
                                      conf_template=w.dir / "cni" / "template.json", gvisor=gvisor)
            write_runsc_tomls(containerd2_runtimes(workers.runtime_bindir(), w.dir / "runtimes", gvisor),
                              w.kubelet_root / "pods")
        else:
            toml = containerd_config(w.dir, images["PAUSE_IMAGE"], w.pool.default_runtime, f"-{w.name}")
        workers.write_configs(w, toml, kubelet, kube_proxy)
        server = f"https://{workers.HOST_IP}:{API_PORT}"
        kubeconfig(f"kubelet-{w.name}", w.dir / "kubelet.kubeconfig", server)
        kubeconfig("kube-proxy", w.dir / "kube-proxy.kubeconfig", server)
