"""The container's memory cgroup as the container sees it: who is charged for
what. tmpfs pages (a Memory emptyDir, /dev/shm) are shmem, charged to the
cgroup of the process that first touched them; memory.stat's shmem says how
much of that a container carries. Where the runtime shows the whole hierarchy
(/proc/self/cgroup's path exists under the mount), that path; where it mounts
the container's own cgroup as the root (runc on cgroup v1, a cgroup namespace),
the root."""
from __future__ import annotations

import os

from .output import failure, ok, step

MOUNTS = {"v1": "/sys/fs/cgroup/memory", "v2": "/sys/fs/cgroup"}


def _own_paths() -> dict[str, str]:
    """version -> this process's memory cgroup path, from /proc/self/cgroup."""
    paths = {}
    for line in open("/proc/self/cgroup").read().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            paths["v1"] = path
        elif controllers == "":
            paths["v2"] = path
    return paths


def charge(_args) -> dict:
    """shmem and usage of this container's memory cgroup, in bytes."""
    with step("read", path="/proc/self/cgroup"):
        try:
            own = _own_paths()
        except OSError as exc:
            return failure(exc, path="/proc/self/cgroup")
    tried = []
    for version in ("v1", "v2"):  # v1's memory controller first: on a hybrid host v2 has none
        if version not in own:
            continue
        mount = MOUNTS[version]
        for where in (os.path.join(mount, own[version].lstrip("/")), mount):
            stat_path = os.path.join(where, "memory.stat")
            if not os.path.exists(stat_path):
                tried.append(stat_path)
                continue
            usage_path = os.path.join(where, "memory.usage_in_bytes" if version == "v1" else "memory.current")
            try:
                with step("read", path=stat_path):
                    stat = dict(line.split()[:2] for line in open(stat_path).read().splitlines() if line.strip())
                with step("read", path=usage_path):
                    usage = int(open(usage_path).read().split()[0])
            except OSError as exc:
                return failure(exc, path=stat_path)
            if "shmem" not in stat:
                return failure(ValueError("memory.stat has no shmem line"), path=stat_path, keys=sorted(stat)[:40])
            return ok(cgroup=version, path=stat_path, own_path=own[version], shmem=int(stat["shmem"]), usage=usage)
    return failure(FileNotFoundError(2, "No such file or directory"), path=tried[-1] if tried else "/proc/self/cgroup",
                   tried=tried, own_paths=own)
