"""SQLite sidecar: an app and its sidecar (a reader that also backs the database
up) use one SQLite database in WAL mode on the pod's shared volume at the same
time, with Python's sqlite3. WAL relies, across processes, on the -shm file's
shared mapping and on fcntl locks on its bytes; where the shared volume does not
carry them from one container to the other (gVisor's gofer mounts; network file
systems, issue #26) two connections each believe they are alone, and rows are
lost or the file corrupted. The claims say which lock call returned what."""
import uuid
from typing import Callable

import pytest

from podshare.channel import ProbeKilled  # a verb killed by a signal is the answer of a broken runtime
from podshare.errors import KubeError
from podshare.evidence import could_not, describe, failed_with, stranger_sees
from podshare.fixtures import shared_volume

pytestmark = [pytest.mark.pattern, pytest.mark.manifest("patterns/sqlite.yaml"), pytest.mark.volume_per_module]

ROWS, BATCH = 600, 10  # 60 transactions: a few seconds' work, however slow the machine (the writer is time-boxed)
BUSY_MS = 5000  # SQLite's busy timeout, as apps set it
WORKLOAD = {"batch": BATCH, "busy_ms": BUSY_MS}


@pytest.fixture(scope="module")
def volume(request, podshare_session) -> str:
    """The volume dimension, once per kind for the whole module (the workload runs
    once per kind): the pattern pod's disk or Memory emptyDir, or its PVC of a
    --storage-class."""
    return shared_volume(request.param, podshare_session)


@pytest.fixture(scope="module")
def medium(volume) -> str:
    """Where the database lives."""
    return volume


@pytest.fixture(scope="module")
def sqlite_pod(pattern_pods):
    return pattern_pods["Pod/podshare-sqlite"]


@pytest.fixture(scope="module")
def shared_run(sqlite_pod, medium, podshare_session) -> dict:
    """The pattern, once per volume: the sidecar reads, checks and backs the
    database up in rounds while the app writes; then released, its last round
    comes after the app's last commit. A verb killed by a signal (SIGBUS on a
    mapping of the -shm whose file another container truncated) is its answer."""
    name = f"podshare-{uuid.uuid4().hex[:10]}"
    db, backup = f"{medium}/{name}.db", f"{medium}/{name}.backup.db"
    app, sidecar = sqlite_pod.container("app"), sqlite_pod.container("sidecar")
    with podshare_session.harness_errors(fatal=False):
        following = sidecar.start("sqlite-sidecar", path=db, to=backup, seconds=40, **WORKLOAD)
        try:
            following.wait_ready()
        except KubeError:
            if not following.running.finished:
                raise  # the channel, not the sidecar: a harness error
        writer = killed_or(lambda: app.run("sqlite-write", path=db, rows=ROWS, seconds=20, **WORKLOAD))
        sidecar.run("release")
        followed = killed_or(following.result)
    killed = {who: a["killed_by"] for who, a in (("app", writer), ("sidecar", followed)) if a.get("killed_by")}
    return {"db": db, "backup": backup, "writer": writer, "sidecar": followed, "killed_by": killed,
            "last_round_behind_the_app": last_round_behind(writer, followed)}


def last_round_behind(writer: dict, sidecar: dict) -> bool:
    """The sidecar's connection, open through the run, read fewer rows in its last
    round (after the app's last commit) than the app committed: what a reader whose
    view of the WAL index (the -shm mapping) the app's commits do not reach sees."""
    last = (sidecar.get("last_round") or {}).get("snapshot") or {}
    return bool(writer.get("ok") and sidecar.get("ok") and "rows" in last and last["rows"] < writer["rows"])


def killed_or(answer: Callable[[], dict]) -> dict:
    """A verb's answer, or, where a signal killed it, that as its answer."""
    try:
        return answer()
    except ProbeKilled as killed:
        return {"ok": False, "killed_by": killed.signal, "detail": str(killed)}


def test_every_row_the_app_commits_is_read_back_exactly_by_the_sidecar(shared_run, stranger, evidence):
    """While the app commits 600 rows in 60 transactions, the sidecar reads them
    in rounds: no row torn (each row's bytes are its own), no transaction seen in
    part, no row gone once seen, some rounds between the app's first and last
    commit; after the last, it reads every committed row: the same count and
    checksum. The stranger pod's volume of the same name has no database."""
    writer, sidecar = shared_run["writer"], shared_run["sidecar"]
    foreign = stranger.run("sqlite-check", path=shared_run["db"], **WORKLOAD)
    evidence.update(database=shared_run["db"], app=writer, sidecar=sidecar, stranger=foreign,
                    beside_the_app=sidecar.get("beside_the_app"), killed_by=shared_run["killed_by"],
                    last_round_behind_the_app=shared_run["last_round_behind_the_app"])
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
    # what it reads after the app's last commit first: a reader left behind is that, not "did not run together"
    seen = last["snapshot"]
    assert same_rows(seen, writer), differs(seen, shared_run, "in what the sidecar reads after the app's last commit")
    assert sidecar["mid_run_snapshots"] >= 1, (
        f"none of the sidecar's {sidecar['rounds']} rounds fell between the app's first and last commit "
        f"(it saw {sidecar['rows_seen']} rows): the two did not run together")
    assert failed_with(foreign, "ENOENT"), stranger_sees("the stranger pod opens the app's database", foreign)


def test_no_statement_is_refused_as_locked_within_the_busy_timeout(shared_run, evidence):
    """Neither the app's transactions nor the sidecar's reads, backups and
    writes are refused for a lock ("database is locked", SQLITE_BUSY, or a lock
    call's I/O error): SQLite's busy timeout (5 s) covers every wait for the
    other. (Other refusals, a file gone corrupt, and a verb killed are what the
    claims on the rows report.)"""
    writer, sidecar = shared_run["writer"], shared_run["sidecar"]
    evidence.update(busy_ms=BUSY_MS, app_refused=writer.get("refused"), sidecar_refused=sidecar.get("refused"),
                    app_transactions=writer.get("transactions"), sidecar_rounds=sidecar.get("rounds"),
                    not_answered={who: describe(a) for who, a in (("app", writer), ("sidecar", sidecar))
                                  if not a["ok"]})
    for who, answer in (("the app", writer), ("the sidecar", sidecar)):
        locked = [r for r in answer.get("refused", []) if a_lock(r)]
        assert not locked, f"{first_refusal({'refused': locked}, who)} ({len(locked)} refused so in all)"
        assert answer["ok"] or not a_lock(answer), (
            f"SQLite refused {who} at the {answer.get('step')}: {describe(answer).split(' with ', 1)[-1]}")


def a_lock(refusal: dict) -> bool:
    """SQLite's words for a lock it could not get: busy or locked, or a lock call's
    I/O error (another refusal, a corrupt file, is what the claims on the rows see)."""
    code = refusal.get("errno") or ""
    return code.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or (code.startswith("SQLITE_IOERR") and "LOCK" in code)


def test_integrity_check_is_ok_in_both_containers_after_the_run(shared_run, sqlite_pod, evidence):
    """After the run, PRAGMA integrity_check says ok in the app and in the sidecar,
    and both read the same rows, the ones the app committed."""
    writer = shared_run["writer"]
    checks = {who: sqlite_pod.container(who).run("sqlite-check", path=shared_run["db"], **WORKLOAD)
              for who in ("app", "sidecar")}
    evidence.update(app_committed={k: writer.get(k) for k in ("rows", "checksum")}, checks=checks,
                    beside_the_app=shared_run["sidecar"].get("beside_the_app"), killed_by=shared_run["killed_by"],
                    last_round_behind_the_app=shared_run["last_round_behind_the_app"])
    assert writer["ok"], could_not("the app", "its database", writer)
    # "after the run" is after both ran: a sidecar that did not get through it leaves nothing to judge
    assert shared_run["sidecar"]["ok"], could_not("the sidecar", "the app's database", shared_run["sidecar"])
    for who, check in checks.items():
        assert check["ok"], could_not(f"the {who}", "the database after the run", check)
        assert check["integrity"] == ["ok"], f"integrity_check in the {who} says: {'; '.join(check['integrity'])}"
        assert same_rows(check, writer), differs(check, shared_run, f"in what the {who} reads after the run")


def test_the_sidecars_backup_restores_every_committed_row_in_the_app(shared_run, sqlite_pod, evidence):
    """The backup the sidecar took after the app's last commit (SQLite's online
    backup API, on the shared volume) restores in the app into a database whose
    integrity_check is ok and which holds every committed row."""
    writer, sidecar = shared_run["writer"], shared_run["sidecar"]
    restored = sqlite_pod.container("app").run("sqlite-restore", path=shared_run["backup"],
                                               to=shared_run["backup"].replace(".backup.db", ".restored.db"),
                                               **WORKLOAD)
    evidence.update(backup=(sidecar.get("last_round") or {}).get("backup"), restored=restored,
                    app_committed={k: writer.get(k) for k in ("rows", "checksum")},
                    beside_the_app=sidecar.get("beside_the_app"), killed_by=shared_run["killed_by"],
                    last_round_behind_the_app=shared_run["last_round_behind_the_app"])
    assert writer["ok"], could_not("the app", "its database", writer)
    assert sidecar["ok"], could_not("the sidecar", "the app's database", sidecar)
    assert restored["ok"], could_not("the app", "the sidecar's backup", restored)
    assert restored["integrity"] == ["ok"], f"the restored database's integrity_check says: {restored['integrity']}"
    assert same_rows(restored, writer), differs(restored, shared_run, "in the restored backup")


def test_a_write_transaction_open_in_the_app_holds_off_the_sidecars(sqlite_pod, medium, ipc_name, evidence):
    """While the app holds a write transaction (BEGIN IMMEDIATE), the sidecar
    sees its fcntl locks on the -shm file (WAL_WRITE exclusive), its own
    F_SETLK on that byte returns EAGAIN, and its BEGIN IMMEDIATE ends with
    SQLITE_BUSY after its busy timeout; once the app commits, the sidecar writes."""
    db = f"{medium}/{ipc_name}.db"
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


def same_rows(found: dict, writer: dict) -> bool:
    return (found["rows"], found["checksum"]) == (writer["rows"], writer["checksum"])


def differs(found: dict, run: dict, where: str) -> str:
    """How the rows a reader found differ from those the app committed, in words:
    whole transactions lost (which ones, where a later one is there), or other
    rows; and, where the sidecar saw no lock while the app held one, that."""
    writer = run["writer"]
    refused = {r["batch"] for r in writer["refused"] if "batch" in r}
    lost = [b for b in found.get("absent_transactions", []) if b not in refused]
    if found["rows"] < writer["rows"]:
        said = (f"committed transactions of the app are missing {where}: {found['rows']} rows of the "
                f"{writer['rows']} it committed, {(writer['rows'] - found['rows']) / BATCH:g} transactions' worth"
                + (f", transactions {lost} among them" if lost else ""))
    elif found["rows"] > writer["rows"]:
        said = f"{found['rows']} rows {where}, more than the {writer['rows']} the app committed"
    else:
        said = f"as many rows {where} as the app committed ({found['rows']}), but other ones (checksums differ)"
    beside = run["sidecar"].get("beside_the_app") or {}
    if beside.get("began_beside_the_app"):
        said += ("; while the app held a write transaction open, the sidecar saw no lock on the -shm's WAL_WRITE "
                 "byte (F_GETLK) and began its own beside it: the fcntl locks do not cross the containers")
    return said


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
