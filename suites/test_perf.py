"""How fast the sharing is: between alpha and beta, per RuntimeClass, the round
trip of a System V semaphore hand-off, of localhost TCP and of unix sockets,
POSIX shared memory bandwidth, and, per volume kind, how soon a file written to
the shared volume is visible in the other container and how soon a lock let go
in one is taken in the other. What an operator needs before choosing a
sidecar transport on a sandboxed runtime.

The figures (median, p95, samples) go into every report and are never judged
against a threshold: a measurement fails only when its mechanism does not work
between the containers at all, with the same sentence a claim would give."""
import pytest

from podshare.evidence import describe

pytestmark = pytest.mark.perf


SECONDS = 10  # a measurement whose peer has not answered for this long gives up
# The server's own deadline only backs up its release (measure() releases it
# whatever the client did), so it must outlast the client's request arriving:
# with containerd frozen for 20 s (tests/test_disruptions.py) the request came
# after a 10 s server had given up, and the client waited for a pong-0 no one
# would write.
SERVER_SECONDS = 120


def measure(server, server_verb: str, client, client_verb: str, **flags) -> tuple[dict, dict]:
    """Run a `perf-serve-*` verb in one container and its client in the other;
    the server is released (and answers) whatever the client did."""
    running = server.start(server_verb, seconds=SERVER_SECONDS, **flags).wait_ready()
    answer = client.run(client_verb, seconds=SECONDS, **flags)
    return answer, (running.result() if answer["ok"] else running.release())


def test_sysv_semaphore_round_trip(alpha, beta, ipc_key, evidence):
    """A System V semaphore posted in alpha wakes beta, whose post wakes alpha: the
    round trip of a cross-container hand-off."""
    ping, served = measure(beta, "perf-serve-sem", alpha, "perf-sem-ping", key=ipc_key)
    evidence.update(key=ipc_key, served=served)
    assert ping["ok"], f"alpha and beta cannot hand a System V semaphore back and forth: {describe(ping)}"
    evidence.figure("System V semaphore round trip", "µs", ping["samples"])


@pytest.mark.parametrize("transport", ["tcp", "unix-abstract", "unix-volume"])
def test_stream_round_trip(alpha, beta, transport, free_port, ipc_name, evidence):
    """64-byte echo round trips from alpha to a server in beta: over localhost TCP,
    an abstract unix socket (the shared network namespace) and a unix socket file
    in the shared volume."""
    where = {"tcp": {"port": free_port}, "unix-abstract": {"abstract": ipc_name},
             "unix-volume": {"path": f"/data/disk/{ipc_name}.sock"}}[transport]
    ping, served = measure(beta, "perf-serve-stream", alpha, "perf-stream-ping", **where)
    evidence.update(transport=transport, **where, served=served)
    assert ping["ok"], f"alpha cannot reach beta's echo server over {transport}: {describe(ping)}"
    evidence.figure(f"{transport} round trip (64 B)", "µs", ping["samples"])


def test_posix_shared_memory_bandwidth(alpha, beta, ipc_name, evidence):
    """alpha fills a 32 MiB POSIX shared memory object, beta copies it out: write
    and read bandwidth, and beta's copy is alpha's bytes."""
    filled = alpha.run("perf-shm-fill", name=ipc_name)
    copied = beta.run("perf-shm-copy", name=ipc_name) if filled["ok"] else {}
    removed = alpha.run("posix-unlink", name=ipc_name, kind="shm")
    evidence.update(removed=removed)
    assert filled["ok"], f"alpha could not create and fill POSIX shared memory: {describe(filled)}"
    assert copied["ok"], f"beta cannot map alpha's POSIX shared memory: {describe(copied)}"
    assert copied["sha256"] == filled["sha256"], "beta copied other bytes than alpha wrote"
    evidence.figure("POSIX shm write in alpha", "MiB/s", filled["samples"])
    evidence.figure("POSIX shm copy-out in beta", "MiB/s", copied["samples"])


def test_volume_write_is_visible_in_the_other_container(alpha, beta, volume, evidence):
    """alpha writes a file into the shared volume (each kind: the emptyDirs, a PVC
    per --storage-class); beta, polling, sees it and answers with one of its own:
    how long after the write beta sees it (one boot clock for the pod), and the
    round trip."""
    path, medium = volume, volume.rsplit("/", 1)[-1]
    ping, served = measure(beta, "perf-serve-volume", alpha, "perf-volume-ping", path=path)
    evidence.update(medium=medium, time_boxed=ping.get("time_boxed"))  # fewer rounds on a starved machine
    assert ping["ok"], f"a file alpha writes into the {medium} volume does not reach beta and back: {describe(ping)}"
    assert served["ok"], f"beta did not see every file alpha wrote into the {medium} volume: {describe(served)}"
    evidence.figure(f"{medium} volume write → visible", "µs", served["samples"])
    evidence.figure(f"{medium} volume round trip", "µs", ping["samples"])


@pytest.mark.parametrize("kind", ["flock", "fcntl"])
def test_a_lock_let_go_in_one_container_is_taken_in_the_other(alpha, beta, volume, kind, evidence):
    """alpha holds an exclusive lock (flock, or an fcntl record lock: SQLite's) on a
    file in the shared volume (each kind), beta blocks on it: how long after alpha
    lets it go beta has it (one boot clock for the pod). What a lock file or a
    database shared by an app and its sidecar pays per hand-off."""
    medium = volume.rsplit("/", 1)[-1]
    handed, waited = measure(beta, "perf-serve-lock", alpha, "perf-lock-ping", path=volume, kind=kind)
    evidence.update(medium=medium, kind=kind, waiter=waited, time_boxed=handed.get("time_boxed"))
    assert not waited.get("beta_while_held"), (
        f"beta took the {kind} lock on a file in the {medium} volume while alpha held it: the lock does not "
        "reach the other container, so there is no hand-off to measure")
    assert handed["ok"], f"alpha cannot hand a {kind} lock in the {medium} volume to beta: {describe(handed)}"
    evidence.figure(f"{medium} volume {kind} lock hand-off", "µs", handed["samples"])
