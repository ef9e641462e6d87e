#!/usr/bin/python3
"""Which filesystems take an idmapped mount on this kernel: what a pod with
`hostUsers: false` needs for its volumes (runc >= 1.2 and containerd 2 bind
each emptyDir, projected volume and /etc/hosts with MOUNT_ATTR_IDMAP) and, for
tmpfs, Linux >= 6.3.

For each filesystem a directory with a file owned by 0:0 is bound through an
idmapped mount whose user namespace maps 0 -> 100000; the file must then show
uid 100000 through the mount. Everything happens in a mount namespace of its
own (re-executed under `unshare -m`), so no mount outlives the check. Prints one
JSON object. Root is required. Stdlib only (the node's python3).
"""
from __future__ import annotations

import ctypes
import json
import os
import platform
import subprocess
import sys
import tempfile

# x86_64 syscall numbers and flags (linux/mount.h).
SYS_OPEN_TREE, SYS_MOVE_MOUNT, SYS_MOUNT_SETATTR = 428, 429, 442
OPEN_TREE_CLONE, OPEN_TREE_CLOEXEC = 1, os.O_CLOEXEC
AT_FDCWD, AT_EMPTY_PATH, AT_RECURSIVE = -100, 0x1000, 0x8000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_IDMAP = 0x00100000
HOST_UID = 100000

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


class MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def check_errno(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def idmapped_bind(source: str, target: str, userns_fd: int) -> None:
    fd = check_errno(libc.syscall(SYS_OPEN_TREE, AT_FDCWD, source.encode(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC),
                     "open_tree")
    try:
        attr = MountAttr(MOUNT_ATTR_IDMAP, 0, 0, userns_fd)
        check_errno(libc.syscall(SYS_MOUNT_SETATTR, fd, b"", AT_EMPTY_PATH, ctypes.byref(attr),
                                 ctypes.sizeof(attr)), "mount_setattr(MOUNT_ATTR_IDMAP)")
        check_errno(libc.syscall(SYS_MOVE_MOUNT, fd, b"", AT_FDCWD, target.encode(), MOVE_MOUNT_F_EMPTY_PATH),
                    "move_mount")
    finally:
        os.close(fd)


def user_namespace() -> tuple[subprocess.Popen, int]:
    """A process in a new user namespace mapping 0..65535 to 100000..165535,
    and an fd of that namespace."""
    holder = subprocess.Popen(["unshare", "--user", "sleep", "120"])
    for _ in range(100):  # until the child is in its own namespace
        if os.readlink(f"/proc/{holder.pid}/ns/user") != os.readlink("/proc/self/ns/user"):
            break
        subprocess.run(["sleep", "0.02"])
    for kind in ("uid_map", "gid_map"):
        with open(f"/proc/{holder.pid}/{kind}", "w") as f:
            f.write(f"0 {HOST_UID} 65536\n")
    return holder, os.open(f"/proc/{holder.pid}/ns/user", os.O_RDONLY)


def prepare(kind: str, base: str) -> str:
    """A directory of filesystem `kind` holding a file `f` owned by 0:0."""
    d = os.path.join(base, kind)
    os.makedirs(d)
    if kind == "tmpfs":
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", d], check=True)
    elif kind == "overlay":
        for sub in ("lower", "upper", "work", "merged"):
            os.makedirs(os.path.join(base, "ovl", sub))
        o = os.path.join(base, "ovl")
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={o}/lower,upperdir={o}/upper,workdir={o}/work", d], check=True)
    open(os.path.join(d, "f"), "w").close()
    os.chown(os.path.join(d, "f"), 0, 0)
    return d


def overlay_over(lower: str, base: str) -> dict:
    o = os.path.join(base, "ovl-top")
    for sub in ("upper", "work", "merged"):
        os.makedirs(os.path.join(o, sub))
    try:
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={lower},upperdir={o}/upper,workdir={o}/work", f"{o}/merged"],
                       check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as e:
        return {"fstype": "overlay", "idmap": False, "error": e.stderr.strip()}
    seen = os.stat(os.path.join(o, "merged", "f")).st_uid
    return {"fstype": "overlay", "idmap": seen == HOST_UID, "uid_through_mount": seen}


def inner(base_dirs: dict[str, str]) -> dict:
    holder, userns = user_namespace()
    results = {}
    try:
        for kind, base in base_dirs.items():
            fstype = "?"
            try:
                src = prepare(kind, base)
                fstype = subprocess.run(["findmnt", "-no", "FSTYPE", "-T", src], capture_output=True,
                                        text=True).stdout.strip()
                target = os.path.join(base, "target")
                os.makedirs(target)
                idmapped_bind(src, target, userns)
                seen = os.stat(os.path.join(target, "f")).st_uid
                if kind == "var-lib":
                    # What containerd 2's overlayfs snapshotter does for a pod's
                    # root file system in a user namespace: idmapped lower layers
                    # (Linux >= 5.19) under an overlay that is not idmapped itself.
                    results["overlay-on-idmapped-lower"] = overlay_over(target, base)
                results[kind] = {"fstype": fstype, "idmap": seen == HOST_UID,
                                 "uid_through_mount": seen, "uid_on_disk": os.stat(os.path.join(src, "f")).st_uid}
            except OSError as e:
                results[kind] = {"fstype": fstype, "idmap": False, "error": str(e)}
    finally:
        holder.kill()
        holder.wait()
        os.close(userns)
    return results


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--inner":
        print(json.dumps(inner(json.loads(sys.argv[2]))))
        return 0
    # ext4-or-whatever: the filesystem of /var/lib, where kubelets keep pod volumes.
    bases = {"tmpfs": tempfile.mkdtemp(prefix="podshare-idmap-"),
             "overlay": tempfile.mkdtemp(prefix="podshare-idmap-"),
             "var-lib": tempfile.mkdtemp(prefix="podshare-idmap-", dir="/var/lib")}
    try:
        out = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable, __file__,
                              "--inner", json.dumps(bases)], capture_output=True, text=True, timeout=60)
        if out.returncode:
            print(out.stderr, file=sys.stderr)
            return 1
        report = {"kernel": platform.release(), "filesystems": json.loads(out.stdout)}
    finally:
        for b in bases.values():
            subprocess.run(["rm", "-rf", "--one-file-system", b])
    print(json.dumps(report, indent=1))
    return 0 if report["filesystems"] else 1


if __name__ == "__main__":
    sys.exit(main())
