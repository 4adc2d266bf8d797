"""The embedded learning store: one Parquet segment per append, catalogued in SQLite."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from hive.store.interface import DeadLetter, Indexed, LearningStore, Quarantined, StoreError, TopicPartitionKey
from hive.store.sqlite_catalog import IdRow, SqliteCatalog
from streams.codec import encode
from streams.events import STORED, Learning

log = logging.getLogger(__name__)

CATALOG_FILE = "catalog.sqlite"
SEGMENTS_DIR = "segments"
SEGMENT_SUFFIX = ".parquet"
TMP_SUFFIX = ".tmp"
# Compaction merges small segments (one per poll batch) into segments of up to this many rows.
COMPACT_TARGET_ROWS = 50_000
RETIRE_GRACE_S = 60.0
# The columns a read returns: the json is the learning, the rest say where it belongs.
ROW_COLUMNS = ("seq", "id", "agent_id", "skill", "json")

SEGMENT_SCHEMA = pa.schema(
    [
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("id", pa.string(), nullable=False),
        pa.field("agent_id", pa.string(), nullable=False),
        pa.field("skill", pa.string(), nullable=False),
        pa.field("core_version", pa.int64(), nullable=False),
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("reward", pa.float64()),
        pa.field("has_correction", pa.bool_(), nullable=False),
        pa.field("has_teacher", pa.bool_(), nullable=False),
        # The full event, so that nothing the agent sent is lost to the columns above.
        pa.field("json", pa.string(), nullable=False),
    ]
)


def _fsync_dir(path: Path) -> None:
    # A rename is durable only once the directory entry is; POSIX needs an fsync of the directory.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ParquetLearningStore(LearningStore):
    """Learnings in ``directory/segments/*.parquet``, the catalog in ``directory/catalog.sqlite``.

    The catalog is the truth: a segment file becomes part of the store only when the catalog
    transaction that names it commits. A segment left behind by a crash before that commit is
    deleted when the store is opened for writing.

    ``read_only=True`` opens an existing store for reading only (the CLI, tests): it creates,
    repairs and deletes nothing, because the segment not yet in the catalog may be the writer's
    append in progress.
    """

    def __init__(self, directory: str | Path, read_only: bool = False) -> None:
        self.directory = Path(directory)
        self.segments_dir = self.directory / SEGMENTS_DIR
        self.read_only = read_only
        self._write_lock = threading.Lock()
        # (when, names) of segments compaction retired: deleted RETIRE_GRACE_S later.
        self._retired: list[tuple[float, list[str]]] = []
        if read_only:
            self._catalog = SqliteCatalog(self.directory / CATALOG_FILE, read_only=True)
            return
        self.segments_dir.mkdir(parents=True, exist_ok=True)
        self._catalog = SqliteCatalog(self.directory / CATALOG_FILE)
        self._recover()
        # pyarrow imports pandas on its first array, about half a second: paid here, when the writer opens, not
        # inside ingest's first batch (whose learnings would wait for it).
        pa.array([0])

    def _recover(self) -> None:
        known = self._catalog.segment_names()
        on_disk = {p.name for p in self.segments_dir.iterdir() if p.is_file()}
        for name in sorted(on_disk - known):
            # Written but never committed (a crash between the file and the catalog): not part of the store.
            log.warning("removing segment %s: it is not in the catalog (an append that did not commit)", name)
            (self.segments_dir / name).unlink()
        missing = known - on_disk
        if missing:
            raise StoreError(
                f"the catalog in {self.directory} names {len(missing)} segment(s) that are missing on disk, "
                f"e.g. {sorted(missing)[:3]}; restore them from a backup or move the store aside"
            )

    def append(
        self,
        learnings: list[Learning],
        offsets: dict[TopicPartitionKey, int],
        dead_letters: Sequence[DeadLetter] = (),
    ) -> int:
        if self.read_only:
            raise StoreError(f"the store in {self.directory} was opened read-only")
        with self._write_lock:
            batch: dict[str, Learning] = {}
            for learning in learnings:
                batch.setdefault(str(learning.id), learning)  # the first of a repeated id wins
            known = self._catalog.known_ids(list(batch))
            new = [learning for key, learning in batch.items() if key not in known]
            if not new:
                if offsets or dead_letters:
                    self._catalog.commit(None, [], offsets, dead_letters)
                return 0
            first = self._catalog.max_seq() + 1
            seqs = list(range(first, first + len(new)))
            name = f"seg-{seqs[0]:012d}-{seqs[-1]:012d}{SEGMENT_SUFFIX}"
            path = self.segments_dir / name
            self._write_segment(path, seqs, new)
            rows: list[IdRow] = [(str(x.id), s, x.agent_id, x.skill) for s, x in zip(seqs, new, strict=True)]
            try:
                self._catalog.commit(name, rows, offsets, dead_letters)
            except BaseException:
                # Not committed, so not part of the store; remove it now rather than at the next open.
                path.unlink(missing_ok=True)
                raise
            return len(new)

    def compact(self, target_rows: int = COMPACT_TARGET_ROWS) -> int:
        """Merges each run of consecutive small segments (together at most ``target_rows`` rows) into one segment;
        returns how many segments it retired. Safe to call while ingest appends, and to kill at any moment.

        The merged file is written (temp file, fsync, rename) before the catalog names it, and the catalog switches
        a run's learnings to it in one transaction that checks the row count: killed before that commit, the new
        file is not in the catalog and the next open deletes it; after it, the old files are no longer in the
        catalog, and the next open deletes them. A running process keeps old files ``RETIRE_GRACE_S`` longer, for
        readers in other processes that located rows in them just before the switch.
        """
        if self.read_only:
            raise StoreError(f"the store in {self.directory} was opened read-only")
        self._delete_retired(time.monotonic())
        retired = 0
        for run in plan_compaction(self._catalog.segments(), target_rows):
            names = [name for name, _, _, _ in run]
            table = pa.concat_tables([pq.read_table(self.segments_dir / name, schema=SEGMENT_SCHEMA) for name in names])
            table = table.sort_by("seq")
            first, last, rows = run[0][1], run[-1][2], sum(r[3] for r in run)
            if table.num_rows != rows:
                raise StoreError(f"segments {names[0]}..{names[-1]} hold {table.num_rows} rows, the catalog {rows}")
            name = f"seg-{first:012d}-{last:012d}{SEGMENT_SUFFIX}"
            path = self.segments_dir / name
            self._write_table(path, table)
            try:
                with self._write_lock:
                    self._catalog.replace_segments(names, name, first, last, rows)
            except BaseException:
                path.unlink(missing_ok=True)
                raise
            self._retired.append((time.monotonic(), names))
            retired += len(names)
        return retired

    def _delete_retired(self, now: float) -> None:
        keep = []
        for when, names in self._retired:
            if now - when < RETIRE_GRACE_S:
                keep.append((when, names))
                continue
            for name in names:
                (self.segments_dir / name).unlink(missing_ok=True)
        self._retired = keep

    def _write_segment(self, path: Path, seqs: list[int], learnings: list[Learning]) -> None:
        table = pa.table(
            {
                "seq": seqs,
                "id": [str(x.id) for x in learnings],
                "agent_id": [x.agent_id for x in learnings],
                "skill": [x.skill for x in learnings],
                "core_version": [x.core_version for x in learnings],
                "created_at": [x.created_at for x in learnings],
                "reward": [x.feedback.reward for x in learnings],
                "has_correction": [x.feedback.correction is not None for x in learnings],
                "has_teacher": [x.teacher is not None for x in learnings],
                "json": [encode(x).decode("utf-8") for x in learnings],
            },
            schema=SEGMENT_SCHEMA,
        )
        self._write_table(path, table)

    def _write_table(self, path: Path, table: pa.Table) -> None:
        tmp = path.with_name(path.name + TMP_SUFFIX)
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(self.segments_dir)

    def _read_located(self, located: list[tuple[int, str]]) -> list[tuple[int, str, str, str, str]]:
        """(seq, id, agent_id, skill, json) of the located rows, in the given order, reading only those rows."""
        wanted: dict[str, list[int]] = defaultdict(list)
        for seq, segment in located:
            wanted[segment].append(seq)
        found: dict[int, tuple[int, str, str, str, str]] = {}
        for segment, seqs in wanted.items():
            path = self.segments_dir / segment
            try:
                # Filtered on read: only the wanted rows are decoded, whatever the segment's size.
                table = pq.read_table(path, columns=list(ROW_COLUMNS), filters=[("seq", "in", seqs)])
            except FileNotFoundError as exc:
                raise StoreError(f"segment {segment} is in the catalog but missing from {self.segments_dir}") from exc
            columns = [table.column(name).to_pylist() for name in ROW_COLUMNS]
            for row in zip(*columns, strict=True):
                found[row[0]] = row
        return [found[seq] for seq, _ in located]

    def _rows(
        self,
        after_seq: int,
        upto_seq: int | None,
        agent_id: str | None,
        skill: str | None,
        limit: int | None,
        skip_quarantined: bool,
    ) -> list[tuple[int, str, str, str, str]]:
        """(seq, id, agent_id, skill, json) of the matching rows, ordered by seq, unparsed."""
        located = self._catalog.locate(after_seq, upto_seq, agent_id, skill, limit, skip_quarantined)
        return self._read_located(located)

    def read_with_seq(
        self,
        after_seq: int = 0,
        upto_seq: int | None = None,
        agent_id: str | None = None,
        skill: str | None = None,
        limit: int | None = None,
        skip_quarantined: bool = False,
    ) -> list[tuple[int, Learning]]:
        learnings = []
        for seq, _, _, _, text in self._rows(after_seq, upto_seq, agent_id, skill, limit, skip_quarantined):
            try:
                # STORED: a zone-less time that an older hive accepted is read as UTC, not refused.
                learnings.append((seq, Learning.model_validate_json(text, context=STORED)))
            except ValidationError as err:
                raise StoreError(
                    f"stored learning seq {seq} no longer parses as a Learning ({err.error_count()} errors, first: "
                    f"{err.errors()[0]['msg']}); a round quarantines it as unreadable"
                ) from err
        return learnings

    def read_checked(
        self, after_seq: int = 0, upto_seq: int | None = None, limit: int | None = None
    ) -> tuple[list[tuple[int, Learning]], list[Quarantined]]:
        return _checked(self._rows(after_seq, upto_seq, None, None, limit, True))

    def index(self, after_seq: int = 0, upto_seq: int | None = None) -> list[Indexed]:
        return self._catalog.index(after_seq, upto_seq)

    def read_seqs(self, seqs: Sequence[int]) -> tuple[list[tuple[int, Learning]], list[Quarantined]]:
        return _checked(self._read_located(self._catalog.segments_of(seqs)))

    def quarantine(self, entries: Sequence[Quarantined]) -> int:
        return self._catalog.quarantine(entries)

    def quarantined(
        self, limit: int | None = None, after_seq: int = 0, upto_seq: int | None = None
    ) -> list[Quarantined]:
        return self._catalog.quarantined(limit, after_seq, upto_seq)

    def quarantine_counts(self) -> dict[str, int]:
        return self._catalog.quarantine_counts()

    def lookup(self, ids: Sequence[str]) -> dict[str, tuple[int, str, str]]:
        return self._catalog.lookup(ids)

    def count(self, agent_id: str | None = None, skill: str | None = None) -> int:
        return self._catalog.count(agent_id, skill)

    def unique_ids(self, agent_id: str | None = None, skill: str | None = None) -> int:
        return self._catalog.unique_ids(agent_id, skill)

    def tail(self, n: int, agent_id: str | None = None, skill: str | None = None) -> list[tuple[int, Learning]]:
        if n <= 0:
            return []
        nth = self._catalog.nth_newest_seq(n, agent_id, skill)
        after = 0 if nth is None else nth - 1
        return self.read_with_seq(after_seq=after, agent_id=agent_id, skill=skill, limit=n)

    def dead_letter_counts(self) -> dict[str, int]:
        return self._catalog.dead_letter_counts()

    def dead_letters(self, limit: int | None = None, reason: str | None = None) -> list[DeadLetter]:
        return self._catalog.dead_letters(limit, reason)

    def max_seq(self) -> int:
        return self._catalog.max_seq()

    def offsets(self) -> dict[TopicPartitionKey, int]:
        return self._catalog.offsets()

    def per_agent_counts(
        self, after_seq: int = 0, upto_seq: int | None = None, skip_quarantined: bool = False
    ) -> dict[str, int]:
        return self._catalog.per_agent_counts(after_seq, upto_seq, skip_quarantined)

    def close(self) -> None:
        self._catalog.close()


def _checked(rows: list[tuple[int, str, str, str, str]]) -> tuple[list[tuple[int, Learning]], list[Quarantined]]:
    """Parses stored rows; one that no longer parses as a Learning becomes an ``unreadable`` quarantine entry."""
    good: list[tuple[int, Learning]] = []
    bad: list[Quarantined] = []
    for seq, learning_id, agent, skill, text in rows:
        try:
            # STORED: a zone-less time that an older hive accepted is read as UTC, not refused.
            good.append((seq, Learning.model_validate_json(text, context=STORED)))
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(map(str, first["loc"])) or "the event"
            detail = f"its stored JSON no longer parses as a Learning: {where}: {first['msg']}"
            bad.append(Quarantined(learning_id, seq, agent, skill, "unreadable", detail))
    return good, bad


def plan_compaction(
    segments: list[tuple[str, int, int, int]], target_rows: int
) -> list[list[tuple[str, int, int, int]]]:
    """Runs of two or more consecutive segments (by seq) whose rows add up to at most ``target_rows``."""
    runs: list[list[tuple[str, int, int, int]]] = []
    current: list[tuple[str, int, int, int]] = []
    for segment in segments:
        if current and sum(s[3] for s in current) + segment[3] <= target_rows:
            current.append(segment)
            continue
        if len(current) >= 2:
            runs.append(current)
        current = [segment] if segment[3] < target_rows else []
    if len(current) >= 2:
        runs.append(current)
    return runs


class NoStoreError(StoreError):
    """There is no learning store in the directory yet: ``hive serve`` creates it."""


# What a read of a store opened by open_read_only may raise: the store's errors, the catalog's, a segment file's.
READ_ERRORS = (StoreError, sqlite3.Error, OSError)


def open_read_only(directory: Path) -> ParquetLearningStore:
    """The learning store in ``directory`` opened read-only: a running ``hive serve`` may be appending to it.

    Raises NoStoreError when there is none, and StoreError, saying why, when it cannot be opened.
    """
    if not (directory / CATALOG_FILE).is_file():
        raise NoStoreError(f"no learning store at {directory}")
    try:
        return ParquetLearningStore(directory, read_only=True)
    except (StoreError, sqlite3.Error) as err:
        raise StoreError(f"cannot read the learning store at {directory}: {err}") from err
