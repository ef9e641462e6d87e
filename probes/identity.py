"""Who am I: hostname, namespaces and user, as the kernel reports them."""
from __future__ import annotations

import errno
import os
import socket

from .output import ok

NAMESPACES = ("net", "ipc", "uts", "mnt", "pid", "user", "cgroup")


def namespace_inodes() -> dict[str, int]:
    inodes = {}
    for ns in NAMESPACES:
        try:
            inodes[ns] = os.stat(f"/proc/self/ns/{ns}").st_ino
        except OSError:
            pass
    return inodes


def kernel_instance() -> str:
    """This kernel's boot id: namespace inodes only identify a namespace within
    one kernel (a sandboxed runtime such as gVisor runs a kernel per pod, whose
    numbers repeat from pod to pod)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def namespace_ids(kernel: str) -> dict[str, str]:
    """Each namespace as (kernel, device, inode): equal only if it is the same one."""
    ids = {}
    for ns in NAMESPACES:
        try:
            st = os.stat(f"/proc/self/ns/{ns}")
        except OSError:
            continue
        ids[ns] = f"{kernel}:{st.st_dev}:{st.st_ino}"
    return ids


def identity(_args) -> dict:
    kernel = kernel_instance()
    return ok(
        hostname=socket.gethostname(),
        container=os.environ.get("PODSHARE_CONTAINER", ""),
        kernel=kernel,
        kernel_release=os.uname().release,
        namespaces=namespace_inodes(),
        namespace_ids=namespace_ids(kernel),
        uid=os.getuid(),
        gid=os.getgid(),
        groups=sorted(os.getgroups()),
        mounts=shared_mounts(),
    )


# Where the probe pods mount what they share: the volumes and /dev/shm.
SHARED_PLACES = ("/data/", "/dev/shm")


def shared_mounts() -> dict[str, dict]:
    """The mounts at the shared places as this container sees them (mountinfo):
    device, file system, read-only or not, and the root, which for a volume names
    its directory on the node (.../volumes/kubernetes.io~empty-dir/NAME)."""
    found = {}
    try:
        with open("/proc/self/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return found
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, after = left.split(), right.split()
        if len(fields) < 6 or len(after) < 2:
            continue
        point = fields[4]
        if point.startswith(SHARED_PLACES) or point == "/dev/shm":
            found[point] = {"device": fields[2], "root": fields[3], "fstype": after[0],
                            "read_only": "ro" in fields[5].split(",")}
    return found


def _id_map(path: str) -> list[list[int]] | str:
    """/proc/self/uid_map or gid_map as [inside, outside, count] lines (the
    kernel's view from this process's user namespace), or the errno name."""
    try:
        with open(path) as f:
            return [[int(n) for n in line.split()] for line in f if line.strip()]
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc))


def user_namespace(_args) -> dict:
    """The user namespace this container is in: its uid and gid maps (the identity
    map 0 0 4294967295 is the host's own), its identity (kernel, device, inode of
    /proc/self/ns/user) and who this process is inside it."""
    kernel = kernel_instance()
    return ok(uid_map=_id_map("/proc/self/uid_map"), gid_map=_id_map("/proc/self/gid_map"),
              user_namespace=namespace_ids(kernel).get("user", ""), kernel=kernel,
              uid=os.getuid(), gid=os.getgid(), groups=os.getgroups())


def processes(_args) -> dict:
    """Every process this container can see (/proc), by pid with its command
    line, and which is PID 1: with shareProcessNamespace, the pod's sandbox
    (pause) is PID 1 and the other containers' processes are listed too."""
    seen = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        seen.append({"pid": int(entry), "cmdline": cmdline})
    seen.sort(key=lambda p: p["pid"])
    pid1 = next((p["cmdline"] for p in seen if p["pid"] == 1), None)
    return ok(own_pid=os.getpid(), pid1=pid1, processes=seen)
