"""The sqlite pattern's probe verbs on this host: two processes on one
directory stand in for the app and its sidecar on a shared volume, where the
fcntl locks hold (the suite's claims on a kernel that keeps its promises), and
each way the claims can fail is made to happen."""
from __future__ import annotations

import sqlite3

import pytest

from .conftest import finish, wait_ready


@pytest.fixture
def db(tmp_path) -> str:
    return str(tmp_path / "app.db")


def sidecar_beside(start_probe, run_probe, db: str, *writer: str) -> tuple[dict, dict]:
    """The app's writer with the sidecar running beside it, released after it. The
    time boxes only bound a failure: the app waits a quarter of its own for the
    sidecar's answer, and 5 s (the default 20) ran out on CI's loaded machine
    (2026-12-04: the answer came late, and the app recorded none)."""
    sidecar = start_probe("sqlite-sidecar", "--path", db, "--to", db + ".backup", "--seconds", "60")
    wait_ready(sidecar)
    written = run_probe("sqlite-write", "--path", db, *(writer or ("--seconds", "60")))
    run_probe("release")
    return written, finish(sidecar)


def test_the_sidecar_reads_every_committed_row_and_sees_the_apps_write_lock(start_probe, run_probe, db):
    written, followed = sidecar_beside(start_probe, run_probe, db)
    assert written["ok"] and written["rows"] == 600 and not written["refused"], written
    # The app's open transaction: the sidecar saw its WAL_WRITE lock, and did not write beside it.
    assert written["beside_the_sidecar"]["write_lock_seen"]["held"] == "exclusive", written
    assert followed["beside_the_app"]["began_beside_the_app"] is False, followed
    last = followed["last_round"]
    assert (last["snapshot"]["rows"], last["snapshot"]["checksum"]) == (600, written["checksum"]), last
    assert (last["backup"]["rows"], last["backup"]["checksum"]) == (600, written["checksum"]), last
    assert followed["mid_run_snapshots"] >= 1 and not followed["refused"], followed
    assert followed["torn_rows"] == followed["partial_transactions"] == followed["vanished_rows"] == 0, followed
    restored = run_probe("sqlite-restore", "--path", db + ".backup", "--to", db + ".restored")
    assert restored["ok"] and restored["integrity"] == ["ok"] and restored["checksum"] == written["checksum"]


def test_a_lost_transaction_is_seen_by_the_reader(run_probe, db):
    """What two writers at once leave behind, made by hand: a transaction gone
    between two others, a row's bytes changed. The reader names them."""
    assert run_probe("sqlite-write", "--path", db, "--rows", "100")["rows"] == 100
    with sqlite3.connect(db) as con:
        con.execute("DELETE FROM rows WHERE batch = 3")
        con.execute("UPDATE rows SET payload = x'00' WHERE seq = 42")
        con.execute("DELETE FROM rows WHERE seq = 75")
    seen = run_probe("sqlite-check", "--path", db)
    assert seen["ok"] and seen["rows"] == 89 and seen["absent_transactions"] == [3], seen
    assert seen["torn_examples"] == [42] and seen["partial_examples"] == [7], seen


def test_a_write_transaction_held_past_the_busy_timeout_is_refused_and_listed(start_probe, run_probe, db):
    """Locks that hold: while one container's transaction stays open, the other's
    BEGIN IMMEDIATE is SQLITE_BUSY after its busy timeout (listed, with the wait),
    its F_SETLK on WAL_WRITE EAGAIN; after the commit it writes."""
    holder = start_probe("hold-sqlite-write", "--path", db, "--seconds", "20")
    wait_ready(holder)
    locks = run_probe("sqlite-locks", "--path", db)
    second = run_probe("sqlite-try-write", "--path", db, "--busy-ms", "100")
    written = run_probe("sqlite-write", "--path", db, "--rows", "20", "--busy-ms", "100")
    run_probe("release")
    held = finish(holder)
    assert locks["writer_lock_call"] == "EAGAIN" and locks["shm_locks_seen"]["WAL_WRITE"] == "exclusive", locks
    assert second["errno"] == "SQLITE_BUSY" and second["step"] == "begin" and second["waited_ms"] >= 100, second
    # the writer's first transaction meets the held lock: SQLite refuses it, and the answer lists it
    assert written["ok"] and written["refused"][0]["errno"] == "SQLITE_BUSY", written
    assert held["ok"] and held["committed"], held
    assert run_probe("sqlite-try-write", "--path", db)["ok"]


def test_the_writer_is_time_boxed_not_failed_on_a_slow_machine(start_probe, run_probe, db):
    """More transactions than fit in half the budget: the writer ends with what it
    committed, and the sidecar's last round reads exactly that."""
    written, followed = sidecar_beside(start_probe, run_probe, db, "--rows", "10000000", "--seconds", "2")
    assert written["ok"] and written["time_boxed"] and written["transactions"] >= 10, written
    last = followed["last_round"]["snapshot"]
    assert (last["rows"], last["checksum"]) == (written["rows"], written["checksum"]), (last, written["rows"])


def test_asking_for_the_write_lock_keeps_the_askers_own_locks(db):
    """The F_GETLK is asked from a child process: a descriptor of the -shm opened
    and closed in the process of a SQLite connection would drop that connection's
    own locks (POSIX locks belong to the process), its DMS lock among them."""
    import os
    import subprocess
    import sys

    from probes.sqlite_db import connect
    from probes.sqlite_locks import write_lock_seen
    con, _ = connect(db, 1000, create=True)
    con.execute("SELECT count(*) FROM rows").fetchall()
    assert write_lock_seen(db) == {"held": None}
    shm_locks = subprocess.run([sys.executable, "-c", "import fcntl, os, struct, sys\n"
                                "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
                                "a = fcntl.fcntl(fd, fcntl.F_GETLK, struct.pack('hhqqi4x', fcntl.F_WRLCK, 0, 128, 1, 0))\n"
                                "print(struct.unpack('hhqqi4x', a)[4])", db + "-shm"],
                               capture_output=True, text=True, check=True).stdout.strip()
    assert shm_locks == str(os.getpid()), "the connection's DMS lock on the -shm is gone"
    con.close()
