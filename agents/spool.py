"""The agent's durable spool: encoded learnings wait on disk, oldest first, until the broker acks them."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

SPOOL_FILE = "spool.sqlite"
LOCK_SUFFIX = ".lock"

_SCHEMA = (
    # AUTOINCREMENT: a seq is never reused after a delete, so seq order is append order for the file's life.
    "CREATE TABLE IF NOT EXISTS entries ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " id TEXT NOT NULL UNIQUE,"
    " key BLOB,"
    " value BLOB NOT NULL,"
    " spooled_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO counters (name, value) VALUES ('appended', 0), ('acked', 0)",
)


class SpoolFull(RuntimeError):
    """The spool holds its configured maximum; the caller must wait for acks (``Spool.wait_for_room``)."""


class SpoolLocked(RuntimeError):
    """Another process has the spool open: two agents are running with the same id and home."""


@dataclass(frozen=True)
class SpoolEntry:
    """One spooled record: its place in the queue, its id, and the exact bytes to send."""

    seq: int
    id: str
    key: bytes | None
    value: bytes


@dataclass(frozen=True)
class SpoolSnapshot:
    """What a spool file holds, read from another process: totals ever appended and acked, and the ids waiting."""

    appended: int
    acked: int
    ids: list[str]


class Spool:
    """An append-only queue of encoded records in SQLite (WAL, ``synchronous=FULL``).

    Contract:
    - ``append`` is all or nothing and returns only once its records are on disk (fsynced).
    - A record leaves only through ``ack``, which the caller MUST call only after the broker acked it.
    - ``peek`` gives the oldest records first, in append order, with the bytes exactly as appended:
      a re-send reuses them (and so the learning's id), it never re-encodes.
    - An id is held at most once; appending an id already waiting adds nothing.
    - It never holds more than ``max_entries``: ``append`` raises ``SpoolFull`` instead, and the caller
      applies backpressure. Nothing is ever dropped.
    - One process at a time (an exclusive lock file); its threads may share the spool.
    - ``appended`` and ``acked`` are totals over the file's whole life, across restarts.
    """

    def __init__(self, path: str | Path, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError(f"a spool needs room for at least one record, not {max_entries}")
        self.path = Path(path)
        self.max_entries = max_entries
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(f"{self.path}{LOCK_SUFFIX}", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            os.close(self._lock_fd)
            raise SpoolLocked(f"spool {self.path} is in use by another process (an agent with the same id?)") from err
        try:
            # Autocommit mode: transactions are spelled out, so each append is exactly one fsynced commit.
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            for statement in _SCHEMA:
                self._db.execute(statement)
        except sqlite3.Error:
            os.close(self._lock_fd)  # releases the lock: the spool was never opened
            raise
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._size = int(self._db.execute("SELECT COUNT(*) FROM entries").fetchone()[0])
        counters = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
        self._appended = int(counters["appended"])
        self._acked = int(counters["acked"])
        self._closed = False

    def __len__(self) -> int:
        with self._lock:
            return self._size

    @property
    def appended(self) -> int:
        with self._lock:
            return self._appended

    @property
    def acked(self) -> int:
        with self._lock:
            return self._acked

    def room(self) -> int:
        """How many more records fit before the bound."""
        with self._lock:
            return self.max_entries - self._size

    def append(self, records: Sequence[tuple[str, bytes | None, bytes]], past_bound: bool = False) -> int:
        """Stores ``(id, key, value)`` records durably, in order; returns how many were new.

        Raises ``SpoolFull`` (storing none of them) when they do not all fit, unless ``past_bound``:
        for an agent that is shutting down, going over the bound beats dropping.
        """
        if not records:
            return 0
        with self._lock:
            self._check_open()
            if not past_bound and self._size + len(records) > self.max_entries:
                raise SpoolFull(
                    f"spool {self.path} holds {self._size} of {self.max_entries}; {len(records)} more do not fit"
                )
            now = time.time()
            with self._transaction():
                cursor = self._db.executemany(
                    "INSERT OR IGNORE INTO entries (id, key, value, spooled_at) VALUES (?, ?, ?, ?)",
                    [(rid, key, value, now) for rid, key, value in records],
                )
                added = max(cursor.rowcount, 0)
                self._db.execute("UPDATE counters SET value = value + ? WHERE name = 'appended'", (added,))
            self._size += added
            self._appended += added
            return added

    def peek(self, limit: int, after_seq: int = 0) -> list[SpoolEntry]:
        """The oldest ``limit`` records with ``seq > after_seq``, oldest first; they stay in the spool."""
        with self._lock:
            self._check_open()
            rows = self._db.execute(
                "SELECT seq, id, key, value FROM entries WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)
            ).fetchall()
        return [
            SpoolEntry(int(seq), rid, None if key is None else bytes(key), bytes(value))
            for seq, rid, key, value in rows
        ]

    def ack(self, seqs: Iterable[int]) -> int:
        """Removes the records the broker acknowledged; returns how many were removed."""
        wanted = [(seq,) for seq in seqs]
        if not wanted:
            return 0
        with self._lock:
            self._check_open()
            with self._transaction():
                cursor = self._db.executemany("DELETE FROM entries WHERE seq = ?", wanted)
                removed = max(cursor.rowcount, 0)
                self._db.execute("UPDATE counters SET value = value + ? WHERE name = 'acked'", (removed,))
            self._size -= removed
            self._acked += removed
            self._room.notify_all()
            return removed

    def wait_for_room(self, count: int = 1, timeout_s: float | None = None) -> bool:
        """Blocks until ``count`` more records fit (or ``timeout_s`` passes); True when they fit."""
        count = min(count, self.max_entries)
        with self._room:
            return self._room.wait_for(lambda: self.max_entries - self._size >= count, timeout=timeout_s)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._room.notify_all()
            self._db.close()
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"spool {self.path} is closed")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        # BEGIN IMMEDIATE takes the write lock up front; a failure rolls back and the error goes on.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def __enter__(self) -> Spool:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def snapshot(path: str | Path) -> SpoolSnapshot:
    """Reads a spool file without taking it over: safe while its agent runs (WAL readers do not block)."""
    db = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True, isolation_level=None)
    try:
        # One read transaction, so that the counters and the ids agree with each other.
        db.execute("BEGIN")
        counters = dict(db.execute("SELECT name, value FROM counters").fetchall())
        ids = [row[0] for row in db.execute("SELECT id FROM entries ORDER BY seq")]
        db.execute("COMMIT")
    finally:
        db.close()
    return SpoolSnapshot(int(counters["appended"]), int(counters["acked"]), ids)
