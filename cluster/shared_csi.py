"""The shared file system's CSI driver (cluster/csi, podshare-sshfs-csi) and its
ReadWriteMany class `shared-sshfs-rwx` (issue 26 §2: pods on two nodes on ONE
claim, each through its own node's sshfs client).

Why a CSI driver: a hostPath PersistentVolume names one path, and every kubelet
here shares the host's mount namespace, so one PV cannot resolve to a different
client per node (the class shared-sshfs is therefore ReadWriteOnce, pinned to a
node). A CSI node plugin runs once per kubelet: each node's plugin bind-mounts
the volume's directory from its own node's client (STATE/nodes/N/shared).

- one node plugin per node, `csi-node-<node>`: CSI on
  <kubelet root>/plugins/podshare.io~sshfs/csi.sock, registered with that
  kubelet through <kubelet root>/plugins_registry/sshfs.podshare.io-reg.sock;
- one provisioner, `csi-provisioner`: each volume a directory `<export>/<pv>`,
  made on the server's side (the export on the host), removed on Delete.

Started after the shared file system (shared_fs.start_all), stopped before it.

    python -m cluster.shared_csi start [--nodes vm vm-current] [--apply]
    python -m cluster.shared_csi stop [--apply]
    python -m cluster.shared_csi left      # what of it is still on the machine
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from . import addons, shared_fs, workers
from .layout import HERE, NODE
from .processes import STATE, ClusterError, alive, pidfile, sh, start, stop, wait_for

DRIVER = "sshfs.podshare.io"
CLASS = "shared-sshfs-rwx"
MANIFEST = HERE / "shared-sshfs-rwx.yaml"
PROVISIONER = "csi-provisioner"
BINARY_NAME = "podshare-sshfs-csi"
# the provisioner's volumes: directories of the export named as their PV (local-path's
# shared-sshfs volumes there are named pvc-<uid>_<namespace>_<claim>)
VOLUME_DIR = re.compile(r"^pvc-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def node_plugin(node: str) -> str:
    return f"csi-node-{node}"


def kubelet_roots() -> dict[str, Path]:
    """Each node's kubelet --root-dir: the first node's STATE/kubelet
    (components.py), a worker's STATE/nodes/<node>/kubelet (workers.py)."""
    return {NODE: STATE / "kubelet", **{w.name: w.kubelet_root for w in workers.recorded()}}


def csi_socket(root: Path) -> Path:
    return root / "plugins" / "podshare.io~sshfs" / "csi.sock"


def registration_socket(root: Path) -> Path:
    return root / "plugins_registry" / f"{DRIVER}-reg.sock"


def binary() -> str:
    """build-csi.sh's binary (cached by its inputs: a warm call returns at once)."""
    return sh(HERE / "build-csi.sh", capture=True).stdout.strip()


def _registered(node: str) -> bool:
    code, csinode = shared_fs._api("GET", f"/apis/storage.k8s.io/v1/csinodes/{node}")
    return code == 200 and any(d.get("name") == DRIVER and d.get("nodeID") == node
                               for d in csinode.get("spec", {}).get("drivers") or [])


def start_all(nodes: list[str]) -> None:
    """A node plugin per node (each until its kubelet lists the driver in the node's
    CSINode), then the provisioner; on failure, whatever was started is stopped."""
    exe = binary()
    roots = kubelet_roots()
    try:
        for node in nodes:
            if node not in roots:
                raise ClusterError(f"no node {node} in this cluster ({', '.join(roots)})")
            name, root = node_plugin(node), roots[node]
            start(name, [exe, "node", "--node-name", node, "--endpoint", f"unix://{csi_socket(root)}",
                         "--registration-dir", root / "plugins_registry",
                         "--client-dir", shared_fs.client_dir(node)])
            wait_for(f"{node}'s kubelet to register {DRIVER}", lambda node=node: _registered(node), 60, (name,))
        start(PROVISIONER, [exe, "provisioner", "--kubeconfig", STATE / "admin.kubeconfig",
                            "--export", shared_fs.EXPORT])
        wait_for("the CSI provisioner", lambda: alive(PROVISIONER), 5, (PROVISIONER,))
    except (ClusterError, OSError):
        stop_all()
        raise


def _publish_mounts() -> list[str]:
    """The driver's mounts: under a kubelet's pods/, a volume of kubernetes.io~csi
    whose source is our export (the kubelets' other sshfs binds are local-path's)."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            after = fields[fields.index("-") + 1:]
            where = fields[4].replace("\\040", " ")
            if after[0] == "fuse.sshfs" and after[1] == f"127.0.0.1:{shared_fs.EXPORT}" and \
                    where.startswith(str(STATE) + "/") and "/pods/" in where and "/volumes/kubernetes.io~csi/" in where:
                found.append(where)
    return found


def _processes() -> list[int]:
    """Any process of the driver's binary serving this cluster, recorded or not."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{entry}/stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if argv[0].endswith(BINARY_NAME.encode()) and any(str(STATE).encode() in a for a in argv) and state != "Z":
            found.append(int(entry))
    return found


def stop_all() -> list[str]:
    """Stop the plugins and the provisioner by their pids (a plugin removes its
    sockets on SIGTERM: the kubelet then deregisters the driver), remove sockets a
    killed one left, unmount what the kubelets left published (lazily when busy).
    Safe at any point, twice, and without knowing the nodes (pid files). Returns
    what it could not remove; the export's volume directories go with the export
    (shared_fs.stop_all) or with their PVs."""
    problems = []
    for name in [p.stem for p in (STATE / "pids").glob("csi-*.pid")]:
        stop(name)
        pidfile(name).unlink(missing_ok=True)
    for root in _all_kubelet_roots():
        for sock in (registration_socket(root), csi_socket(root)):
            sock.unlink(missing_ok=True)
        try:
            csi_socket(root).parent.rmdir()
        except OSError:
            pass
    for where in _publish_mounts():
        if sh("umount", where, check=False, capture=True).returncode != 0 and \
                sh("umount", "-l", where, check=False, capture=True).returncode != 0:
            problems.append(f"mount {where}")
    return problems


def _all_kubelet_roots() -> list[Path]:
    """Every kubelet root there is, recorded or not (after a crash too)."""
    return [STATE / "kubelet", *STATE.glob("nodes/*/kubelet")]


def left_behind() -> list[str]:
    """What of the driver is still on the machine: a plugin or provisioner process,
    a socket in a kubelet's plugins or plugins_registry, a published mount under
    a kubelet's pods/, a volume directory of the export."""
    found = [f"process {pid}" for pid in _processes()]
    found += [f"process {p.stem}" for p in (STATE / "pids").glob("csi-*.pid") if alive(p.stem)]
    for root in _all_kubelet_roots():
        found += [f"socket {s}" for s in (registration_socket(root), csi_socket(root)) if s.exists()]
    found += [f"mount {m}" for m in _publish_mounts()]
    if shared_fs.EXPORT.is_dir():
        found += [f"directory {d}" for d in shared_fs.EXPORT.iterdir() if VOLUME_DIR.match(d.name)]
    return found


# ---------------------------------------------------------------- the class on a running cluster

def _post(path: str, body: dict) -> tuple[int, dict]:
    code, answer = shared_fs._api("POST", path, body)
    return (200, answer) if code == 409 else (code, answer)  # already there (a second start)


def apply_class() -> list[str]:
    """The CSIDriver and the class, as `up` applies them (addons.apply)."""
    return addons.apply(MANIFEST, {}, _post)


def remove_class() -> None:
    for path in (f"/apis/storage.k8s.io/v1/storageclasses/{CLASS}", f"/apis/storage.k8s.io/v1/csidrivers/{DRIVER}"):
        code, _ = shared_fs._api("DELETE", path)
        if code not in (200, 202, 404):
            raise ClusterError(f"deleting {path}: HTTP {code}")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.shared_csi", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["start", "stop", "left"])
    parser.add_argument("--nodes", nargs="+", default=None, help="start: these nodes' plugins (default: every node)")
    parser.add_argument("--apply", action="store_true",
                        help="start: also create the CSIDriver and the class; stop: delete them first")
    args = parser.parse_args()
    if args.action == "start":
        nodes = args.nodes or list(kubelet_roots())
        missing = [n for n in nodes if str(shared_fs.client_dir(n)) not in shared_fs.mounted()]
        if missing:
            print(f"shared CSI: no sshfs client for {', '.join(missing)}: start the shared file system first "
                  "(python -m cluster.shared_fs start)", file=sys.stderr)
            return 1
        start_all(nodes)
        made = apply_class() if args.apply else []
        print(f"shared CSI: {DRIVER} node plugins on {', '.join(nodes)}, provisioner on {shared_fs.EXPORT}"
              + (f"; applied {', '.join(made)}" if made else ""), file=sys.stderr)
        return 0
    if args.action == "stop":
        if args.apply:
            remove_class()
        problems = stop_all() + left_behind()
    else:
        problems = left_behind()
    print("shared CSI: " + ("; ".join(problems) if problems else "nothing left"), file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
