"""The learning store's catalog in SQLite: segments, where each learning id lives, dead letters, offsets and
the quarantine."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from hive.store.catalog_sql import (
    DEAD_LETTER_COLUMNS,
    DETAIL_CHARS,
    QUARANTINE_COLUMNS,
    QUARANTINE_SCHEMA,
    REASON_CHARS,
    SCHEMA,
    learnings_where,
)
from hive.store.interface import DeadLetter, Indexed, Quarantined, StoreError, TopicPartitionKey

# (id, seq, agent_id, skill)
IdRow = tuple[str, int, str, str]
# Values bound in one IN (...) query: old SQLite builds cap a statement's parameters at 999.
IN_CHUNK = 900


class SqliteCatalog:
    """One SQLite file in WAL mode with ``synchronous=FULL``, so a returned commit survives power loss.

    All access goes through one connection behind a lock: the store has a single writer, and
    readers on other threads see only committed transactions. ``read_only`` opens an existing catalog
    without creating or changing anything, so another process may read while the writer runs.
    """

    def __init__(self, path: Path, read_only: bool = False) -> None:
        self.path = path
        self._lock = threading.Lock()
        if read_only:
            if not path.is_file():
                raise StoreError(f"no catalog at {path}")
            uri = f"file:{quote(str(path.resolve()))}?mode=ro"
            self._conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            tables = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "learnings" not in tables:
                self._conn.close()
                # The writer creates the file a moment before its tables; a reader may come in between.
                raise StoreError(f"the catalog at {path} has no tables yet: its writer is creating it")
            # A catalog written before dead letters were kept locally has no such table until its writer opens it.
            self._has_dead_letters = "dead_letters" in tables
            self._has_quarantine = "quarantine" in tables
            self.read_only = True
            return
        self.read_only = False
        # The lock, not sqlite's thread check, serializes use of the one connection across threads.
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.executescript(SCHEMA)
        self._has_dead_letters = True
        self._has_quarantine = True

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

    def commit(
        self,
        segment: str | None,
        rows: Sequence[IdRow],
        offsets: dict[TopicPartitionKey, int],
        dead_letters: Sequence[DeadLetter] = (),
    ) -> None:
        """Records a segment, its learning ids, the dead letters and the offsets in one transaction.

        No segment: dead letters and offsets only. A dead letter already recorded is skipped.
        """
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
                    # ON CONFLICT, not OR IGNORE: only a repeat is skipped; a NULL where none belongs still fails.
                    f"INSERT INTO dead_letters({DEAD_LETTER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT(source_topic, source_partition, source_offset, payload_sha256) DO NOTHING",
                    [
                        (
                            d.reason,
                            d.detail,
                            d.source_topic,
                            d.source_partition,
                            d.source_offset,
                            d.size,
                            d.payload_sha256,
                            d.payload_head,
                            d.key,
                            d.agent_id,
                        )
                        for d in dead_letters
                    ],
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

    def segments(self) -> list[tuple[str, int, int, int]]:
        """(name, first_seq, last_seq, row_count) of every segment, by first_seq."""
        with self._lock:
            rows = self._conn.execute("SELECT name, first_seq, last_seq, row_count FROM segments ORDER BY first_seq")
            return [(str(n), int(f), int(la), int(c)) for n, f, la, c in rows]

    def replace_segments(self, olds: Sequence[str], new: str, first_seq: int, last_seq: int, row_count: int) -> None:
        """Points every learning of ``olds`` at ``new`` and forgets ``olds``, in one transaction. Raises StoreError,
        changing nothing, unless ``olds`` hold exactly ``row_count`` learnings."""
        marks = ",".join("?" * len(olds))
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                cur.execute(
                    "INSERT INTO segments(name, first_seq, last_seq, row_count) VALUES (?, ?, ?, ?)",
                    (new, first_seq, last_seq, row_count),
                )
                cur.execute(f"UPDATE learnings SET segment = ? WHERE segment IN ({marks})", (new, *olds))
                if cur.rowcount != row_count:
                    raise StoreError(f"compaction into {new}: the catalog holds {cur.rowcount} rows, not {row_count}")
                cur.execute(f"DELETE FROM segments WHERE name IN ({marks})", tuple(olds))
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise

    def segment_names(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._conn.execute("SELECT name FROM segments")}

    def count(self, agent_id: str | None = None, skill: str | None = None) -> int:
        where, params = learnings_where(0, None, agent_id, skill)
        with self._lock:
            row = self._conn.execute(f"SELECT COUNT(*) FROM learnings {where}", params).fetchone()
        return int(row[0])

    def unique_ids(self, agent_id: str | None = None, skill: str | None = None) -> int:
        where, params = learnings_where(0, None, agent_id, skill)
        with self._lock:
            return int(self._conn.execute(f"SELECT COUNT(DISTINCT id) FROM learnings {where}", params).fetchone()[0])

    def nth_newest_seq(self, n: int, agent_id: str | None = None, skill: str | None = None) -> int | None:
        """The seq of the ``n``-th newest matching learning, or None when fewer than ``n`` match."""
        where, params = learnings_where(0, None, agent_id, skill)
        sql = f"SELECT seq FROM learnings {where} ORDER BY seq DESC LIMIT 1 OFFSET ?"
        with self._lock:
            row = self._conn.execute(sql, [*params, max(0, int(n) - 1)]).fetchone()
        return None if row is None else int(row[0])

    def dead_letter_counts(self) -> dict[str, int]:
        if not self._has_dead_letters:
            return {}
        sql = "SELECT reason, COUNT(*) FROM dead_letters GROUP BY reason ORDER BY reason"
        with self._lock:
            return {str(r): int(n) for r, n in self._conn.execute(sql)}

    def dead_letters(self, limit: int | None = None, reason: str | None = None) -> list[DeadLetter]:
        if not self._has_dead_letters:
            return []
        sql = f"SELECT {DEAD_LETTER_COLUMNS}, recorded_at FROM dead_letters"
        params: list[object] = []
        if reason is not None:
            sql += " WHERE reason = ?"
            params.append(reason)
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        return [
            DeadLetter(
                reason=r[0],
                detail=r[1],
                source_topic=r[2],
                source_partition=int(r[3]),
                source_offset=int(r[4]),
                size=int(r[5]),
                payload_sha256=r[6],
                payload_head=bytes(r[7]),
                key=r[8],
                agent_id=r[9],
                recorded_at=r[10],
            )
            for r in rows
        ]

    def locate(
        self,
        after_seq: int = 0,
        upto_seq: int | None = None,
        agent_id: str | None = None,
        skill: str | None = None,
        limit: int | None = None,
        skip_quarantined: bool = False,
    ) -> list[tuple[int, str]]:
        """(seq, segment) of the matching learnings, ordered by seq."""
        where, params = learnings_where(
            after_seq, upto_seq, agent_id, skill, skip_quarantined and self._quarantine_exists()
        )
        sql = f"SELECT seq, segment FROM learnings {where} ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        with self._lock:
            return [(int(s), str(g)) for s, g in self._conn.execute(sql, params)]

    def index(self, after_seq: int = 0, upto_seq: int | None = None) -> list[Indexed]:
        """``(seq, agent_id, skill)`` of the learnings in the range that are not quarantined, ordered by seq."""
        where, params = learnings_where(after_seq, upto_seq, None, None, self._quarantine_exists())
        with self._lock:
            rows = self._conn.execute(f"SELECT seq, agent_id, skill FROM learnings {where} ORDER BY seq", params)
            return [Indexed(int(seq), str(agent), str(skill)) for seq, agent, skill in rows]

    def segments_of(self, seqs: Sequence[int]) -> list[tuple[int, str]]:
        """(seq, segment) of these seqs that are stored, ordered by seq."""
        found: list[tuple[int, str]] = []
        wanted = sorted(set(seqs))
        with self._lock:
            # In chunks: SQLite caps the parameters of one statement.
            for start in range(0, len(wanted), IN_CHUNK):
                chunk = wanted[start : start + IN_CHUNK]
                marks = ",".join("?" * len(chunk))
                sql = f"SELECT seq, segment FROM learnings WHERE seq IN ({marks})"
                found.extend((int(s), str(g)) for s, g in self._conn.execute(sql, chunk))
        return sorted(found)

    def offsets(self) -> dict[TopicPartitionKey, int]:
        with self._lock:
            rows = self._conn.execute("SELECT topic, partition, next_offset FROM offsets")
            return {(str(t), int(p)): int(o) for t, p, o in rows}

    def per_agent_counts(
        self, after_seq: int = 0, upto_seq: int | None = None, skip_quarantined: bool = False
    ) -> dict[str, int]:
        where, params = learnings_where(after_seq, upto_seq, None, None, skip_quarantined and self._quarantine_exists())
        sql = f"SELECT agent_id, COUNT(*) FROM learnings {where} GROUP BY agent_id ORDER BY agent_id"
        with self._lock:
            return {str(a): int(n) for a, n in self._conn.execute(sql, params)}

    # -- the quarantine ----------------------------------------------------------------------------------

    def _quarantine_exists(self) -> bool:
        if not self._has_quarantine:
            # A read-only catalog of an older hive: the round runner may create the table meanwhile.
            with self._lock:
                row = self._conn.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'quarantine'"
                ).fetchone()
            self._has_quarantine = row is not None
        return self._has_quarantine

    def lookup(self, ids: Sequence[str]) -> dict[str, tuple[int, str, str]]:
        """``{id: (seq, agent_id, skill)}`` of the stored ids among ``ids``."""
        found: dict[str, tuple[int, str, str]] = {}
        with self._lock:
            for start in range(0, len(ids), IN_CHUNK):
                chunk = list(ids[start : start + IN_CHUNK])
                marks = ",".join("?" * len(chunk))
                sql = f"SELECT id, seq, agent_id, skill FROM learnings WHERE id IN ({marks})"
                for learning_id, seq, agent, skill in self._conn.execute(sql, chunk):
                    found[str(learning_id)] = (int(seq), str(agent), str(skill))
        return found

    def quarantine(self, entries: Sequence[Quarantined]) -> int:
        """Records the entries in one transaction; a learning already quarantined keeps its first entry.

        On a read-only catalog it writes through a connection of its own: the round runner (``hive round
        run``) holds the store read-only while ``hive serve`` appends, and the quarantine is the one table
        it writes. SQLite serialises the two writers (each waits up to 5 s for the other's lock).
        """
        rows = [
            (
                e.learning_id,
                e.seq,
                e.agent_id,
                e.skill,
                e.reason[:REASON_CHARS],
                e.detail[:DETAIL_CHARS],
                e.round_id,
            )
            for e in entries
        ]
        if not rows:
            return 0
        sql = (
            f"INSERT INTO quarantine({QUARANTINE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(learning_id) DO NOTHING"
        )
        if self.read_only:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
            try:
                conn.execute("PRAGMA synchronous=FULL")
                conn.executescript(QUARANTINE_SCHEMA)
                return _insert(conn, sql, rows)
            finally:
                conn.close()
        with self._lock:
            return _insert(self._conn, sql, rows)

    def quarantined(
        self, limit: int | None = None, after_seq: int = 0, upto_seq: int | None = None
    ) -> list[Quarantined]:
        if not self._quarantine_exists():
            return []
        sql = f"SELECT {QUARANTINE_COLUMNS}, recorded_at FROM quarantine WHERE seq > ?"
        params: list[object] = [int(after_seq)]
        if upto_seq is not None:
            sql += " AND seq <= ?"
            params.append(int(upto_seq))
        sql += " ORDER BY recorded_at DESC, seq DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        return [
            Quarantined(
                learning_id=r[0],
                seq=int(r[1]),
                agent_id=r[2],
                skill=r[3],
                reason=r[4],
                detail=r[5],
                round_id=r[6],
                recorded_at=r[7],
            )
            for r in rows
        ]

    def quarantine_counts(self) -> dict[str, int]:
        if not self._quarantine_exists():
            return {}
        sql = "SELECT reason, COUNT(*) FROM quarantine GROUP BY reason ORDER BY reason"
        with self._lock:
            return {str(r): int(n) for r, n in self._conn.execute(sql)}


def _insert(conn: sqlite3.Connection, sql: str, rows: Sequence[tuple[object, ...]]) -> int:
    cur = conn.cursor()
    cur.execute("BEGIN IMMEDIATE")
    try:
        before = conn.total_changes
        cur.executemany(sql, rows)
        added = conn.total_changes - before
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise
    return added
