"""The sqlite pattern's database as both containers open it: its schema, rows
whose bytes every reader knows without trusting the database, what a reader
finds in them, and SQLite's errors in the probes' words."""
from __future__ import annotations

import functools
import hashlib
import os
import sqlite3
import time
from collections import Counter
from typing import Any, Callable

from .output import failure, step

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
    (bytes other than the row's own), transactions seen in part, transactions
    absent before the last one present (lost, unless the writer says SQLite
    refused them), and the checksum of the rows read whole."""
    torn = [seq for seq, _, data in rows if data != payload(seq)]
    per_batch = Counter(b for _, b, _ in rows)
    partial = sorted(b for b, n in per_batch.items() if n != batch)
    absent = [b for b in range(max(per_batch, default=-1)) if b not in per_batch]
    whole = [seq for seq, _, data in rows if data == payload(seq)]
    return {"rows": len(rows), "checksum": checksum(whole), "torn_rows": len(torn), "torn_examples": torn[:KEPT],
            "partial_transactions": len(partial), "partial_examples": partial[:KEPT],
            "absent_transactions": absent[:KEPT]}


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
            # only where it is missing: the schema's write transaction would wait for any other writer
            if not db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'backups'").fetchone()[0]:
                db.executescript(f"BEGIN IMMEDIATE; {SCHEMA} COMMIT;")
    return db, mode


def read_rows(db: sqlite3.Connection) -> list[tuple[int, int, bytes]]:
    """Every row, in one read transaction: a snapshot."""
    db.execute("BEGIN")
    try:
        return db.execute("SELECT seq, batch, payload FROM rows ORDER BY seq").fetchall()
    finally:
        db.execute("COMMIT")


def roll_back(db: sqlite3.Connection) -> None:
    try:
        if db.in_transaction:
            db.execute("ROLLBACK")
    except sqlite3.Error:
        pass  # SQLite rolls an unfinished transaction back itself when the connection closes


def elapsed_ms(since: float) -> float:
    return round((time.monotonic() - since) * 1000, 1)
