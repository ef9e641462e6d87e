"""One SQLite database in WAL mode shared by two containers (the sqlite pattern):
an app that writes, a sidecar that reads and backs the database up meanwhile,
the checks after the run, and a restore of the backup.

WAL needs, across processes, the -shm file's MAP_SHARED mapping (the wal-index)
and POSIX fcntl locks on bytes of that file. Where a shared volume does not
carry the locks from one container to the other, two connections each believe
they are alone: rows are lost, torn or the file corrupt. The answers say what
SQLite refused (its extended result code, at which step), what the reader saw
row by row, and what the sidecar saw of the app's write lock when both wanted
to write (probes/sqlite_locks.py has the locks in detail).

Every loop is bounded in time and in count: on a starved machine the writer
ends early (time_boxed) with what it committed, never with a failure."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import time

from .output import ok, signal_ready, step
from .sqlite_db import KEPT, answered, checksum, connect, elapsed_ms, payload, read_rows, refused, roll_back, verify
from .sqlite_locks import write_lock_seen

MIN_BATCHES = 10  # the writer's transactions before its time box may end it
BESIDE_AT = MIN_BATCHES // 2  # the writer's transaction that waits for the sidecar (before any time box)
PAUSE = 0.002  # between the writer's transactions, as an app's between requests (pacing, not polling)
ROUND_PAUSE = 0.02  # between the sidecar's rounds (pacing)
POLL = 0.01  # a look for the other container's marker file
MAX_ROUNDS = 2000  # the sidecar's rounds, whatever its time box

# Marker files beside the database: the two containers' handshake, once per run.
# The sidecar watches before the app begins, so it is not itself waiting on the
# app's lock (in SQLite's busy handler) while the app waits for its answer.
APP_ABOUT_TO_BEGIN, SIDECAR_WATCHING = ".app-about-to-begin", ".sidecar-watching"
APP_IN_TRANSACTION, SIDECAR_ANSWERED, APP_ENDED = ".app-in-transaction", ".sidecar-answered", ".app-ended"


def _mark(db_path: str, marker: str, content: dict | None = None) -> None:
    with open(db_path + marker, "w") as f:
        json.dump(content or {}, f)


def _await(db_path: str, marker: str, until: float) -> dict | None:
    """The other container's marker file, once it is there (None at `until`)."""
    for _ in range(int(max(0.0, until - time.monotonic()) / POLL) + 2):
        try:
            with open(db_path + marker) as f:
                return json.loads(f.read() or "{}")
        except (FileNotFoundError, ValueError):  # not there, or not yet written whole
            pass
        if time.monotonic() > until:
            return None
        time.sleep(POLL)  # bounded by `until` and by count
    return None


def _announce(path: str, until: float) -> bool:
    """The app, before the transaction it will hold open: is the sidecar watching?"""
    _mark(path, APP_ABOUT_TO_BEGIN)
    return _await(path, SIDECAR_WATCHING, until) is not None


def _watch(path: str, until: float) -> bool:
    """The sidecar, out of any transaction of its own: has the app begun its?"""
    _mark(path, SIDECAR_WATCHING)
    return _await(path, APP_IN_TRANSACTION, until) is not None


@answered
def write(args) -> dict:
    """The app: ROWS rows in transactions of BATCH, each BEGIN IMMEDIATE ...
    COMMIT under SQLite's busy timeout. One early transaction stays open
    (inserted, not committed) until the sidecar has looked at it (see
    `sidecar`), so both are seen at work together. A statement SQLite refuses is
    listed (step, code, how long it waited) and its transaction rolled back; the
    checksum covers the rows whose COMMIT returned."""
    started = time.monotonic()
    db, mode = connect(args.path, args.busy_ms, create=True)
    committed: list[int] = []
    refusals: list[dict] = []
    time_boxed, beside, watched_any = False, None, False
    for b in range(args.rows // args.batch):
        if b >= MIN_BATCHES and time.monotonic() - started > args.seconds / 2:
            time_boxed = True  # a starved machine slows the rounds, not the sharing: stop with what was committed
            break
        seqs = list(range(b * args.batch, (b + 1) * args.batch))
        watched = b == BESIDE_AT and _announce(args.path, until=time.monotonic() + args.seconds / 4)
        watched_any = watched_any or watched
        taken, since = "begin", time.monotonic()
        try:
            db.execute("BEGIN IMMEDIATE")
            taken = "insert"
            db.executemany("INSERT INTO rows VALUES (?, ?, ?)", [(s, b, payload(s)) for s in seqs])
            if watched:
                _mark(args.path, APP_IN_TRANSACTION, {"transaction": b})
                answer = _await(args.path, SIDECAR_ANSWERED, until=time.monotonic() + args.seconds / 4)
                beside = {"transaction": b, "sidecar_answered": answer is not None, **(answer or {})}
            taken = "commit"
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            refusals.append(refused(exc, taken, batch=b, waited_ms=elapsed_ms(since)))
            roll_back(db)
            if len(refusals) >= KEPT:
                break
            continue
        finally:
            if watched:
                _mark(args.path, APP_ENDED, {"transaction": b})
        committed += seqs
        time.sleep(PAUSE)
    db.close()
    return ok(path=args.path, journal_mode=mode, busy_ms=args.busy_ms, rows=len(committed),
              transactions=len(committed) // args.batch, checksum=checksum(committed), refused=refusals,
              beside_the_sidecar=beside or {"transaction": BESIDE_AT, "sidecar_watched": watched_any},
              time_boxed=time_boxed, took_ms=elapsed_ms(started))


class _Stop:
    """Set by `probes release` (SIGUSR1): the sidecar ends after one last round.
    A flag, not an exception, so no SQLite call is cut in the middle."""

    def __init__(self) -> None:
        self.asked = False
        signal.signal(signal.SIGUSR1, self.ask)

    def ask(self, *_) -> None:
        self.asked = True


def _beside_the_app(db: sqlite3.Connection, path: str, lock: dict, until: float) -> dict:
    """The sidecar's turn while the app holds a write transaction open. Seeing
    the app's WAL_WRITE lock (F_GETLK), it says so and goes on: its own write
    waits in SQLite's busy handler. Seeing none, it does what SQLite would do
    then: begins its own write transaction (BEGIN IMMEDIATE gets in), and
    commits only after the app has: two writers at once from one snapshot, which
    WAL's write lock exists to prevent."""
    if lock.get("held"):
        _mark(path, SIDECAR_ANSWERED, {"write_lock_seen": lock})
        return {"write_lock_seen": lock, "began_beside_the_app": False}
    try:
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO backups(rows_copied, checksum) VALUES (-1, 'beside the app')")
    except sqlite3.Error as exc:
        _mark(path, SIDECAR_ANSWERED, {"write_lock_seen": lock, **refused(exc, "begin")})
        raise
    _mark(path, SIDECAR_ANSWERED, {"write_lock_seen": lock, "began_beside_the_app": True})
    ended = _await(path, APP_ENDED, until)
    db.execute("COMMIT")
    return {"write_lock_seen": lock, "began_beside_the_app": True, "committed_after_the_app": ended is not None}


@answered
def sidecar(args) -> dict:
    """The sidecar: rounds of a snapshot (every row checked against its own
    bytes, each transaction whole, none gone since the round before), a backup
    through SQLite's online backup API into --to, and a row in the backups table
    (the sidecar writes too); once, the app's open transaction (see
    `_beside_the_app`). Ready after its first round; after `release` one last
    round (taken after the app's last commit), then its answer."""
    stop = _Stop()
    started = time.monotonic()
    db, mode = connect(args.path, args.busy_ms, create=True)
    refusals: list[dict] = []
    counts: list[int] = []
    inconsistent: list[dict] = []
    previous: set[int] = set()
    vanished = torn = partial = rounds = 0
    last = beside = None
    time_boxed = False
    for n in range(MAX_ROUNDS):
        rounds, final = n + 1, stop.asked
        if time.monotonic() - started > args.seconds:
            time_boxed = True
            break
        app_waits = beside is None and os.path.exists(args.path + APP_ABOUT_TO_BEGIN)
        if app_waits and not _watch(args.path, until=started + args.seconds):
            app_waits, beside = False, {"app_began": False}
        taken, lock = "read", write_lock_seen(args.path) if app_waits else None
        try:
            rows = read_rows(db)  # with the app's transaction open, if it waits: a snapshot mid-run
            seen = verify(rows, args.batch)
            seqs = {r[0] for r in rows}
            vanished += len(previous - seqs)
            previous = seqs
            torn, partial = torn + seen["torn_rows"], partial + seen["partial_transactions"]
            counts.append(seen["rows"])
            if app_waits:
                taken = "write beside the app"
                beside = _beside_the_app(db, args.path, lock, until=started + args.seconds)
            taken = "backup"
            copy = backup(db, args.to, args.batch)
            if copy["torn_rows"] or copy["partial_transactions"]:
                inconsistent.append({"round": n, **copy})
            taken = "record"
            db.execute("INSERT INTO backups(rows_copied, checksum) VALUES (?, ?)", (copy["rows"], copy["checksum"]))
            last = {"snapshot": seen, "backup": copy}
        except sqlite3.Error as exc:
            refusals.append(refused(exc, taken, round=n))
            roll_back(db)
            if app_waits and beside is None:
                beside = {"write_lock_seen": lock, "refused": refusals[-1]}
            if len(refusals) >= KEPT:
                break
        if n == 0:
            signal_ready(pid=os.getpid(), path=args.path)
        if final:
            break
        time.sleep(ROUND_PAUSE)
    db.close()
    return ok(path=args.path, journal_mode=mode, busy_ms=args.busy_ms, rounds=rounds, released=stop.asked,
              time_boxed=time_boxed, refused=refusals, rows_seen=_spread(counts),
              mid_run_snapshots=sum(0 < c < max(counts, default=0) for c in counts), torn_rows=torn,
              partial_transactions=partial, vanished_rows=vanished, inconsistent_backups=inconsistent[:KEPT],
              beside_the_app=beside, last_round=last, took_ms=elapsed_ms(started))


def _spread(counts: list[int]) -> list[int]:
    """The distinct row counts the rounds saw, in order: a few of them."""
    distinct = list(dict.fromkeys(counts))
    return distinct if len(distinct) <= 2 * KEPT else distinct[:KEPT] + distinct[-KEPT:]


def backup(db: sqlite3.Connection, to: str, batch: int) -> dict:
    """SQLite's online backup of the live database into `to` (one step, one read
    transaction: a consistent copy), then what the copy holds."""
    copy = sqlite3.connect(to, isolation_level=None)
    try:
        db.backup(copy)
        return {"path": to, **verify(copy.execute("SELECT seq, batch, payload FROM rows ORDER BY seq").fetchall(),
                                     batch)}
    finally:
        copy.close()


@answered
def check(args) -> dict:
    """After the run: PRAGMA integrity_check, the journal mode, and the rows as
    the reader finds them."""
    db, mode = connect(args.path, args.busy_ms, wal=False)
    with step("integrity_check", path=args.path):
        integrity = [r[0] for r in db.execute("PRAGMA integrity_check").fetchall()]
    with step("read", path=args.path):
        seen = verify(read_rows(db), args.batch)
    db.close()
    return ok(path=args.path, journal_mode=mode, integrity=integrity[:KEPT], **seen)


@answered
def restore(args) -> dict:
    """Restore a backup file into a new database (the backup API again, the other
    way), then check the restored database as `check` does."""
    source, _ = connect(args.path, args.busy_ms, wal=False)
    with step("restore", path=args.to):
        target = sqlite3.connect(args.to, isolation_level=None)
        source.backup(target)
        target.close()
    source.close()
    restored = type(args)(**{**vars(args), "path": args.to})
    return {**check(restored), "restored_from": args.path}
