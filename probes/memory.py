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


def _pairs(path: str) -> dict[str, str]:
    """A cgroup file of "key value" lines (memory.stat, memory.events, memory.oom_control)."""
    return dict(line.split()[:2] for line in open(path).read().splitlines() if line.strip())


def _limit_and_oom_kills(version: str, where: str) -> dict:
    """The cgroup's memory limit (None: unlimited) and how many processes its OOM
    killer has killed (None where the kernel does not count them: before 4.13 on v1)."""
    limit_file, events_file = (("memory.limit_in_bytes", "memory.oom_control") if version == "v1"
                               else ("memory.max", "memory.events"))
    fields: dict = {"limit": None, "oom_kills": None}
    try:
        raw = open(os.path.join(where, limit_file)).read().strip()
        # v1 says "no limit" with a page-rounded huge number
        fields["limit"] = None if raw == "max" or int(raw) >= 1 << 62 else int(raw)
    except (OSError, ValueError):
        pass
    try:
        kills = _pairs(os.path.join(where, events_file)).get("oom_kill")
        fields["oom_kills"] = int(kills) if kills is not None else None
    except OSError:
        pass
    return fields


def charge(_args) -> dict:
    """shmem, usage and limit of this container's memory cgroup, in bytes, and its OOM kills."""
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
                    stat = _pairs(stat_path)
                with step("read", path=usage_path):
                    usage = int(open(usage_path).read().split()[0])
            except OSError as exc:
                return failure(exc, path=stat_path)
            if "shmem" not in stat:
                return failure(ValueError("memory.stat has no shmem line"), path=stat_path, keys=sorted(stat)[:40])
            return ok(cgroup=version, path=stat_path, own_path=own[version], shmem=int(stat["shmem"]), usage=usage,
                      **_limit_and_oom_kills(version, where))
    return failure(FileNotFoundError(2, "No such file or directory"), path=tried[-1] if tried else "/proc/self/cgroup",
                   tried=tried, own_paths=own)
