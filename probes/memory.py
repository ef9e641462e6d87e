"""The container's memory cgroup as the container sees it: who is charged for
what. tmpfs pages (a Memory emptyDir, /dev/shm) are shmem, charged to the
cgroup of the process that first touched them; memory.stat's shmem says how
much of that a container carries (cgroup v1: the container's own hierarchy at
/sys/fs/cgroup/memory; v2: /sys/fs/cgroup)."""
from __future__ import annotations

from .output import failure, ok, step

PLACES = (("v2", "/sys/fs/cgroup/memory.stat", "/sys/fs/cgroup/memory.current"),
          ("v1", "/sys/fs/cgroup/memory/memory.stat", "/sys/fs/cgroup/memory/memory.usage_in_bytes"))


def charge(_args) -> dict:
    """shmem and usage of this container's memory cgroup, in bytes."""
    last: OSError | None = None
    for version, stat_path, usage_path in PLACES:
        try:
            with step("open", path=stat_path):
                stat = dict(line.split()[:2] for line in open(stat_path).read().splitlines() if line.strip())
            with step("read", path=usage_path):
                usage = int(open(usage_path).read().split()[0])
        except OSError as exc:
            last = exc
            continue
        if "shmem" not in stat:
            return failure(ValueError("memory.stat has no shmem line"), path=stat_path, keys=sorted(stat)[:40])
        return ok(cgroup=version, path=stat_path, shmem=int(stat["shmem"]), usage=usage)
    return failure(last or OSError("no memory cgroup"), path=PLACES[-1][1])
