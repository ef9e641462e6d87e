"""SQLite sidecar: an app and its sidecar (a reader that also backs the database
up) use one SQLite database in WAL mode on the pod's shared volume at the same
time, with Python's sqlite3. WAL relies, across processes, on the -shm file's
shared mapping and on fcntl locks on its bytes; where the shared volume does not
carry them from one container to the other (gVisor's gofer mounts; network file
systems, issue #26) two connections each believe they are alone, and rows are
lost or the file corrupted. The claims say which lock call returned what."""
import uuid

import pytest

from podshare.evidence import could_not, describe, failed_with, stranger_sees

pytestmark = [pytest.mark.pattern, pytest.mark.manifest("patterns/sqlite.yaml")]

VOLUMES = ["disk", "memory"]
ROWS, BATCH = 600, 10  # 60 transactions: a few seconds' work, however slow the machine (the writer is time-boxed)
BUSY_MS = 5000  # SQLite's busy timeout, as apps set it
WORKLOAD = {"batch": BATCH, "busy_ms": BUSY_MS}


@pytest.fixture(scope="module", params=VOLUMES)
def volume(request) -> str:
    """Where the database lives; a parameter, so that a volume dimension can take it over."""
    return f"/data/{request.param}"


@pytest.fixture(scope="module")
def sqlite_pod(pattern_pods):
    return pattern_pods["Pod/podshare-sqlite"]


@pytest.fixture(scope="module")
def shared_run(sqlite_pod, volume, podshare_session) -> dict:
    """The pattern, once per volume: the sidecar reads, checks and backs the
    database up in rounds while the app writes; then released, its last round
    comes after the app's last commit."""
    name = f"podshare-{uuid.uuid4().hex[:10]}"
    db, backup = f"{volume}/{name}.db", f"{volume}/{name}.backup.db"
    app, sidecar = sqlite_pod.container("app"), sqlite_pod.container("sidecar")
    with podshare_session.harness_errors(fatal=False):
        following = sidecar.start("sqlite-sidecar", path=db, to=backup, seconds=40, **WORKLOAD).wait_ready()
        writer = app.run("sqlite-write", path=db, rows=ROWS, seconds=20, **WORKLOAD)
        sidecar.run("release")
        return {"db": db, "backup": backup, "writer": writer, "sidecar": following.result()}


def test_every_row_the_app_commits_is_read_back_exactly_by_the_sidecar(shared_run, stranger, evidence):
    """While the app commits 600 rows in 60 transactions, the sidecar reads them
    in rounds: no row torn (each row's bytes are its own), no transaction seen in
    part, no row gone once seen, some rounds between the app's first and last
    commit; after the last, it reads every committed row: the same count and
    checksum. The stranger pod's volume of the same name has no database."""
    writer, sidecar = shared_run["writer"], shared_run["sidecar"]
    foreign = stranger.run("sqlite-check", path=shared_run["db"], **WORKLOAD)
    evidence.update(database=shared_run["db"], app=writer, sidecar=sidecar, stranger=foreign)
    assert writer["ok"], could_not("the app", "its database", writer)
    assert sidecar["ok"], could_not("the sidecar", "the app's database", sidecar)
    assert writer["rows"] > 0, f"the app committed no row: {first_refusal(writer, 'the app')}"
    last = sidecar["last_round"]
    assert last, f"the sidecar read nothing in {sidecar['rounds']} rounds: {first_refusal(sidecar, 'the sidecar')}"
    assert sidecar["torn_rows"] == 0, (
        f"the sidecar read {sidecar['torn_rows']} torn rows (bytes other than the app wrote), "
        f"e.g. rows {last['snapshot']['torn_examples']}")
    assert sidecar["partial_transactions"] == 0, (
        f"the sidecar saw {sidecar['partial_transactions']} of the app's transactions in part, "
        f"e.g. {last['snapshot']['partial_examples']}")
    assert sidecar["vanished_rows"] == 0, f"{sidecar['vanished_rows']} rows the sidecar had read were gone later"
    assert sidecar["mid_run_snapshots"] >= 1, (
        f"none of the sidecar's {sidecar['rounds']} rounds fell between the app's first and last commit "
        f"(it saw {sidecar['rows_seen']} rows): the two did not run together")
    seen = last["snapshot"]
    assert seen["rows"] == writer["rows"], (
        f"after the app's last commit the sidecar reads {seen['rows']} rows of the {writer['rows']} the app committed")
    assert seen["checksum"] == writer["checksum"], (
        f"the sidecar reads {seen['rows']} rows, as many as the app committed, but other ones (checksums differ)")
    assert failed_with(foreign, "ENOENT"), stranger_sees("the stranger pod opens the app's database", foreign)


def test_no_statement_is_refused_as_locked_within_the_busy_timeout(shared_run, evidence):
    """Neither the app's transactions nor the sidecar's reads, backups and
    writes are refused ("database is locked", SQLITE_BUSY, or a lock's I/O
    error): SQLite's busy timeout (5 s) covers every wait for the other."""
    writer, sidecar = shared_run["writer"], shared_run["sidecar"]
    evidence.update(busy_ms=BUSY_MS, app_refused=writer.get("refused"), sidecar_refused=sidecar.get("refused"),
                    app_transactions=writer.get("transactions"), sidecar_rounds=sidecar.get("rounds"))
    assert writer["ok"], could_not("the app", "its database", writer)
    assert sidecar["ok"], could_not("the sidecar", "the app's database", sidecar)
    for who, answer in (("the app", writer), ("the sidecar", sidecar)):
        assert not answer["refused"], f"{first_refusal(answer, who)} ({len(answer['refused'])} refused in all)"


def test_integrity_check_is_ok_in_both_containers_after_the_run(shared_run, sqlite_pod, evidence):
    """After the run, PRAGMA integrity_check says ok in the app and in the sidecar,
    and both read the same rows, the ones the app committed."""
    writer = shared_run["writer"]
    checks = {who: sqlite_pod.container(who).run("sqlite-check", path=shared_run["db"], **WORKLOAD)
              for who in ("app", "sidecar")}
    evidence.update(app_committed={k: writer.get(k) for k in ("rows", "checksum")}, checks=checks)
    for who, check in checks.items():
        assert check["ok"], could_not(f"the {who}", "the database after the run", check)
        assert check["integrity"] == ["ok"], f"integrity_check in the {who} says: {'; '.join(check['integrity'])}"
        assert (check["rows"], check["checksum"]) == (writer["rows"], writer["checksum"]), (
            f"the {who} reads {check['rows']} rows after the run, not the {writer['rows']} the app committed"
            + (" (other ones: checksums differ)" if check["rows"] == writer["rows"] else ""))


def test_the_sidecars_backup_restores_every_committed_row_in_the_app(shared_run, sqlite_pod, evidence):
    """The backup the sidecar took after the app's last commit (SQLite's online
    backup API, on the shared volume) restores in the app into a database whose
    integrity_check is ok and which holds every committed row."""
    writer, sidecar = shared_run["writer"], shared_run["sidecar"]
    restored = sqlite_pod.container("app").run("sqlite-restore", path=shared_run["backup"],
                                               to=shared_run["backup"].replace(".backup.db", ".restored.db"),
                                               **WORKLOAD)
    evidence.update(backup=(sidecar.get("last_round") or {}).get("backup"), restored=restored,
                    app_committed={k: writer.get(k) for k in ("rows", "checksum")})
    assert restored["ok"], could_not("the app", "the sidecar's backup", restored)
    assert restored["integrity"] == ["ok"], f"the restored database's integrity_check says: {restored['integrity']}"
    assert (restored["rows"], restored["checksum"]) == (writer["rows"], writer["checksum"]), (
        f"the restored backup holds {restored['rows']} rows, not the {writer['rows']} the app committed"
        + (" (other ones: checksums differ)" if restored["rows"] == writer["rows"] else ""))


def test_a_write_transaction_open_in_the_app_holds_off_the_sidecars(sqlite_pod, volume, ipc_name, evidence):
    """While the app holds a write transaction (BEGIN IMMEDIATE), the sidecar
    sees its fcntl locks on the -shm file (WAL_WRITE exclusive), its own
    F_SETLK on that byte returns EAGAIN, and its BEGIN IMMEDIATE ends with
    SQLITE_BUSY after its busy timeout; once the app commits, the sidecar writes."""
    db = f"{volume}/{ipc_name}.db"
    app, sidecar = sqlite_pod.container("app"), sqlite_pod.container("sidecar")
    with app.start("hold-sqlite-write", path=db, busy_ms=BUSY_MS) as hold:
        locks = sidecar.run("sqlite-locks", path=db)
        contended = sidecar.run("sqlite-try-write", path=db, busy_ms=300)
    after = sidecar.run("sqlite-try-write", path=db, busy_ms=BUSY_MS)
    evidence.update(app=hold.result(), locks_seen_by_sidecar=locks, sidecar_while_held=contended,
                    sidecar_after_commit=after)
    assert locks["ok"], could_not("the sidecar", "the app's database files", locks)
    assert contended["ok"] or contended.get("step") != "open", could_not("the sidecar", "the app's database",
                                                                             contended)
    shm = locks["files"]["-shm"]
    assert contended.get("errno") == "SQLITE_BUSY", (
        f"the sidecar began a write transaction while the app's was open: SQLite's locks do not cross the "
        f"containers ({lock_view(shm)})" if contended["ok"] else
        f"the sidecar's write while the app's was open ended with {describe(contended)}, not SQLITE_BUSY")
    assert shm.get("writer_lock_call", {}).get("returned") == "EAGAIN", (
        f"SQLite refused the sidecar, but the lock it relies on is not seen: {lock_view(shm)}")
    assert hold.result()["ok"], could_not("the app", "its write transaction", hold.result())
    assert after["ok"], f"the sidecar could not write after the app committed: {describe(after)}"


def first_refusal(answer: dict, who: str) -> str:
    """The first statement SQLite refused, in words."""
    if not answer["refused"]:
        return f"SQLite refused none of {who}'s statements"
    answer = answer["refused"][0]
    where = f"transaction {answer['batch']}" if "batch" in answer else f"round {answer.get('round')}"
    waited = f" after waiting {answer['waited_ms']:.0f} ms" if "waited_ms" in answer else ""
    return f"{who}'s {answer['step']} in {where} was refused{waited}: {describe(answer).split(' with ', 1)[-1]}"


def lock_view(shm: dict) -> str:
    """What the sidecar saw of the app's locks on the -shm file."""
    if not shm.get("exists"):
        return "the sidecar sees no -shm file"
    call = shm.get("writer_lock_call", {})
    held = {name: s["held"] for name, s in shm["locks"].items() if s["held"]}
    return (f"its {call.get('call')} returned {call.get('returned')}; F_GETLK sees "
            + (", ".join(f"{n} {h}" for n, h in held.items()) if held else "no lock") + " on the -shm")
