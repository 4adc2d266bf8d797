"""The learning store's catalog in SQLite: which segments exist, where each learning id lives, and offsets."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from hive.store import TopicPartitionKey

SCHEMA = """
CREATE TABLE IF NOT EXISTS segments (
    name       TEXT PRIMARY KEY,
    first_seq  INTEGER NOT NULL,
    last_seq   INTEGER NOT NULL,
    row_count  INTEGER NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE TABLE IF NOT EXISTS learnings (
    id       TEXT PRIMARY KEY,
    seq      INTEGER NOT NULL UNIQUE,
    agent_id TEXT NOT NULL,
    skill    TEXT NOT NULL,
    segment  TEXT NOT NULL REFERENCES segments(name)
);
CREATE INDEX IF NOT EXISTS learnings_agent ON learnings(agent_id, seq);
CREATE INDEX IF NOT EXISTS learnings_skill ON learnings(skill, seq);
CREATE TABLE IF NOT EXISTS offsets (
    topic       TEXT NOT NULL,
    partition   INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
);
"""

# (id, seq, agent_id, skill)
IdRow = tuple[str, int, str, str]


class SqliteCatalog:
    """One SQLite file in WAL mode with ``synchronous=FULL``, so a returned commit survives power loss.

    All access goes through one connection behind a lock: the store has a single writer, and
    readers on other threads see only committed transactions.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        # The lock, not sqlite's thread check, serializes use of the one connection across threads.
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def known_ids(self, ids: Sequence[str]) -> set[str]:
        """The ids among ``ids`` that are already stored."""
        found: set[str] = set()
        with self._lock:
            # SQLite caps bound parameters (32766 in 3.32+); chunk well below that.
            for start in range(0, len(ids), 900):
                chunk = ids[start : start + 900]
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(f"SELECT id FROM learnings WHERE id IN ({marks})", chunk)
                found.update(r[0] for r in rows)
        return found

    def max_seq(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT COALESCE(MAX(seq), 0) FROM learnings").fetchone()
        return int(row[0])

    def commit(self, segment: str | None, rows: Sequence[IdRow], offsets: dict[TopicPartitionKey, int]) -> None:
        """Records a segment, its learning ids and the offsets in one transaction (no segment: offsets only)."""
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                if segment is not None and rows:
                    seqs = [r[1] for r in rows]
                    cur.execute(
                        "INSERT INTO segments(name, first_seq, last_seq, row_count) VALUES (?, ?, ?, ?)",
                        (segment, min(seqs), max(seqs), len(rows)),
                    )
                    cur.executemany(
                        "INSERT INTO learnings(id, seq, agent_id, skill, segment) VALUES (?, ?, ?, ?, ?)",
                        [(*r, segment) for r in rows],
                    )
                cur.executemany(
                    "INSERT INTO offsets(topic, partition, next_offset) VALUES (?, ?, ?) "
                    "ON CONFLICT(topic, partition) DO UPDATE SET next_offset = excluded.next_offset",
                    [(t, p, o) for (t, p), o in offsets.items()],
                )
                cur.execute("COMMIT")
            except BaseException:
                # Roll back whatever failed (sqlite3.Error, KeyboardInterrupt) and let it propagate.
                cur.execute("ROLLBACK")
                raise

    def segment_names(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._conn.execute("SELECT name FROM segments")}

    def count(self, agent_id: str | None = None, skill: str | None = None) -> int:
        where, params = _where(0, None, agent_id, skill)
        with self._lock:
            row = self._conn.execute(f"SELECT COUNT(*) FROM learnings {where}", params).fetchone()
        return int(row[0])

    def unique_ids(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(DISTINCT id) FROM learnings").fetchone()[0])

    def locate(
        self,
        after_seq: int = 0,
        upto_seq: int | None = None,
        agent_id: str | None = None,
        skill: str | None = None,
        limit: int | None = None,
    ) -> list[tuple[int, str]]:
        """(seq, segment) of the matching learnings, ordered by seq."""
        where, params = _where(after_seq, upto_seq, agent_id, skill)
        sql = f"SELECT seq, segment FROM learnings {where} ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        with self._lock:
            return [(int(s), str(g)) for s, g in self._conn.execute(sql, params)]

    def offsets(self) -> dict[TopicPartitionKey, int]:
        with self._lock:
            rows = self._conn.execute("SELECT topic, partition, next_offset FROM offsets")
            return {(str(t), int(p)): int(o) for t, p, o in rows}

    def per_agent_counts(self, after_seq: int = 0, upto_seq: int | None = None) -> dict[str, int]:
        where, params = _where(after_seq, upto_seq, None, None)
        sql = f"SELECT agent_id, COUNT(*) FROM learnings {where} GROUP BY agent_id ORDER BY agent_id"
        with self._lock:
            return {str(a): int(n) for a, n in self._conn.execute(sql, params)}


def _where(after_seq: int, upto_seq: int | None, agent_id: str | None, skill: str | None) -> tuple[str, list[object]]:
    clauses: list[str] = ["seq > ?"]
    params: list[object] = [int(after_seq)]
    for clause, value in (("seq <= ?", upto_seq), ("agent_id = ?", agent_id), ("skill = ?", skill)):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    return "WHERE " + " AND ".join(clauses), params
