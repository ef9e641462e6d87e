"""The shared file system (cluster/shared_fs.py): each node its own sshfs client
of one SFTP export, what one client writes read through another, and nothing
left once it is stopped: no FUSE mount of the export, no sshfs, socat or
sftp-server process, no export directory. Run as its own instance (a state
directory and a port of its own), as `up` and `down` run it, beside any cluster."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cluster import addons, shared_fs as fs
from cluster.layout import HERE

from .conftest import not_applicable
from .suite_run import PROJECT

needs_fuse = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("sshfs") or not Path("/dev/fuse").exists(),
                                reason="mounts FUSE file systems (root, sshfs, /dev/fuse: cluster/install-deps.sh)")
NODES = ("node-a", "node-b")


def shared_fs(state: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PODSHARE_CLUSTER_DIR": str(state), "PODSHARE_SHARED_FS_PORT": "22099"}
    return subprocess.run([sys.executable, "-m", "cluster.shared_fs", *args], cwd=PROJECT, env=env,
                          capture_output=True, text=True, timeout=60)


def sshfs_mounts_of(state: Path) -> list[str]:
    """Mount points (bind mounts too) whose source is this instance's export."""
    with open("/proc/self/mountinfo") as f:
        rows = [line.split() for line in f]
    return [r[4] for r in rows if r[r.index("-") + 1] == "fuse.sshfs" and str(state) in r[r.index("-") + 2]]


def processes_of(state: Path) -> list[str]:
    """Live processes whose command line names this instance's state (sshfs, socat, sftp-server)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            zombie = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
        except OSError:
            continue
        if str(state) in cmdline and not zombie:
            found.append(f"{pid} {cmdline}")
    return found


@pytest.fixture
def state(tmp_path):
    yield tmp_path / "cluster"
    shared_fs(tmp_path / "cluster", "stop")  # whatever a failing test left


@needs_fuse
def test_each_node_is_a_client_of_its_own_and_nothing_is_left_after_stop(state):
    started = shared_fs(state, "start", "--nodes", *NODES)
    assert started.returncode == 0, started.stderr
    clients = [state / "nodes" / n / "shared" for n in NODES]
    assert sorted(sshfs_mounts_of(state)) == sorted(map(str, clients))
    # two connections, two devices: separate clients of one server
    assert len({os.stat(c).st_dev for c in clients}) == 2
    assert sum(" sshfs " in f" {p.split(' ', 1)[1]}" for p in processes_of(state)) == 2, processes_of(state)
    (clients[0] / "through-a").write_text("written through node-a's client")
    assert (clients[1] / "through-a").read_text() == "written through node-a's client"
    assert (state / "shared-export" / "through-a").exists()  # it went through the server

    stopped = shared_fs(state, "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert sshfs_mounts_of(state) == []
    assert processes_of(state) == []
    assert not (state / "shared-export").exists() and not list(state.glob("nodes/*/shared"))
    assert shared_fs(state, "left").returncode == 0


@needs_fuse
def test_a_client_that_cannot_mount_stops_what_was_started(state):
    """`up` failing halfway: the server started, a client's mount point is taken
    (a file, not a directory), so start fails, and nothing of it is left."""
    (state / "nodes" / "node-b").mkdir(parents=True)
    (state / "nodes" / "node-b" / "shared").write_text("not a directory")
    started = shared_fs(state, "start", "--nodes", *NODES)
    assert started.returncode != 0
    assert sshfs_mounts_of(state) == [] and processes_of(state) == []
    assert not (state / "shared-export").exists()


@needs_fuse
def test_a_busy_client_is_unmounted_too(state):
    """`down` with pods still on a volume: a file held open through a client and a
    bind mount of it (as a kubelet makes for a pod) are no reason to leave it: the
    unmount is lazy and the client stopped while the file is still open."""
    assert shared_fs(state, "start", "--nodes", *NODES).returncode == 0
    client, bound = state / "nodes" / NODES[0] / "shared", state / "kubelet-pod-volume"
    bound.mkdir()
    subprocess.run(["mount", "--bind", client, bound], check=True)
    holder = subprocess.Popen(["sleep", "300"], stdout=open(client / "held", "w"))
    try:
        assert len(sshfs_mounts_of(state)) == 3
        stopped = shared_fs(state, "stop")
        assert stopped.returncode == 0, stopped.stderr
        assert sshfs_mounts_of(state) == [] and processes_of(state) == []
        assert not (state / "shared-export").exists()
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.skipif(not os.environ.get("PODSHARE_LOCAL_CLUSTER"), reason="the bundled cluster's shared file system")
def test_the_bundled_cluster_gives_every_node_its_client_and_the_class():
    from podshare.kube import Kube
    kube = Kube()
    nodes = [n.metadata.name for n in kube.nodes()]
    # each node's own client (a kubelet's bind mounts of a client's volumes are listed too)
    assert {str(fs.client_dir(n)) for n in nodes} <= set(fs.mounted()), fs.mounted()
    classes = {c.metadata.name: c for c in kube.storage_classes()}
    assert classes[fs.CLASS].provisioner == "rancher.io/local-path", sorted(classes)


def test_up_gives_the_provisioner_both_classes():
    """What `up` applies: the provisioner's config serves local-path as before and
    shared-sshfs on each node's own client (v0.0.30 serves no class that
    storageClassConfigs leaves out), and the class is ReadWriteOnce's binding mode."""
    made = []
    config = fs.provisioner_config("/lp", ["vm", "vm-current"])
    addons.apply(HERE / "local-path.yaml", {"LOCAL_PATH_IMAGE": "image", "LOCAL_PATH_CONFIG": config},
                 lambda path, body: (made.append(body), (201, {}))[1])
    addons.apply(HERE / "shared-sshfs.yaml", {}, lambda path, body: (made.append(body), (201, {}))[1])
    cm = next(b for b in made if b["kind"] == "ConfigMap")
    classes = json.loads(cm["data"]["config.json"])["storageClassConfigs"]
    assert classes["local-path"] == {"nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": ["/lp"]}]}
    assert classes[fs.CLASS] == {"nodePathMap": [{"node": n, "paths": [str(fs.client_dir(n))]}
                                                 for n in ("vm", "vm-current")]}
    sc = next(b for b in made if b["kind"] == "StorageClass" and b["metadata"]["name"] == fs.CLASS)
    assert sc["provisioner"] == "rancher.io/local-path" and sc["volumeBindingMode"] == "WaitForFirstConsumer"


KNOWN = "cluster/shared-fs-known-divergences.yaml"


@pytest.fixture(scope="module")
def on_the_shared_class(tmp_path_factory) -> dict:
    """Every volume claim on a PVC of shared-sshfs on the first node (make test's
    run, handed over in PODSHARE_SHARED_FS_RESULTS; else run here, about a minute)."""
    given = os.environ.get("PODSHARE_SHARED_FS_RESULTS")
    if given:
        return json.loads(Path(given).read_text())
    from .conftest import run_suites
    reports = tmp_path_factory.mktemp("shared-fs")
    run_suites("-m", "volume", "--node", socket.gethostname().lower(), "--storage-class", fs.CLASS,
               "--known-divergences", KNOWN, "--reports-dir", str(reports))
    return json.loads((reports / "results.json").read_text())


@pytest.mark.skipif(not os.environ.get("PODSHARE_LOCAL_CLUSTER"), reason="the bundled cluster's shared file system")
def test_the_shared_class_diverges_exactly_where_its_file_says(on_the_shared_class):
    """On PVCs of shared-sshfs the containers see sshfs (fuse.sshfs, the export as its
    source); the claims that fail there are exactly those the file lists through
    `storage_class:` (known divergences), and the emptyDirs beside them keep every promise."""
    from podshare.known_divergences import KnownDivergences
    known = KnownDivergences.load(KNOWN)
    checks = [c for c in on_the_shared_class["checks"] if c.get("volume") and not not_applicable(c)]
    shared = {c["claim_id"]: c for c in checks if c["volume"] == f"pvc:{fs.CLASS}"}
    assert len(shared) >= 7, sorted(shared)
    for c in shared.values():
        seen = c["evidence"].get("shared_volume") or {}
        assert seen.get("fstype") == "fuse.sshfs", (c["claim_id"], seen)
    listed = {k for k in shared if known.match(k, None, volume=f"pvc:{fs.CLASS}")}
    diverged = {k for k, c in shared.items() if c["outcome"] != "passed"}
    assert listed and diverged == listed, {"diverge, not listed": sorted(diverged - listed),
                                           "listed, hold": sorted(listed - diverged)}
    assert all(shared[k]["outcome"] == "known-divergence" for k in listed)
    assert all(c["outcome"] == "passed" for c in checks if not c["volume"].startswith("pvc:")), \
        [(c["claim_id"], c["outcome"]) for c in checks if c["outcome"] != "passed"]
