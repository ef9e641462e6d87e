"""A shared file system whose nodes are separate clients (issue 26 §5): one
export directory on the host served over SFTP on 127.0.0.1 (OpenSSH's
sftp-server behind a socat listener), and one sshfs mount per node under that
node's own directory, each its own FUSE connection and its own SFTP session,
so what one node writes reaches another only through the server, with the
caching, locking and notification a network file system has.

The StorageClass `shared-sshfs` is served by the local-path provisioner already
running: its per-class config (`storageClassConfigs`, local-path-provisioner
v0.0.30) maps each node to its own client's mount, so a volume provisioned for a
pod on node X is a directory under X's client. That mapping (nodePathMap) gives
PersistentVolumes pinned to their node and only ReadWriteOnce/ReadWriteOncePod
(the provisioner refuses other modes for it); its `sharedFileSystemPath` mode
(ReadWriteMany, no node affinity) would name ONE path for every node, that is one
client here, where all nodes share the host's mount namespace.

    python -m cluster.shared_fs start --nodes vm vm-current [--apply]
    python -m cluster.shared_fs stop  --nodes vm vm-current
    python -m cluster.shared_fs left            # what of it is still on the machine
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path

from .layout import API_PORT, HERE, SHARED_FS_PORT
from .processes import STATE, ClusterError, alive, pidfile, sh, start, stop, wait_for

EXPORT = STATE / "shared-export"
SERVER = "shared-fs-server"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
CLASS = "shared-sshfs"
LOCAL_PATH_CLASS = "local-path"
# sshfs options, deliberately few: sshfs's defaults are what a user gets (its
# attribute, directory and name caches, no kernel_cache, no reconnect).
# allow_other: the clients are mounted by root and the pods run as other users
# (the probe image's 65532); without it FUSE refuses (EACCES) every user but the
# one who mounted it.
# No default_permissions: as with any sshfs mount, every local user acts as the
# one SFTP account (here the server's, root), and the server decides; files
# therefore show the server's owner (uid 0), whoever wrote them.
# directport: plain SFTP over TCP to the listener, no ssh and no keys.
SSHFS_OPTIONS = f"directport={SHARED_FS_PORT},allow_other"


def client_dir(node: str) -> Path:
    """Node `node`'s own client: the mount point its volumes live under."""
    return STATE / "nodes" / node / "shared"


def client_name(node: str) -> str:
    return f"sshfs-{node}"


def start_server() -> None:
    """The SFTP export: socat forks one sftp-server (as root, the one account
    every client acts as) per connection, confined to 127.0.0.1."""
    EXPORT.mkdir(parents=True, exist_ok=True)
    EXPORT.chmod(0o755)
    start(SERVER, ["socat", f"TCP-LISTEN:{SHARED_FS_PORT},bind=127.0.0.1,fork,reuseaddr",
                   f"EXEC:{SFTP_SERVER} -d {EXPORT}"])
    wait_for(f"the SFTP listener on 127.0.0.1:{SHARED_FS_PORT}", _listening, 10, (SERVER,))


def _listening() -> bool:
    return f"127.0.0.1:{SHARED_FS_PORT} " in sh("ss", "-Hltn", capture=True).stdout


def mount_client(node: str) -> None:
    """Node `node`'s sshfs client, in the foreground (-f) so that its pid is
    recorded and stopped like every other process of the cluster."""
    where = client_dir(node)
    where.mkdir(parents=True, exist_ok=True)
    start(client_name(node), ["sshfs", "-f", "-o", SSHFS_OPTIONS, f"127.0.0.1:{EXPORT}", where])
    wait_for(f"{node}'s sshfs mount at {where}", lambda: str(where) in mounted(), 15, (client_name(node),))


def mounted() -> list[str]:
    """Mount points of our export's sshfs clients (bind mounts of them included:
    a kubelet's, under a pod's directory), from the host's mount table."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            after = fields[fields.index("-") + 1:]
            if after[0] == "fuse.sshfs" and after[1] == f"127.0.0.1:{EXPORT}":
                found.append(fields[4].replace("\\040", " "))
    return found


def provisioner_config(local_path_dir: str, nodes: list[str]) -> str:
    """The local-path provisioner's config.json with both classes. Once
    `storageClassConfigs` is set, v0.0.30 serves only the classes it names ("BUG:
    Got request for unexpected storage class" for any other), so local-path is
    listed beside shared-sshfs with the default config it had."""
    return json.dumps({"storageClassConfigs": {
        LOCAL_PATH_CLASS: {"nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": [local_path_dir]}]},
        CLASS: {"nodePathMap": [{"node": n, "paths": [str(client_dir(n))]} for n in nodes]}}})


def local_path_only(local_path_dir: str) -> str:
    """config.json as cluster/local-path.yaml has it: the default class alone."""
    return json.dumps({"nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": [local_path_dir]}]})


def start_all(nodes: list[str]) -> None:
    """The server, then each node's client; on failure, whatever was started is stopped."""
    try:
        start_server()
        for node in nodes:
            mount_client(node)
    except (ClusterError, OSError):
        stop_all()
        raise


def stop_all() -> list[str]:
    """Unmount every client (lazily when busy), stop them and the server, remove
    the export; returns what is still there. Safe to call at any point, twice,
    and without knowing the nodes: the clients are found by their pid files."""
    problems = []
    clients = [p.stem for p in (STATE / "pids").glob("sshfs-*.pid")]
    for where in mounted():  # the kubelets' bind mounts of a client too
        if sh("fusermount3", "-u", where, check=False, capture=True).returncode != 0 and \
                sh("fusermount3", "-u", "-z", where, check=False, capture=True).returncode != 0:
            problems.append(f"mount {where}")
    for name in clients:
        stop(name)
        (STATE / "pids" / f"{name}.pid").unlink(missing_ok=True)
    stop(SERVER)
    pidfile(SERVER).unlink(missing_ok=True)
    for pid in _server_processes():  # sessions socat forked, if a client outlived its unmount
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    shutil.rmtree(EXPORT, ignore_errors=True)
    for where in STATE.glob("nodes/*/shared"):
        try:
            where.rmdir()  # empty once unmounted; a node's directory made only for it goes too
            if not any(where.parent.iterdir()):
                where.parent.rmdir()
        except OSError:
            problems.append(f"directory {where}")
    return problems + left_behind()


def _server_processes() -> list[int]:
    """sshfs, socat and sftp-server processes of our export, found by their command line."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        # the CSI driver's provisioner names the export too: it is shared_csi's to stop
        if str(EXPORT).encode() in cmdline and state != "Z" and \
                not cmdline.split(b"\0")[0].endswith(b"podshare-sshfs-csi"):
            found.append(int(entry))
    return found


def left_behind() -> list[str]:
    """What of the shared file system is still on the machine."""
    found = [f"mount {m}" for m in mounted()]
    found += [f"process {pid}" for pid in _server_processes()]
    if alive(SERVER):
        found.append(f"process {SERVER}")
    if EXPORT.exists():
        found.append(f"directory {EXPORT}")
    found += [f"directory {d}" for d in STATE.glob("nodes/*/shared")]
    return found


# ---------------------------------------------------------------- the class on a running cluster

def _api(method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    ctx = ssl.create_default_context(cafile=str(STATE / "pki" / "ca.crt"))
    ctx.load_cert_chain(STATE / "pki" / "admin.crt", STATE / "pki" / "admin.key")
    request = urllib.request.Request(f"https://127.0.0.1:{API_PORT}{path}", method=method,
                                     data=json.dumps(body).encode() if body else None,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, context=ctx, timeout=10) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, {}


CONFIGMAP = "/api/v1/namespaces/local-path-storage/configmaps/local-path-config"
STORAGE_CLASSES = "/apis/storage.k8s.io/v1/storageclasses"


def _set_provisioner_config(config: str) -> None:
    code, cm = _api("GET", CONFIGMAP)
    if code != 200:
        raise ClusterError(f"reading the local-path provisioner's ConfigMap: HTTP {code}")
    cm["data"]["config.json"] = config
    code, _ = _api("PUT", CONFIGMAP, cm)
    if code != 200:
        raise ClusterError(f"updating the local-path provisioner's ConfigMap: HTTP {code}")


def apply_class(nodes: list[str]) -> None:
    """On a running cluster (`up` renders the same config into cluster/local-path.yaml
    instead): the provisioner's config with both classes, and the StorageClass. The
    provisioner reads its mounted config again every 30 s, after the kubelet has
    updated the ConfigMap volume."""
    _set_provisioner_config(provisioner_config(str(STATE / "local-path"), nodes))
    import yaml
    body = yaml.safe_load((HERE / "shared-sshfs.yaml").read_text())
    code, _ = _api("POST", STORAGE_CLASSES, body)
    if code not in (200, 201, 409):
        raise ClusterError(f"creating StorageClass {CLASS}: HTTP {code}")


def remove_class() -> None:
    code, _ = _api("DELETE", f"{STORAGE_CLASSES}/{CLASS}")
    if code not in (200, 202, 404):
        raise ClusterError(f"deleting StorageClass {CLASS}: HTTP {code}")
    _set_provisioner_config(local_path_only(str(STATE / "local-path")))


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.shared_fs", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["start", "stop", "left"])
    parser.add_argument("--nodes", nargs="+", default=[])
    parser.add_argument("--apply", action="store_true",
                        help="start: also give the running cluster's provisioner the class and create it; "
                             "stop: delete it and give the provisioner back its config")
    args = parser.parse_args()
    if args.action == "start":
        start_all(args.nodes)
        if args.apply:
            apply_class(args.nodes)
        print(f"shared file system: {SFTP_SERVER} on 127.0.0.1:{SHARED_FS_PORT} serving {EXPORT}; clients: "
              + ", ".join(str(client_dir(n)) for n in args.nodes), file=sys.stderr)
        return 0
    if args.action == "stop" and args.apply:
        remove_class()
    problems = stop_all() if args.action == "stop" else left_behind()
    print("shared file system: " + ("; ".join(problems) if problems else "nothing left"), file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
