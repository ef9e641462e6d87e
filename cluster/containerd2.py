"""containerd 2 for the current stack: its config (version 3, configs.py's) with
the cluster's runtimes (runc, crun, and gVisor under its own shim as `gvisor` and
`gvisor-hinted`), and a standalone check that runs one container under each of
them with `ctr`, in directories, a socket and a namespace of its own, apart from
any running cluster.

From the project root:

    python -m cluster.containerd2 config --dir DIR
                                        print the config for a containerd rooted in DIR
    python -m cluster.containerd2 check [--keep]
                                        start a private containerd 2 (from
                                        build-runtime.sh, gVisor from build-gvisor.sh),
                                        import the probe image, run a container under
                                        runc, crun, youki and gVisor with ctr (and
                                        under runc and crun in a user namespace, Debian's crun
                                        without its wrapper), then through the CRI with
                                        crictl (each handler's features, a pod per
                                        handler, runc with hostUsers: false, a pod pair
                                        per runc, crun and youki, and a pod
                                        of two containers sharing emptyDir-like volumes
                                        under gvisor and, with GKE's hints, under
                                        gvisor-hinted); print what each saw as JSON,
                                        remove everything; exit 0 when every
                                        configured runtime ran

Root is required. The check needs the probe image archive (`python -m cluster.images build`).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .configs import GVISOR_HANDLERS, containerd2_config, containerd2_runtimes, write_runsc_tomls
from .images import read_env
from .layout import HERE, PROJECT
from .runtime_versions import current_runtimes, of_handlers

CHECK_NAMESPACE = "podshare-check"  # a ctr namespace no cluster uses
CHECK_POD_SUBNET = "203.0.113.0/24"  # documentation range, used by no cluster here; never routed


def run(*cmd, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)


class Private:
    """A containerd 2 of its own in a temporary directory; `close` stops it and
    removes what it left (tasks, mounts, cgroups, the directory)."""

    def __init__(self, bindir: Path, pause_image: str, gvisor: Path):
        self.bindir, self.gvisor = bindir, gvisor
        self.killed: list[str] = []  # what close() had to kill
        self.dir = Path(tempfile.mkdtemp(prefix="podshare-containerd2-"))
        # In a user namespace the container's root (uid 100000 on the host) must
        # search every directory above its rootfs, or runc fails with "error
        # preparing rootfs: remount-propagation ...: permission denied" (EACCES).
        self.dir.chmod(0o711)
        (self.dir / "cni" / "net.d").mkdir(parents=True)
        # CRI pods get a network namespace of their own (never the host's: gVisor's
        # wrapper must not start a sandbox there) with an eth0, which containerd
        # requires, on a bridge of this instance's own that has no address on the
        # host and no route to it: nothing outside the pods can reach them.
        self.bridge = "pschk" + self.dir.name[-8:]
        (self.dir / "cni" / "net.d" / "10-check.conflist").write_text(json.dumps(
            {"cniVersion": "0.4.0", "name": "podshare-check", "plugins": [
                {"type": "bridge", "bridge": self.bridge, "isGateway": False, "ipMasq": False,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": CHECK_POD_SUBNET}]],
                          "dataDir": str(self.dir / "cni" / "ipam")}}]}))
        (self.dir / "containerd.toml").write_text(containerd2_config(self.dir, bindir, pause_image, gvisor=gvisor))
        # The hinted emptyDirs are found under a kubelet's pods directory: this
        # instance's stands in for one (check_shared_volumes makes the volumes).
        self.kubelet_pods = self.dir / "kubelet" / "pods"
        write_runsc_tomls(self.runtimes(), self.kubelet_pods)
        self.socket = self.dir / "containerd.sock"
        # containerd finds containerd-shim-runc-v2 on its PATH: put the build first.
        env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
        self.log = open(self.dir / "containerd.log", "w")
        self.proc = subprocess.Popen([bindir / "containerd", "--config", self.dir / "containerd.toml"],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 30
        while not self.ctr("version").returncode == 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"containerd did not come up:\n{self.log_tail()}")
            time.sleep(0.2)

    def runtimes(self) -> dict[str, dict]:
        return containerd2_runtimes(self.bindir, self.dir / "runtimes", self.gvisor)

    def ctr(self, *args, ns: str = CHECK_NAMESPACE, timeout: float = 120) -> subprocess.CompletedProcess:
        return run(self.bindir / "ctr", "--address", self.socket, "-n", ns, *args, timeout=timeout)

    def crictl(self, *args, timeout: float = 150) -> subprocess.CompletedProcess:
        endpoint = f"unix://{self.socket}"
        return run(self.bindir / "crictl", "--config", "/dev/null", "--runtime-endpoint", endpoint,
                   "--image-endpoint", endpoint, "--timeout", "120s", *args, timeout=timeout)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join((self.dir / "containerd.log").read_text(errors="replace").splitlines()[-lines:])

    def close(self, keep: bool = False) -> list[str]:
        left = []
        self.crictl("rmp", "--force", "--all")  # CRI pods, with their network namespaces
        for ns in self.ctr("namespaces", "ls", "-q").stdout.split():
            for task in self.ctr("tasks", "ls", "-q", ns=ns).stdout.split():
                self.ctr("tasks", "kill", "-s", "SIGKILL", task, ns=ns)
                self.ctr("tasks", "delete", "-f", task, ns=ns)
            for container in self.ctr("containers", "ls", "-q", ns=ns).stdout.split():
                self.ctr("containers", "delete", container, ns=ns)
        self.proc.send_signal(signal.SIGTERM)
        # A shim whose task never came up (and its runsc sandbox and gofer) outlives
        # containerd: found by this instance's directory in its command line.
        for entry in filter(str.isdigit, os.listdir("/proc")):
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if Path(argv[0].decode(errors="replace")).name.startswith(("containerd-shim", "runsc")) and \
                    any(str(self.dir).encode() in a for a in argv):
                try:
                    os.kill(int(entry), signal.SIGKILL)
                    self.killed.append(argv[0].decode(errors="replace"))
                except ProcessLookupError:
                    pass
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        if Path(f"/sys/class/net/{self.bridge}").exists() and run("ip", "link", "del", self.bridge).returncode:
            left.append(f"bridge {self.bridge}")
        for line in reversed(Path("/proc/self/mounts").read_text().splitlines()):
            target = line.split()[1]
            if target.startswith(str(self.dir)):
                if run("umount", "-l", target).returncode:
                    left.append(f"mount {target}")
        # runc and crun leave the namespace's parent cgroup (/<namespace>) behind;
        # one still in use (another check running at once) stays.
        for hierarchy in Path("/sys/fs/cgroup").iterdir():
            parent = hierarchy / CHECK_NAMESPACE
            if parent.is_dir():
                for d in [*sorted(parent.rglob("*"), key=lambda p: -len(p.parts)), parent]:
                    try:
                        d.rmdir()
                    except OSError:
                        pass
        if not keep:
            shutil.rmtree(self.dir, ignore_errors=True)
            if self.dir.exists():
                left.append(str(self.dir))
        return left


def archives() -> dict[str, Path]:
    """The image archives by name (probe, pause, ...), from images.py (cached:
    built only if missing)."""
    out = run(sys.executable, "-m", "cluster.images", "build", timeout=900, cwd=PROJECT)
    if out.returncode:
        raise RuntimeError(f"images.py build failed:\n{out.stderr[-2000:]}")
    return {Path(p).name.split("-")[0]: Path(p) for p in out.stdout.split()}


# What each container reports, written into a host directory bound at /out:
# the kernel it sees (gVisor answers with its own), its uid map, and its cgroups.
REPORT = ("uname -r > /out/uname; cat /proc/self/uid_map > /out/uid_map; cat /proc/self/cgroup > /out/cgroup;"
          " echo done > /out/done; exec sleep 600")
LIST = {"runc": ["{binary}", "--root", "{root}/" + CHECK_NAMESPACE, "list"],
        "crun": ["/usr/bin/crun", "--root", "{root}/" + CHECK_NAMESPACE, "list"],
        "youki": ["{binary}", "--root", "{root}/" + CHECK_NAMESPACE, "list"],
        "gvisor": ["{binary}", "--root", "{root}/" + CHECK_NAMESPACE, "list"]}


USERNS_MAP = "0:100000:65536"  # what a kubelet gives a pod: 65536 ids at a multiple of 65536


def check_runtime(ctrd: Private, handler: str, image: str, userns: bool = False, binary: str | None = None) -> dict:
    """Start a detached task under `handler` (ctr passes BinaryName and Root to
    the runc v2 shim as the CRI would; for gVisor, its shim by path and the
    handler's runsc.toml), read what it wrote, list it with the runtime's own
    `list` (the evidence of which runtime runs it), then stop it.
    With `userns`, in a user namespace of its own (ctr chowns a copy of the
    image's snapshot; a kubelet's pod gets idmapped mounts instead). `binary`
    replaces the handler's BinaryName (to show what the wrapper is for)."""
    r = dict(ctrd.runtimes()[handler])
    name = f"{handler}-userns" if userns else handler
    if binary:
        r["binary"], name = binary, f"{name}-as-{Path(binary).name}"
    out = ctrd.dir / "out" / name
    out.mkdir(parents=True)
    out.chmod(0o777)  # the probe image runs as 65532
    cid = f"check-{name}"
    extra = ["--uidmap", USERNS_MAP, "--gidmap", USERNS_MAP] if userns else []
    runtime = ["--runtime", "io.containerd.runc.v2", "--runc-binary", r["binary"], "--runc-root", r["root"]]
    if "shim" in r:
        # gVisor's shim by path with the handler's runsc.toml. Marked as the CRI marks
        # a pod's sandbox: unmarked, the shim gives runsc no stdio of its own for the
        # container it creates, runsc's sandbox keeps the pipe the shim reads its
        # create's output from, and `ctr run` never returns (the shim waits in
        # runsccmd.cmdOutput for that pipe to close).
        runtime = ["--runtime", r["shim_path"], "--runtime-config-path", r["config"],
                   "--annotation", "io.kubernetes.cri.container-type=sandbox",
                   "--annotation", f"io.kubernetes.cri.sandbox-id={cid}"]
    started = time.monotonic()
    try:
        ran = ctrd.ctr("run", "-d", *runtime, *extra,
                       "--mount", f"type=bind,src={out},dst=/out,options=rbind:rw",
                       image, cid, "sh", "-c", REPORT, timeout=90)
    except subprocess.TimeoutExpired:  # what hangs is evidence too; close() ends what it left
        ran = subprocess.CompletedProcess([], -1, "", "ctr run: no answer in 90 s")
    result = {"runtime": name, "binary": r["binary"], "ctr_run_exit": ran.returncode,
              "ctr_run_stderr": ran.stderr.strip()[-1500:]}
    deadline = time.monotonic() + 60
    while ran.returncode == 0 and not (out / "done").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    result["seconds_to_report"] = round(time.monotonic() - started, 2)
    for report in ("uname", "uid_map", "cgroup"):
        f = out / report
        result[report] = f.read_text().strip() if f.exists() else None
    # Who owns, on the host, the file the container's user wrote.
    result["host_uid_of_written_file"] = (out / "done").stat().st_uid if (out / "done").exists() else None
    listed = run(*[a.format(**r) for a in LIST["gvisor" if "shim" in r else handler]])
    result["listed_by_runtime"] = cid in listed.stdout
    result["runtime_list"] = (listed.stdout + listed.stderr).strip()[-800:]
    result["task"] = ctrd.ctr("tasks", "ls").stdout.strip()
    ctrd.ctr("tasks", "kill", "-s", "SIGKILL", cid)
    waited = time.monotonic() + 20
    while "RUNNING" in ctrd.ctr("tasks", "ls").stdout and time.monotonic() < waited:
        time.sleep(0.2)
    deleted = ctrd.ctr("tasks", "delete", cid)
    result["task_delete_exit"] = deleted.returncode
    result["task_delete_stderr"] = deleted.stderr.strip()[-500:]
    ctrd.ctr("containers", "delete", cid)
    result["ok"] = bool(ran.returncode == 0 and result["uname"] and result["listed_by_runtime"])
    return result


def run_cri_pod(ctrd: Private, handler: str, image: str, userns: bool) -> dict:
    """One pod through the CRI, as a kubelet would ask for it: a sandbox under
    the RuntimeClass handler `handler` (the config's `runtimes` entry), one
    container that prints its kernel and uid map; optionally in a user namespace
    of the pod's own (hostUsers: false), mapped as a kubelet maps it."""
    name = f"cri-{handler}" + ("-userns" if userns else "")
    work = ctrd.dir / "cri" / name
    (work / "logs").mkdir(parents=True)
    namespaces: dict = {}
    if userns:
        ids = [{"host_id": 100000, "container_id": 0, "length": 65536}]
        namespaces["userns_options"] = {"mode": 0, "uids": ids, "gids": ids}  # mode POD
    pod = {"metadata": {"name": name, "namespace": CHECK_NAMESPACE, "uid": f"{name}-uid"},
           "log_directory": str(work / "logs"),
           "linux": {"cgroup_parent": f"/{CHECK_NAMESPACE}/{name}",
                     "security_context": {"namespace_options": namespaces}}}
    # The kubelet repeats the pod's user namespace in every container's config.
    container = {"metadata": {"name": "report"}, "image": {"image": image}, "log_path": "report.log",
                 "command": ["sh", "-c", "uname -r; cat /proc/self/uid_map"],
                 "linux": {"security_context": {"namespace_options": namespaces}}}
    (work / "pod.json").write_text(json.dumps(pod))
    (work / "container.json").write_text(json.dumps(container))
    result = {"pod": name}
    started = ctrd.crictl("runp", "--runtime", handler, work / "pod.json")
    result["runp_exit"], result["runp_stderr"] = started.returncode, started.stderr.strip()[-800:]
    if started.returncode:
        return {**result, "ok": False}
    pod_id = started.stdout.strip()
    created = ctrd.crictl("create", pod_id, work / "container.json", work / "pod.json")
    result["create_stderr"] = created.stderr.strip()[-800:]
    cid = created.stdout.strip()
    if created.returncode == 0:
        begun = ctrd.crictl("start", cid)
        result["start_stderr"] = begun.stderr.strip()[-800:]
        deadline = time.monotonic() + 60
        state: dict = {}
        while time.monotonic() < deadline:
            inspected = ctrd.crictl("inspect", "-o", "json", cid)
            state = json.loads(inspected.stdout)["status"] if inspected.returncode == 0 else {}
            if state.get("state") == "CONTAINER_EXITED":
                break
            time.sleep(0.3)
        result["container_state"], result["exit_code"] = state.get("state"), state.get("exitCode")
        result["logs"] = ctrd.crictl("logs", cid).stdout.strip()
    ctrd.crictl("stopp", pod_id)
    removed = ctrd.crictl("rmp", pod_id)
    result["rmp_exit"] = removed.returncode
    result["ok"] = result.get("exit_code") == 0 and removed.returncode == 0
    return result


# GKE Sandbox's emptyDir hints, as cluster/gvisor-hints.yaml adds them to a pod
# of RuntimeClass gvisor-hinted: one pod-wide mount per volume inside the sandbox.
SHARED_VOLUMES = {"disk": "bind", "memory": "tmpfs"}  # volume -> the hint's type (a disk or Memory emptyDir)
HINTS = {f"dev.gvisor.spec.mount.{volume}.{field}": value for volume, kind in SHARED_VOLUMES.items()
         for field, value in (("share", "pod"), ("type", kind), ("options", "rw,rprivate"))}
# alpha writes into both volumes and stays; beta waits for alpha's files and reads them.
WRITER = ("for v in /disk /memory; do echo from-alpha > $v/a; done; stat -f -c '%n %T %b %S' /disk /memory;"
          " cat /proc/mounts | grep -E ' /(disk|memory) '; exec sleep 600")
READER = ("for i in $(seq 100); do [ -f /disk/a ] && [ -f /memory/a ] && break; sleep 0.2; done;"
          " cat /disk/a /memory/a; stat -f -c '%n %T %b %S' /disk /memory;"
          " cat /proc/mounts | grep -E ' /(disk|memory) '")


def check_shared_volumes(ctrd: Private, handler: str, image: str) -> dict:
    """A pod of two containers sharing two volumes laid out as a kubelet lays
    out emptyDirs (<pods dir>/<uid>/volumes/kubernetes.io~empty-dir/<name>, the
    Memory one a tmpfs of 16 MiB on the host, the disk one a directory), through
    the CRI; under gvisor-hinted the pod carries GKE's hints. What each container
    sees (the other's file, the file system type and size inside the sandbox)
    and what is left on the host (is the disk volume's data on disk?)."""
    name = f"shared-{handler}"
    uid = f"{name}-uid"
    work = ctrd.dir / "cri" / name
    # The shim takes the pod's uid from the log directory's name, as the kubelet makes it.
    logs = work / f"{CHECK_NAMESPACE}_{name}_{uid}"
    logs.mkdir(parents=True)
    sources = {v: ctrd.kubelet_pods / uid / "volumes" / "kubernetes.io~empty-dir" / v for v in SHARED_VOLUMES}
    for path in sources.values():
        path.mkdir(parents=True)
        path.chmod(0o777)  # the probe image runs as 65532
    run("mount", "-t", "tmpfs", "-o", "size=16m,mode=0777", "tmpfs", sources["memory"])
    hinted = handler.endswith("-hinted")
    pod = {"metadata": {"name": name, "namespace": CHECK_NAMESPACE, "uid": uid}, "log_directory": str(logs),
           "annotations": HINTS if hinted else {},
           "linux": {"cgroup_parent": f"/{CHECK_NAMESPACE}/{name}"}}
    mounts = [{"container_path": f"/{v}", "host_path": str(path)} for v, path in sources.items()]
    result: dict = {"pod": name, "handler": handler, "annotations": pod["annotations"]}
    (work / "pod.json").write_text(json.dumps(pod))
    started = ctrd.crictl("runp", "--runtime", handler, work / "pod.json")
    result["runp_exit"], result["runp_stderr"] = started.returncode, started.stderr.strip()[-800:]
    ids = {}
    if started.returncode == 0:
        pod_id = started.stdout.strip()
        for container, script in (("alpha", WRITER), ("beta", READER)):
            config = work / f"{container}.json"
            config.write_text(json.dumps({"metadata": {"name": container}, "image": {"image": image},
                                          "log_path": f"{container}.log", "command": ["sh", "-c", script],
                                          "mounts": mounts}))
            created = ctrd.crictl("create", pod_id, config, work / "pod.json")
            result[f"{container}_create_stderr"] = created.stderr.strip()[-800:]
            if created.returncode:
                break
            ids[container] = created.stdout.strip()
            begun = ctrd.crictl("start", ids[container])
            result[f"{container}_start_stderr"] = begun.stderr.strip()[-800:]
        deadline = time.monotonic() + 60
        while "beta" in ids and time.monotonic() < deadline:
            inspected = ctrd.crictl("inspect", "-o", "json", ids["beta"])
            state = json.loads(inspected.stdout)["status"] if inspected.returncode == 0 else {}
            result["beta_state"], result["beta_exit"] = state.get("state"), state.get("exitCode")
            if state.get("state") == "CONTAINER_EXITED":
                break
            time.sleep(0.3)
        for container, cid in ids.items():
            result[f"{container}_logs"] = ctrd.crictl("logs", cid).stdout.strip().splitlines()
        # What the host holds of each volume while the pod still runs.
        result["host"] = {v: sorted(p.name for p in path.iterdir()) for v, path in sources.items()}
        ctrd.crictl("stopp", pod_id)
        result["rmp_exit"] = ctrd.crictl("rmp", pod_id).returncode
    run("umount", sources["memory"])
    beta = result.get("beta_logs", [])
    result["beta_read_alphas_files"] = beta[:2] == ["from-alpha", "from-alpha"]
    result["fstypes"] = {line.split()[0]: line.split()[1] for line in beta[2:4] if len(line.split()) == 4}
    result["sizes"] = {line.split()[0]: int(line.split()[2]) * int(line.split()[3])
                       for line in beta[2:4] if len(line.split()) == 4}
    result["ok"] = bool(result["beta_read_alphas_files"] and result.get("beta_exit") == 0
                        and result.get("rmp_exit") == 0
                        # the hints' promise: one tmpfs inside the sandbox for the Memory volume
                        and (not hinted or result["fstypes"].get("/memory") == "tmpfs"))
    return result


# Each container of a two-container pod prints the namespaces it is in; the
# CRI joins every app container to the sandbox's net, IPC and UTS namespaces;
# PID and mount namespaces are each container's own (no shareProcessNamespace).
POD_NAMESPACES = ("net", "ipc", "uts", "pid", "mnt")
NAMESPACE_REPORT = "for n in " + " ".join(POD_NAMESPACES) + "; do echo $n $(readlink /proc/self/ns/$n); done; hostname"


def run_cri_pod_pair(ctrd: Private, handler: str, image: str) -> dict:
    """A pod of two containers under `handler`, as a kubelet makes one: which
    namespaces the two share, by the namespaces' identities in /proc/self/ns."""
    name = f"cri-{handler}-pair"
    work = ctrd.dir / "cri" / name
    (work / "logs").mkdir(parents=True)
    # PID mode CONTAINER, as a kubelet asks without shareProcessNamespace (the CRI's zero value is POD).
    own_pid = {"security_context": {"namespace_options": {"pid": 1}}}
    pod = {"metadata": {"name": name, "namespace": CHECK_NAMESPACE, "uid": f"{name}-uid"}, "hostname": name,
           "log_directory": str(work / "logs"), "linux": {"cgroup_parent": f"/{CHECK_NAMESPACE}/{name}", **own_pid}}
    (work / "pod.json").write_text(json.dumps(pod))
    result: dict = {"pod": name}
    started = ctrd.crictl("runp", "--runtime", handler, work / "pod.json")
    result["runp_exit"], result["runp_stderr"] = started.returncode, started.stderr.strip()[-800:]
    if started.returncode:
        return {**result, "ok": False}
    pod_id = started.stdout.strip()
    seen: dict[str, dict] = {}
    for cname in ("alpha", "beta"):
        (work / f"{cname}.json").write_text(json.dumps(
            {"metadata": {"name": cname}, "image": {"image": image}, "log_path": f"{cname}.log",
             "command": ["sh", "-c", NAMESPACE_REPORT + "; exec sleep 600"], "linux": own_pid}))
        created = ctrd.crictl("create", pod_id, work / f"{cname}.json", work / "pod.json")
        begun = ctrd.crictl("start", created.stdout.strip()) if created.returncode == 0 else created
        result[f"{cname}_stderr"] = (created.stderr + begun.stderr).strip()[-800:]
        seen[cname] = {"id": created.stdout.strip(), "started": begun.returncode == 0}
    deadline = time.monotonic() + 60
    for c in seen.values():  # both run at once: a namespace is compared while both hold it
        while c["started"] and time.monotonic() < deadline:
            lines = ctrd.crictl("logs", c["id"]).stdout.strip().splitlines()
            if len(lines) > len(POD_NAMESPACES):
                c["namespaces"] = dict(line.split(" ", 1) for line in lines[:len(POD_NAMESPACES)])
                c["hostname"] = lines[len(POD_NAMESPACES)]
                break
            time.sleep(0.3)
        state = ctrd.crictl("inspect", "-o", "json", c["id"]) if c["started"] else None
        c["state"] = json.loads(state.stdout)["status"]["state"] if state and state.returncode == 0 else None
    result["containers"] = {k: {f: v for f, v in c.items() if f != "id"} for k, c in seen.items()}
    alpha, beta = (seen[k].get("namespaces", {}) for k in ("alpha", "beta"))
    result["shared"] = sorted(n for n in POD_NAMESPACES if alpha.get(n) and alpha.get(n) == beta.get(n))
    ctrd.crictl("stopp", pod_id)
    removed = ctrd.crictl("rmp", pod_id)
    result["rmp_exit"] = removed.returncode
    result["ok"] = bool(alpha and beta and all(c["state"] == "CONTAINER_RUNNING" for c in seen.values())
                        and removed.returncode == 0)
    return result


def check_cri(ctrd: Private, images: dict[str, str]) -> dict:
    """The config's runtimes as the kubelet meets them: each handler's features
    (what the kubelet asks before it admits a hostUsers: false pod) and a pod on
    each handler, with and without a user namespace."""
    info = ctrd.crictl("info")
    told = json.loads(info.stdout) if info.returncode == 0 else {}
    report: dict = {"handlers": {h.get("name", ""): h.get("features", {}) for h in told.get("runtimeHandlers", [])},
                    "conditions": {c["type"]: c["status"] for c in told.get("status", {}).get("conditions", [])}}
    report["pods"] = [run_cri_pod(ctrd, h, images["PROBE_IMAGE"], userns=False) for h in ("runc", "crun", "gvisor")]
    report["shared_volumes"] = [check_shared_volumes(ctrd, h, images["PROBE_IMAGE"]) for h in GVISOR_HANDLERS]
    report["pods"].append(run_cri_pod(ctrd, "youki", images["PROBE_IMAGE"], userns=False))
    # youki beside runc, the reference, and crun: what two containers of one pod share.
    report["pod_pairs"] = [run_cri_pod_pair(ctrd, h, images["PROBE_IMAGE"]) for h in ("runc", "crun", "youki")]
    report["pods"].append(run_cri_pod(ctrd, "runc", images["PROBE_IMAGE"], userns=True))
    # A kubelet never sends crun such a pod (its handler reports no user
    # namespaces); asked directly, this is what Debian's crun 1.8.1 does.
    report["crun_userns_unasked"] = run_cri_pod(ctrd, "crun", images["PROBE_IMAGE"], userns=True)
    # youki 0.7.0's `features` reports idmapped mounts as not supported: so its handler has no user namespaces either.
    report["youki_userns_unasked"] = run_cri_pod(ctrd, "youki", images["PROBE_IMAGE"], userns=True)
    return report


def check(args) -> int:
    bindir = Path(run(HERE / "build-runtime.sh", timeout=3600).stdout.strip())
    gvisor = Path(run(HERE / "build-gvisor.sh", timeout=3600).stdout.strip())
    youki = run(HERE / "build-youki.sh", timeout=7200)  # cached; configs.py finds it by --where
    if youki.returncode:
        raise RuntimeError(f"build-youki.sh failed:\n{youki.stderr[-2000:]}")
    images = read_env()
    archive = archives()
    ctrd = Private(bindir, images["PAUSE_IMAGE"], gvisor)
    report: dict = {"dir": str(ctrd.dir), "versions": {}}
    try:
        for b, flag in (("containerd", "--version"), ("runc", "--version"), ("ctr", "--version")):
            report["versions"][b] = run(bindir / b, flag).stdout.strip()
        report["versions"]["crun"] = run("/usr/bin/crun", "--version").stdout.splitlines()[0]
        report["versions"]["runsc"] = run(gvisor / "runsc", "--version").stdout.strip()
        report["versions"]["containerd-shim-runsc-v1"] = run(gvisor / "containerd-shim-runsc-v1", "-v").stdout.strip()
        report["runtimes_annotation"] = of_handlers(current_runtimes(bindir, ctrd.dir / "runtimes", gvisor), "runc")
        report["versions"]["youki"] = run(Path(youki.stdout.strip()) / "youki", "--version").stdout.strip()
        plugins = ctrd.ctr("plugins", "ls").stdout.splitlines()
        report["cri_plugins"] = [p.split() for p in plugins if ".cri." in p]
        imported = ctrd.ctr("images", "import", "--platform", "linux/amd64", archive["probe"], timeout=300)
        if imported.returncode:
            raise RuntimeError(f"ctr images import failed: {imported.stderr}")
        report["image"] = images["PROBE_IMAGE"]
        for name in ("probe", "pause"):  # into the CRI's namespace too
            imported = ctrd.ctr("images", "import", "--platform", "linux/amd64", archive[name], ns="k8s.io",
                                timeout=300)
            if imported.returncode:
                raise RuntimeError(f"ctr images import into k8s.io failed: {imported.stderr}")
        report["runtimes"] = [check_runtime(ctrd, h, images["PROBE_IMAGE"]) for h in ("runc", "crun", "gvisor")]
        report["runtimes"].append(check_runtime(ctrd, "runc", images["PROBE_IMAGE"], userns=True))
        report["runtimes"].append(check_runtime(ctrd, "crun", images["PROBE_IMAGE"], userns=True))
        report["runtimes"] += [check_runtime(ctrd, "youki", images["PROBE_IMAGE"], userns=u) for u in (False, True)]
        report["cri"] = check_cri(ctrd, images)
        # Debian's crun as the BinaryName itself: what crun-podshare is for.
        report["crun_without_wrapper"] = check_runtime(ctrd, "crun", images["PROBE_IMAGE"], binary="/usr/bin/crun")
        report["containerd_log_errors"] = [line for line in (ctrd.dir / "containerd.log").read_text().splitlines()
                                           if "level=error" in line][-15:]
    finally:
        report["left_behind"] = ctrd.close(keep=args.keep)
        report["killed_at_close"] = ctrd.killed
    print(json.dumps(report, indent=1))
    ran = report.get("runtimes", [])
    cri = report.get("cri", {})
    return 0 if ran and all(r["ok"] for r in [*ran, *cri.get("pods", []), *cri.get("pod_pairs", []),
                                              *cri.get("shared_volumes", [])]) else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("config")
    c.add_argument("--dir", required=True, type=Path)
    c.add_argument("--bindir", type=Path, help="build-runtime.sh's directory (default: build or find it)")
    k = sub.add_parser("check")
    k.add_argument("--keep", action="store_true", help="keep the temporary directory (logs) afterwards")
    args = p.parse_args()
    if args.cmd == "config":
        bindir = args.bindir or Path(run(HERE / "build-runtime.sh", timeout=3600).stdout.strip())
        gvisor = Path(run(HERE / "build-gvisor.sh", "--where", timeout=3600).stdout.strip())
        print(containerd2_config(args.dir, bindir, read_env()["PAUSE_IMAGE"], gvisor=gvisor), end="")
        return 0
    return check(args)


if __name__ == "__main__":
    sys.exit(main())
