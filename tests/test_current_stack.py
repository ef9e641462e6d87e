"""The current stack's builds (cluster/README.md, "Current stack"): containerd 2,
runc 1.5 and crictl (build-runtime.sh) and Kubernetes 1.37 (build-binaries.sh
k8s-1.37) from their Go modules, each reporting the version its module pins;
and that containerd 2, on its own, runs a container under each RuntimeClass's
runtime. The install path builds them only when asked (PODSHARE_CURRENT_STACK=1
cluster/bootstrap.sh); where nobody asked and nothing is built, these skip."""
from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import PROJECT, needs_root

CLUSTER = PROJECT / "cluster"
KUBE_COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy")


def built(script: str, *args: str) -> Path:
    """The cache directory of a build script's outputs, as the script itself
    computes it (--where builds nothing)."""
    out = subprocess.run([CLUSTER / script, *args, "--where"], capture_output=True, text=True, timeout=120)
    if out.returncode == 3:
        if os.environ.get("PODSHARE_CURRENT_STACK") == "1":
            pytest.fail(f"{script} {' '.join(args)}: nothing at {out.stdout.strip()}, "
                        "although PODSHARE_CURRENT_STACK=1 asked the install to build it")
        pytest.skip(f"{script} {' '.join(args)} has not been built here (PODSHARE_CURRENT_STACK=1 "
                    "cluster/bootstrap.sh builds it)")
    assert out.returncode == 0, out.stderr
    return Path(out.stdout.strip())


def pinned(module_dir: str, module: str) -> str:
    """The version `module_dir`'s go.mod requires of `module`."""
    found = re.search(rf"^\s*(?:require\s+)?{re.escape(module)} (v\S+)", (CLUSTER / module_dir / "go.mod").read_text(),
                      re.M)
    assert found, f"{module} is not required by cluster/{module_dir}/go.mod"
    return found.group(1)


def version_of(binary: Path, *flag: str) -> str:
    out = subprocess.run([binary, *(flag or ("--version",))], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, f"{binary} {flag}: {out.stderr}"
    return out.stdout


def test_containerd_its_shim_and_ctr_report_the_version_their_module_pins():
    bindir = built("build-runtime.sh")
    want = pinned("runtime/containerd", "github.com/containerd/containerd/v2")
    assert want.startswith("v2.")
    assert version_of(bindir / "containerd").split() == ["containerd", "github.com/containerd/containerd/v2", want]
    assert version_of(bindir / "ctr").split() == ["ctr", "github.com/containerd/containerd/v2", want]
    assert re.search(rf"^\s*Version:\s+{re.escape(want)}$", version_of(bindir / "containerd-shim-runc-v2", "-v"), re.M)


def test_runc_reports_its_module_version_with_seccomp_and_idmapped_mounts():
    bindir = built("build-runtime.sh")
    want = pinned("runtime/runc", "github.com/opencontainers/runc")
    told = version_of(bindir / "runc")
    assert told.splitlines()[0] == f"runc version {want.removeprefix('v')}"
    assert re.search(r"^libseccomp: 2\.\d+\.\d+$", told, re.M), told  # built with cgo and the seccomp tag
    features = json.loads(version_of(bindir / "runc", "features"))
    assert features["linux"]["seccomp"]["enabled"] is True
    # What containerd 2 asks before it offers user namespaces on a runtime handler.
    assert "user" in features["linux"]["namespaces"]
    assert features["linux"]["mountExtensions"]["idmap"]["enabled"] is True


def test_gvisor_reports_the_version_its_module_pins_and_its_shim_that_it_is_patched():
    """build-gvisor.sh: runsc stamped with the module's version (a plain go build
    says VERSION_MISSING), static; the shim's -v names gVisor's version and the
    patches of cluster/gvisor/patches, not the containerd library it links."""
    bindir = built("build-gvisor.sh")
    want = pinned("gvisor", "gvisor.dev/gvisor")
    assert version_of(bindir / "runsc").splitlines()[0] == f"runsc version {want}"
    patches = len(list((CLUSTER / "gvisor" / "patches").glob("*.patch")))
    assert re.search(rf"^\s*Version:\s+{re.escape(want)}\+podshare\.{patches}patches$",
                     version_of(bindir / "containerd-shim-runsc-v1", "-v"), re.M)
    for binary in ("runsc", "containerd-shim-runsc-v1"):
        assert "statically linked" in subprocess.run(["file", "-L", bindir / binary], capture_output=True,
                                                     text=True).stdout


def test_crictl_reports_the_version_its_module_pins():
    bindir = built("build-runtime.sh")
    assert version_of(bindir / "crictl").strip() == f"crictl version {pinned('runtime/crictl', 'sigs.k8s.io/cri-tools')}"


@pytest.mark.parametrize("component", KUBE_COMPONENTS)
def test_kubernetes_1_37_components_report_the_version_their_module_pins(component):
    bindir = built("build-binaries.sh", "k8s-1.37")
    want = pinned("k8s-1.37", "k8s.io/kubernetes")
    assert want.startswith("v1.37.")
    assert version_of(bindir / component).strip() == f"Kubernetes {want}"


def test_etcd_of_the_1_37_build_is_the_one_that_release_requires():
    bindir = built("build-binaries.sh", "k8s-1.37")
    want = pinned("k8s-1.37", "go.etcd.io/etcd/server/v3")
    assert re.search(rf"^etcd Version: {re.escape(want.removeprefix('v'))}$", version_of(bindir / "etcd"), re.M)


def test_the_default_build_is_still_kubernetes_1_35():
    """The second module directory leaves what the running cluster uses as it was."""
    bindir = built("build-binaries.sh")
    assert version_of(bindir / "kubelet").strip() == f"Kubernetes {pinned('k8s', 'k8s.io/kubernetes')}"
    assert bindir != built("build-binaries.sh", "k8s-1.37")


def test_youki_reports_the_version_and_features_build_youki_pins():
    """youki from its crate, built with seccomp (libseccomp linked) and both
    cgroup managers (these hosts are hybrid: youki picks v1)."""
    script = (CLUSTER / "build-youki.sh").read_text()
    version = re.search(r"^version=(\S+)$", script, re.M).group(1)
    youki = built("build-youki.sh") / "youki"
    said = version_of(youki)
    assert said.splitlines()[0] == f"youki version: {version}"
    assert re.search(r"^libseccomp: 2\.", said, re.M), said
    cgroup = json.loads(version_of(youki, "features"))["linux"]["cgroup"]
    assert cgroup["v1"] is True and cgroup["v2"] is True and cgroup["systemd"] is False


@pytest.fixture(scope="module")
def check():
    """`python -m cluster.containerd2 check`, once for the tests below: a private containerd 2
    (own directories, socket, ctr namespace, pod bridge) with the cluster's four
    runtimes, through ctr and through the CRI. crun needs the cgroup layout
    `python -m cluster.localcluster up` makes (no controller left on cgroup2): run these while
    the cluster is up."""
    built("build-runtime.sh")
    built("build-gvisor.sh")
    out = subprocess.run([sys.executable, "-m", "cluster.containerd2", "check"], cwd=PROJECT, capture_output=True,
                         text=True, timeout=900)
    report = json.loads(out.stdout)
    assert report["left_behind"] == [] and not Path(report["dir"]).exists(), report["left_behind"]
    return out.returncode, report


@needs_root
def test_containerd_2_on_its_own_runs_a_container_under_each_runtime(check):
    returncode, report = check
    by = {r["runtime"]: r for r in report["runtimes"]}
    for handler in ("runc", "crun", "youki", "gvisor"):
        assert by[handler]["ok"], f"{handler}: {by[handler]['ctr_run_stderr']}"
        assert by[handler]["listed_by_runtime"], by[handler]["runtime_list"]
        assert by[handler]["uid_map"].split() == ["0", "0", "4294967295"]
    assert by["runc"]["uname"] == by["crun"]["uname"] == by["youki"]["uname"] == platform.release()
    assert by["gvisor"]["uname"] != platform.release()  # gVisor's own kernel answers
    for handler in ("runc-userns", "crun-userns", "youki-userns"):
        assert by[handler]["ok"], f"{handler}: {by[handler]['ctr_run_stderr']}"
        assert by[handler]["uid_map"].split() == ["0", "100000", "65536"]
        assert by[handler]["host_uid_of_written_file"] == 100000 + 65532  # the image's user, shifted
    assert by["gvisor"]["binary"] == str(built("build-gvisor.sh") / "runsc")  # under its own shim
    # Why crun needs its wrapper under containerd 2 (runtimes/crun-podshare).
    bare = report["crun_without_wrapper"]
    assert bare["ctr_run_exit"] != 0 and "unknown version specified" in bare["ctr_run_stderr"]
    assert returncode == 0


@needs_root
def test_through_the_cri_each_runtime_class_handler_runs_a_pod(check):
    """The version 3 config's `runtimes` as a kubelet uses them: a pod sandbox
    and a container under each handler, the container's log read back."""
    pods = {p["pod"]: p for p in check[1]["cri"]["pods"]}
    for handler in ("runc", "crun", "youki", "gvisor"):
        pod = pods[f"cri-{handler}"]
        assert pod["ok"], pod
        kernel, uid_map = pod["logs"].splitlines()
        assert uid_map.split() == ["0", "0", "4294967295"]
        assert (kernel == platform.release()) == (handler != "gvisor"), pod


@needs_root
def test_two_containers_of_a_pod_share_net_ipc_and_uts_on_runc_crun_and_youki(check):
    """A pod of two containers, as a kubelet makes one without shareProcessNamespace:
    both run, and they share the sandbox's network, IPC and UTS namespaces, not
    PID or mount, under youki as under runc and crun."""
    for pair in check[1]["cri"]["pod_pairs"]:
        assert pair["ok"], pair
        assert pair["shared"] == ["ipc", "net", "uts"], pair
        assert {c["hostname"] for c in pair["containers"].values()} == {pair["pod"]}


@needs_root
def test_runc_and_gvisor_offer_user_namespaces_and_runc_runs_a_hostusers_false_pod(check):
    """What the kubelet asks before it admits a `hostUsers: false` pod: the
    handler's user_namespaces feature (runc 1.5 reports user namespaces and
    idmapped mounts; Debian's crun 1.8.1 has no `features` command; youki
    0.7.0's says idmapped mounts are not supported; current
    runsc's `features` lists the user namespace and idmap enabled, so containerd
    2.4.2 offers it for both gVisor handlers: the kubelet will send them such pods)."""
    cri = check[1]["cri"]
    assert cri["handlers"]["runc"].get("user_namespaces") is True
    assert not cri["handlers"]["crun"].get("user_namespaces") and not cri["handlers"]["youki"].get("user_namespaces")
    assert cri["handlers"]["gvisor"].get("user_namespaces") is cri["handlers"]["gvisor-hinted"].get("user_namespaces") \
        is True
    pod = {p["pod"]: p for p in cri["pods"]}["cri-runc-userns"]
    assert pod["ok"], pod
    assert pod["logs"].splitlines()[1].split() == ["0", "100000", "65536"]
    # Asked anyway (a kubelet would refuse first), crun's container cannot start.
    crun = cri["crun_userns_unasked"]
    assert not crun["ok"] and "failed to validate OCI runtime features" in crun["start_stderr"], crun


@needs_root
def test_the_filesystems_of_pod_volumes_take_idmapped_mounts_here():
    """What user-namespaced pods need of this kernel (cluster/idmap-check.py):
    tmpfs (Linux >= 6.3) and /var/lib's filesystem, where a kubelet keeps pod
    volumes, take idmapped mounts; an overlay mount itself does not, but one over
    an idmapped lower layer (containerd's way for the root file system) does."""
    out = subprocess.run([CLUSTER / "idmap-check.py"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["kernel"] == platform.release()
    fs = report["filesystems"]
    for kind in ("tmpfs", "var-lib", "overlay-on-idmapped-lower"):
        assert fs[kind]["idmap"] and fs[kind]["uid_through_mount"] == 100000, (kind, fs[kind])
    assert not fs["overlay"]["idmap"] and "Invalid argument" in fs["overlay"]["error"], fs["overlay"]
    assert not list(Path("/var/lib").glob("podshare-idmap-*")), "idmap-check.py left its directory behind"


@needs_root
def test_gvisor_hinted_gives_a_pods_containers_one_mount_per_emptydir(check):
    """Two containers of one pod under each gVisor handler, sharing two volumes
    laid out as a kubelet's emptyDirs: beta reads what alpha wrote either way;
    with GKE Sandbox's hints (gvisor-hinted) the shim finds the volumes under
    the kubelet_pods_dir of its runsc.toml (patches/03) and the Memory volume is
    one tmpfs inside the sandbox."""
    shared = {s["handler"]: s for s in check[1]["cri"]["shared_volumes"]}
    for handler in ("gvisor", "gvisor-hinted"):
        assert shared[handler]["ok"] and shared[handler]["beta_read_alphas_files"], shared[handler]
    assert shared["gvisor-hinted"]["fstypes"]["/memory"] == "tmpfs", shared["gvisor-hinted"]
    assert shared["gvisor"]["annotations"] == {}


def test_the_gvisor_hints_policy_does_what_gke_does_in_kubernetes_1_37s_own_admission_code():
    """cluster/gvisor-hints.yaml through the 1.37.2 API server's compilePolicy,
    match condition and JSON Patch mutator (gvisor-hints-check/check.sh), without
    an API server: each emptyDir of a gvisor-hinted pod gets GKE's three hints,
    a user's own annotation wins, other classes and pods without one get nothing."""
    built("build-binaries.sh", "k8s-1.37")  # its module's dependencies are downloaded
    out = subprocess.run([CLUSTER / "gvisor-hints-check" / "check.sh"], capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout)
    hints = {f"dev.gvisor.spec.mount.{v}.{f}": value for v, kind in (("disk", "bind"), ("memory", "tmpfs"))
             for f, value in (("share", "pod"), ("type", kind), ("options", "rw,rprivate"))}
    assert got["hinted"] == {"matched": True, "annotations": hints}  # the configMap volume gets none
    assert got["hinted-user-wins"]["annotations"] == {**hints, "dev.gvisor.spec.mount.disk.type": "tmpfs", "team": "x"}
    assert got["hinted-all-set"]["annotations"] == {"dev.gvisor.spec.mount.memory.share": "container",
                                                    "dev.gvisor.spec.mount.memory.type": "bind",
                                                    "dev.gvisor.spec.mount.memory.options": "ro"}
    assert got["hinted-no-volumes"] == {"matched": True, "annotations": None}
    assert got["plain"] == got["no-runtime-class"] == {"matched": False, "annotations": None}
