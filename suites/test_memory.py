"""Who pays for shared memory. A Memory emptyDir and /dev/shm are tmpfs: their
pages are shmem, charged to the memory cgroup of the container that wrote them
(the kernel charges a page to the cgroup of the task that first touches it), not
to another container that only reads them. So a sidecar that reads a 1 GiB data
set the app put in /dev/shm stays small while the app carries it against its
own limit; users meet this as "my container was OOM-killed though it uses
nothing", or the reverse. Each container's memory.stat (shmem) is the evidence."""
import pytest

from podshare.evidence import could_not, describe

pytestmark = pytest.mark.memory

MIB = 1 << 20
WRITTEN = 4 * MIB  # into each of the two tmpfs: well inside the probe pod's 16Mi Memory sizeLimit
# the reader's shmem may move by its own small allocations; a quarter of one write is not that
NOISE = MIB


def test_tmpfs_pages_are_charged_to_the_writer_not_the_reader(alpha, beta, ipc_name, evidence):
    """alpha writes 4 MiB into the Memory emptyDir and 4 MiB into a POSIX shared
    memory object in /dev/shm; beta reads both. alpha's memory cgroup carries
    them (its memory.stat shmem grows by at least the 8 MiB written); beta's
    shmem grows by less than 1 MiB: the reader is not charged."""
    path = f"/data/memory/{ipc_name}.charge"
    before = {"alpha": alpha.run("memory-charge"), "beta": beta.run("memory-charge")}
    wrote = {"memory_volume": alpha.run("write", path=path, size=WRITTEN, seed=ipc_name),
             "dev_shm": alpha.run("posix-shm-write", name=f"{ipc_name}-charge", size=WRITTEN, seed=ipc_name)}
    read = {"memory_volume": beta.run("read", path=path), "dev_shm": beta.run("posix-shm-read", name=f"{ipc_name}-charge")}
    after = {"alpha": alpha.run("memory-charge"), "beta": beta.run("memory-charge")}
    cleaned = [alpha.run("delete", path=path), alpha.run("posix-unlink", name=f"{ipc_name}-charge", kind="shm")]
    evidence.update(before=before, wrote=wrote, read=read, after=after, cleaned=cleaned, written_bytes=2 * WRITTEN)
    for who in ("alpha", "beta"):
        assert before[who]["ok"] and after[who]["ok"], could_not(
            who, "its memory cgroup's memory.stat", before[who] if not before[who]["ok"] else after[who])
    for what, answer in wrote.items():
        assert answer["ok"], f"alpha could not write {WRITTEN // MIB} MiB into {what}: {describe(answer)}"
        assert read[what]["ok"] and read[what]["sha256"] == answer["sha256"], could_not(
            "beta", f"alpha's {what} data", read[what]) if not read[what]["ok"] else (
            f"beta read other bytes from alpha's {what} data than alpha wrote")
    grew = {who: after[who]["shmem"] - before[who]["shmem"] for who in ("alpha", "beta")}
    evidence.update(shmem_growth=grew)
    charged_beta = f" (beta's grew by {grew['beta'] / MIB:.1f} MiB)" if grew["beta"] >= NOISE else ""
    assert grew["alpha"] >= 2 * WRITTEN, (
        f"alpha wrote {2 * WRITTEN // MIB} MiB into tmpfs, but its memory cgroup's shmem grew by "
        f"{grew['alpha'] / MIB:.1f} MiB ({before['alpha']['cgroup']}, {before['alpha']['path']}): the writer is not "
        f"charged for its pages{charged_beta}")
    assert grew["beta"] < NOISE, (
        f"beta only read alpha's {2 * WRITTEN // MIB} MiB, but its memory cgroup's shmem grew by "
        f"{grew['beta'] / MIB:.1f} MiB: the reader is charged for pages it did not write")
