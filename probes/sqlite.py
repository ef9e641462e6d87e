"""One SQLite database in WAL mode shared by two containers (the sqlite pattern):
an app that writes, a sidecar that reads and backs the database up meanwhile,
the checks after the run, and a restore of the backup.

WAL needs, across processes, the -shm file's MAP_SHARED mapping (the wal-index)
and POSIX fcntl locks on bytes of that file. Where a shared volume does not
carry them from one container to the other, two connections each believe they
are alone: rows are lost, torn or the file corrupt. The answers say what SQLite
refused (its extended result code, at which step) and what the reader saw, row
by row; probes/sqlite_locks.py shows the fcntl locks themselves.

Every loop is bounded in time and in count: on a starved machine the writer
ends early (time_boxed) with what it committed, never with a failure."""
from __future__ import annotations

import functools
import hashlib
import os
import signal
import sqlite3
import time
from collections import Counter
from typing import Any, Callable

from .output import failure, ok, signal_ready, step

MIN_BATCHES = 10  # the writer's transactions before its time box may end it
PAUSE = 0.002  # between the writer's transactions, as an app's between requests (pacing, not polling)
ROUND_PAUSE = 0.02  # between the sidecar's rounds (pacing)
POLL = 0.01  # the writer's look for the sidecar's backup, mid-run
MAX_ROUNDS = 2000  # the sidecar's rounds, whatever its time box
KEPT = 10  # how many of one kind of finding an answer lists (it counts them all)

SCHEMA = """
CREATE TABLE IF NOT EXISTS rows(seq INTEGER PRIMARY KEY, batch INTEGER NOT NULL, payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS backups(n INTEGER PRIMARY KEY, rows_copied INTEGER NOT NULL, checksum TEXT NOT NULL);
"""


def payload(seq: int) -> bytes:
    """Row `seq`'s bytes, known to every reader without trusting the database:
    64 to 512 bytes, so rows straddle pages differently."""
    block = hashlib.sha256(b"podshare-sqlite:%d" % seq).digest()
    size = 64 + seq * 37 % 449
    return (block * (size // len(block) + 1))[:size]


def checksum(seqs: list[int]) -> str:
    """The checksum of a set of rows as they should be: the writer's of what it
    committed, a reader's of the sequence numbers it found (rows read back
    whole, see verify)."""
    h = hashlib.sha256()
    for seq in seqs:
        h.update(b"%d:" % seq + hashlib.sha256(payload(seq)).digest())
    return h.hexdigest()


def verify(rows: list[tuple[int, int, bytes]], batch: int) -> dict[str, Any]:
    """What a reader found in the rows table (seq, batch, payload): torn rows
    (bytes other than the row's own), transactions seen in part, and the
    checksum of the rows read whole."""
    torn = [seq for seq, _, data in rows if data != payload(seq)]
    per_batch = Counter(b for _, b, _ in rows)
    partial = sorted(b for b, n in per_batch.items() if n != batch)
    whole = [seq for seq, _, data in rows if data == payload(seq)]
    return {"rows": len(rows), "checksum": checksum(whole), "torn_rows": len(torn), "torn_examples": torn[:KEPT],
            "partial_transactions": len(partial), "partial_examples": partial[:KEPT]}


def refused(exc: sqlite3.Error, taken: str, **fields: Any) -> dict[str, Any]:
    """A SQLite error in the probes' words: the step, SQLite's extended result
    code where an errno would go (SQLITE_BUSY, SQLITE_IOERR_SHMLOCK...), its text."""
    code = getattr(exc, "sqlite_errorname", None) or "SQLITE_ERROR"
    return {"ok": False, "step": taken, "errno": code, "detail": str(exc), **fields}


def answered(verb: Callable[[Any], dict[str, Any]]) -> Callable[[Any], dict[str, Any]]:
    """A verb whose OS or SQLite error is its answer, with the step it failed at."""
    @functools.wraps(verb)
    def run(args) -> dict[str, Any]:
        try:
            return verb(args)
        except OSError as exc:
            return failure(exc, path=args.path)
        except sqlite3.Error as exc:
            return refused(exc, getattr(exc, "podshare_step", None) or "query", path=args.path)
    return run


def connect(path: str, busy_ms: int, create: bool = False, wal: bool = True) -> tuple[sqlite3.Connection, str]:
    """A connection as an app makes one: WAL, synchronous NORMAL (WAL's usual
    pairing), SQLite's busy timeout; autocommit, so transactions are explicit.
    A database that is not there is ENOENT at the open, not SQLite's words."""
    with step("open", path=path):
        if not create:
            os.stat(path)
        db = sqlite3.connect(f"file:{path}?mode={'rwc' if create else 'rw'}", uri=True, timeout=busy_ms / 1000,
                             isolation_level=None)
        mode = db.execute("PRAGMA journal_mode=WAL" if wal else "PRAGMA journal_mode").fetchone()[0]
        db.execute("PRAGMA synchronous=NORMAL")
    if create:
        with step("schema", path=path):
            db.executescript(f"BEGIN IMMEDIATE; {SCHEMA} COMMIT;")
    return db, mode


def read_rows(db: sqlite3.Connection) -> list[tuple[int, int, bytes]]:
    """Every row, in one read transaction: a snapshot."""
    db.execute("BEGIN")
    try:
        return db.execute("SELECT seq, batch, payload FROM rows ORDER BY seq").fetchall()
    finally:
        db.execute("COMMIT")


def _elapsed_ms(since: float) -> float:
    return round((time.monotonic() - since) * 1000, 1)


@answered
def write(args) -> dict:
    """The app: ROWS rows in transactions of BATCH, each BEGIN IMMEDIATE ...
    COMMIT under SQLite's busy timeout. Halfway it waits (bounded) for the
    sidecar to have backed up what it committed so far, so the sidecar's reads,
    backup and writes are seen to overlap the app's open connection. A statement
    SQLite refuses is listed (step, code, how long it waited) and its transaction
    rolled back; the checksum covers the rows whose COMMIT returned."""
    started = time.monotonic()
    db, mode = connect(args.path, args.busy_ms, create=True)
    committed: list[int] = []
    refusals: list[dict] = []
    time_boxed, mid_run = False, None
    batches = args.rows // args.batch
    for b in range(batches):
        if b >= MIN_BATCHES and time.monotonic() - started > args.seconds / 2:
            time_boxed = True  # a starved machine slows the rounds, not the sharing: stop with what was committed
            break
        if b == batches // 2:
            mid_run = _sidecar_backed_up(db, len(committed), until=time.monotonic() + args.seconds / 4)
        seqs = list(range(b * args.batch, (b + 1) * args.batch))
        taken, since = "begin", time.monotonic()
        try:
            db.execute("BEGIN IMMEDIATE")
            taken = "insert"
            db.executemany("INSERT INTO rows VALUES (?, ?, ?)", [(s, b, payload(s)) for s in seqs])
            taken = "commit"
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            refusals.append(refused(exc, taken, batch=b, waited_ms=_elapsed_ms(since)))
            _roll_back(db)
            if len(refusals) >= KEPT:
                break
            continue
        committed += seqs
        time.sleep(PAUSE)
    db.close()
    return ok(path=args.path, journal_mode=mode, busy_ms=args.busy_ms, rows=len(committed),
              transactions=len(committed) // args.batch, checksum=checksum(committed), refused=refusals,
              sidecar_mid_run=mid_run, time_boxed=time_boxed, took_ms=_elapsed_ms(started))


def _roll_back(db: sqlite3.Connection) -> None:
    try:
        if db.in_transaction:
            db.execute("ROLLBACK")
    except sqlite3.Error:
        pass  # SQLite rolls an unfinished transaction back itself when the connection closes


def _sidecar_backed_up(db: sqlite3.Connection, rows: int, until: float) -> dict:
    """Wait until the sidecar's backups table says it copied at least `rows` rows."""
    since, copied = time.monotonic(), 0
    for _ in range(int((until - since) / POLL) + 1):
        try:
            copied = db.execute("SELECT coalesce(max(rows_copied), 0) FROM backups").fetchone()[0]
        except sqlite3.Error as exc:
            return {"rows": rows, "seen": False, **refused(exc, "read")}
        if copied >= rows or time.monotonic() > until:
            break
        time.sleep(POLL)  # bounded by `until` and by count
    return {"rows": rows, "backed_up": copied, "seen": copied >= rows, "waited_ms": _elapsed_ms(since)}


class _Stop:
    """Set by `probes release` (SIGUSR1): the sidecar ends after one last round.
    A flag, not an exception, so no SQLite call is cut in the middle."""

    def __init__(self) -> None:
        self.asked = False
        signal.signal(signal.SIGUSR1, self.ask)

    def ask(self, *_) -> None:
        self.asked = True


@answered
def sidecar(args) -> dict:
    """The sidecar: rounds of a snapshot (every row checked against its own
    bytes, each transaction whole, none gone since the round before), a backup
    through SQLite's online backup API into --to, and a row in the backups table
    (the sidecar writes too). Ready after its first round; after `release`
    one last round (taken after the app's last commit), then its answer."""
    stop = _Stop()
    started = time.monotonic()
    db, mode = connect(args.path, args.busy_ms, create=True)
    refusals: list[dict] = []
    counts: list[int] = []
    vanished, inconsistent, last = 0, [], None
    previous: set[int] = set()
    torn = partial = 0
    time_boxed, rounds = False, 0
    for n in range(MAX_ROUNDS):
        rounds = n + 1
        final = stop.asked
        if time.monotonic() - started > args.seconds:
            time_boxed = True
            break
        taken = "read"
        try:
            rows = read_rows(db)
            seen = verify(rows, args.batch)
            seqs = {r[0] for r in rows}
            vanished += len(previous - seqs)
            previous = seqs
            torn, partial = torn + seen["torn_rows"], partial + seen["partial_transactions"]
            counts.append(seen["rows"])
            taken = "backup"
            copy = backup(db, args.to, args.batch)
            if copy["torn_rows"] or copy["partial_transactions"]:
                inconsistent.append({"round": n, **copy})
            taken = "record"
            db.execute("INSERT INTO backups(rows_copied, checksum) VALUES (?, ?)", (copy["rows"], copy["checksum"]))
            last = {"snapshot": seen, "backup": copy}
        except sqlite3.Error as exc:
            refusals.append(refused(exc, taken, round=n))
            _roll_back(db)
            if len(refusals) >= KEPT:
                break
        if n == 0:
            signal_ready(pid=os.getpid(), path=args.path)
        if final:
            break
        time.sleep(ROUND_PAUSE)
    db.close()
    return ok(path=args.path, journal_mode=mode, busy_ms=args.busy_ms, rounds=rounds,
              released=stop.asked, time_boxed=time_boxed, refused=refusals, rows_seen=_spread(counts),
              mid_run_snapshots=sum(0 < c < max(counts, default=0) for c in counts), torn_rows=torn,
              partial_transactions=partial, vanished_rows=vanished, inconsistent_backups=inconsistent[:KEPT],
              last_round=last, took_ms=_elapsed_ms(started))


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
    return {**check(_with_path(args, args.to)), "restored_from": args.path}


def _with_path(args, path: str):
    copy = type(args)(**vars(args))
    copy.path = path
    return copy
