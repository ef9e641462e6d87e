"""Taking the local cluster down: stop what `up` started on every node, kill what
outlived it (pods' processes, containerd shims, gVisor sandboxes), then remove
its mounts, network, iptables chains, cgroups and state, and put the sysctls
back; what could not be removed is said, not hidden."""
from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from . import shared_csi, shared_fs, workers
from .layout import BRIDGE, COMPONENTS, DEVICE_PLUGIN_DIR
from .processes import STATE, sh, stop

CHAIN_PREFIXES = ("KUBE-", "CNI-", "PODSHARE-")


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
        if argv and argv[0].endswith((b"containerd-shim-runc-v2", b"containerd-shim-runsc-v1")) and \
                any(str(STATE).encode() in a for a in argv):
            pids.append(int(entry))
        # gVisor's sandboxes and gofers, which may outlive their shim: found by
        # runsc's root (a node's own, under the state directory).
        elif b"runsc" in argv[0] and any(str(STATE).encode() in a for a in argv):
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
    # the CSI driver first (its plugins, sockets and what the kubelets left published),
    # then the shared file system's clients, server and export (its FUSE mounts are not
    # left to the lazy unmounts below: the sshfs processes are stopped by pid)
    problems += shared_csi.stop_all()
    problems += shared_fs.stop_all()
    problems += shared_csi.left_behind()
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
    for leftover in (STATE, Path("/run/containerd"), Path("/var/lib/cni"), DEVICE_PLUGIN_DIR):
        shutil.rmtree(leftover, ignore_errors=True)
        if leftover.exists():
            problems.append(f"directory {leftover}")
    try:  # the kubelets' shared parent, unless something else keeps files there
        DEVICE_PLUGIN_DIR.parent.rmdir()
    except OSError:
        pass
    return problems
