"""The Parquet learning store: dedupe, seq order, offsets, durability across reopen, crash leftovers."""

from __future__ import annotations

import dataclasses
import hashlib
import sqlite3
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from hive.store.interface import PAYLOAD_HEAD_BYTES, DeadLetter, StoreError
from hive.store.parquet import CATALOG_FILE, SEGMENTS_DIR, ParquetLearningStore
from streams.events import Learning, TeacherSignal

from factories import make_learning


@pytest.fixture
def store(tmp_path: Path):
    with ParquetLearningStore(tmp_path / "store") as s:
        yield s


def test_empty_store(store: ParquetLearningStore) -> None:
    assert store.count() == 0
    assert store.unique_ids() == 0
    assert store.max_seq() == 0
    assert store.read() == []
    assert store.offsets() == {}
    assert store.per_agent_counts() == {}


def test_append_assigns_seq_and_reads_in_order(store: ParquetLearningStore) -> None:
    first = [make_learning("a1", n=i) for i in range(3)]
    second = [make_learning("a2", n=i) for i in range(2)]
    assert store.append(first, {("hive.learnings", 0): 3}) == 3
    assert store.append(second, {("hive.learnings", 1): 2}) == 2
    assert store.max_seq() == 5
    assert store.read() == first + second
    assert [s for s, _ in store.read_with_seq()] == [1, 2, 3, 4, 5]
    assert store.read(after_seq=2, upto_seq=4) == first[2:] + second[:1]
    assert store.read(limit=2) == first[:2]
    assert store.read(agent_id="a2") == second


def test_dedupe_against_store_and_within_batch(store: ParquetLearningStore) -> None:
    a, b = make_learning(n=1), make_learning(n=2)
    twin = a.model_copy(update={"prompt": "changed"})  # same id, so the first one wins
    assert store.append([a, twin, b], {}) == 2
    assert store.append([a, b], {}) == 0
    assert store.append([b, make_learning(n=3)], {}) == 1
    assert store.count() == store.unique_ids() == 3
    assert store.read()[0].prompt == "add 1"


def test_counts_by_agent_and_skill(store: ParquetLearningStore) -> None:
    batch = [make_learning("a1", "s1", 0), make_learning("a1", "s2", 1), make_learning("a2", "s1", 2)]
    store.append(batch, {})
    store.append([make_learning("a3", "s1", 3)], {})
    assert store.count(agent_id="a1") == 2
    assert store.count(skill="s1") == 3
    assert store.count(agent_id="a1", skill="s1") == 1
    assert store.per_agent_counts() == {"a1": 2, "a2": 1, "a3": 1}
    assert store.per_agent_counts(after_seq=1, upto_seq=3) == {"a1": 1, "a2": 1}


def test_offsets_merge_and_advance_even_without_new_learnings(store: ParquetLearningStore) -> None:
    a = make_learning()
    store.append([a], {("t", 0): 5, ("t", 1): 2})
    store.append([a], {("t", 0): 9})
    assert store.offsets() == {("t", 0): 9, ("t", 1): 2}


def test_everything_survives_reopen(tmp_path: Path) -> None:
    teacher = TeacherSignal(k=2, token_ids=[[1, 2]], logprobs=[[-0.1, -3.0]])
    items = [make_learning("a1", n=0, reward=0.5, correction="x0", teacher=teacher), make_learning("a2", n=1)]
    with ParquetLearningStore(tmp_path) as s:
        s.append(items, {("hive.learnings", 3): 17})
    with ParquetLearningStore(tmp_path) as s:
        assert s.read() == items
        assert s.read()[0].teacher == teacher
        assert s.offsets() == {("hive.learnings", 3): 17}
        assert s.append(items, {}) == 0
        assert s.append([make_learning(n=2)], {}) == 1
        assert s.max_seq() == 3


def test_segment_holds_columns_and_full_json(store: ParquetLearningStore) -> None:
    item = make_learning("a9", "s9", 4, core_version=1, reward=0.5, correction="x4")
    store.append([item], {})
    (segment,) = (store.directory / SEGMENTS_DIR).glob("*.parquet")
    row = pq.read_table(segment).to_pylist()[0]
    assert row["seq"] == 1
    assert row["id"] == str(item.id)
    assert (row["agent_id"], row["skill"], row["core_version"]) == ("a9", "s9", 1)
    assert row["created_at"] == item.created_at
    assert Learning.model_validate_json(row["json"]) == item


def test_orphan_segment_is_ignored_and_removed(tmp_path: Path) -> None:
    with ParquetLearningStore(tmp_path) as s:
        s.append([make_learning(n=0)], {("t", 0): 1})
        (committed,) = (tmp_path / SEGMENTS_DIR).glob("*.parquet")
    # A crash after the segment was written but before the catalog commit leaves a file like this.
    orphan = tmp_path / SEGMENTS_DIR / "seg-000000000002-000000000002.parquet"
    orphan.write_bytes(committed.read_bytes())
    half_written = tmp_path / SEGMENTS_DIR / "seg-000000000002-000000000003.parquet.tmp"
    half_written.write_bytes(b"PAR1 torn")
    with ParquetLearningStore(tmp_path) as s:
        assert not orphan.exists()
        assert not half_written.exists()
        assert s.count() == 1
        assert s.offsets() == {("t", 0): 1}
        assert s.append([make_learning(n=5)], {}) == 1
        assert s.max_seq() == 2


def test_missing_committed_segment_is_reported(tmp_path: Path) -> None:
    with ParquetLearningStore(tmp_path) as s:
        s.append([make_learning()], {})
    for segment in (tmp_path / SEGMENTS_DIR).glob("*.parquet"):
        segment.unlink()
    with pytest.raises(StoreError, match="missing on disk"):
        ParquetLearningStore(tmp_path)


def test_failed_catalog_commit_leaves_no_segment(store: ParquetLearningStore, monkeypatch) -> None:
    def boom(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(store._catalog, "commit", boom)
    with pytest.raises(OSError, match="disk full"):
        store.append([make_learning()], {})
    assert list((store.directory / SEGMENTS_DIR).iterdir()) == []
    assert (store.directory / CATALOG_FILE).exists()
    assert store.count() == 0


def letter(offset: int, reason: str = "schema", payload: bytes = b"{bad", partition: int = 0) -> DeadLetter:
    return DeadLetter(
        reason=reason,
        detail=f"detail {offset}",
        source_topic="hive.learnings",
        source_partition=partition,
        source_offset=offset,
        size=len(payload),
        payload_sha256=hashlib.sha256(payload).hexdigest(),
        payload_head=payload[:PAYLOAD_HEAD_BYTES],
        key="a1",
    )


def test_dead_letters_commit_with_the_batch_and_a_replay_adds_none(store: ParquetLearningStore) -> None:
    batch = [letter(0), letter(1, "oversize", b"x" * 5000), letter(2, "signature")]
    assert store.append([make_learning()], {("hive.learnings", 0): 3}, batch) == 1
    assert store.append([], {("hive.learnings", 0): 3}, batch) == 0  # the same batch, replayed
    assert store.dead_letter_counts() == {"oversize": 1, "schema": 1, "signature": 1}
    latest = store.dead_letters()
    assert [d.source_offset for d in latest] == [2, 1, 0]  # newest first
    assert latest[1].size == 5000 and len(latest[1].payload_head) == PAYLOAD_HEAD_BYTES
    assert latest[0].recorded_at is not None and latest[0].recorded_at.endswith("Z")
    assert [d.source_offset for d in store.dead_letters(limit=1)] == [2]
    assert [d.reason for d in store.dead_letters(reason="schema")] == ["schema"]
    # The broker restarted (in memory) and a different record arrived at a reused offset: it counts.
    store.append([], {("hive.learnings", 0): 1}, [letter(0, payload=b"other")])
    assert store.dead_letter_counts()["schema"] == 2


def test_dead_letters_roll_back_with_a_failed_append(store: ParquetLearningStore) -> None:
    broken = dataclasses.replace(letter(0), detail=None)  # NOT NULL: the catalog transaction fails
    with pytest.raises(sqlite3.IntegrityError):
        store.append([make_learning()], {("hive.learnings", 0): 1}, [letter(1), broken])
    assert store.count() == 0
    assert store.dead_letter_counts() == {}
    assert store.offsets() == {}
    assert list((store.directory / SEGMENTS_DIR).iterdir()) == []


def test_read_only_store_reads_while_the_writer_runs_and_touches_nothing(tmp_path: Path) -> None:
    with ParquetLearningStore(tmp_path / "store") as writer:
        items = [make_learning("a1", "reverse", i) for i in range(5)] + [make_learning("a2", "add", 9)]
        writer.append(items, {("t", 0): 6}, [letter(3)])
        # A segment written but not yet in the catalog: the writer's append in progress, for a reader.
        in_flight = tmp_path / "store" / SEGMENTS_DIR / "seg-in-flight.parquet"
        in_flight.write_bytes(b"PAR1")
        with ParquetLearningStore(tmp_path / "store", read_only=True) as reader:
            assert reader.count() == reader.unique_ids() == 6
            assert reader.unique_ids(agent_id="a2") == reader.count(skill="add") == 1
            assert [seq for seq, _ in reader.tail(2)] == [5, 6]
            assert [x.prompt for _, x in reader.tail(2, agent_id="a1")] == ["reverse 3", "reverse 4"]
            assert len(reader.tail(100)) == 6
            assert reader.tail(0) == []
            assert reader.dead_letter_counts() == {"schema": 1}
            with pytest.raises(StoreError, match="read-only"):
                reader.append([make_learning()], {})
        assert in_flight.exists()
    with pytest.raises(StoreError, match="no catalog"):
        ParquetLearningStore(tmp_path / "nowhere", read_only=True)
    assert not (tmp_path / "nowhere").exists()


def test_read_only_store_of_an_older_catalog_without_dead_letters(tmp_path: Path) -> None:
    with ParquetLearningStore(tmp_path / "store") as writer:
        writer.append([make_learning()], {})
    with sqlite3.connect(tmp_path / "store" / CATALOG_FILE) as conn:
        conn.execute("DROP TABLE dead_letters")
    with ParquetLearningStore(tmp_path / "store", read_only=True) as reader:
        assert reader.count() == 1
        assert reader.dead_letter_counts() == {}
        assert reader.dead_letters() == []


def test_the_index_names_every_unquarantined_learning_without_reading_one(store: ParquetLearningStore) -> None:
    from hive.store.interface import Indexed, Quarantined

    store.append([make_learning("a1", "add", i) for i in range(3)], {})
    store.append([make_learning("a2", "mul", i) for i in range(3)], {})
    ids = {seq: str(x.id) for seq, x in store.read_with_seq()}
    store.quarantine([Quarantined(ids[2], 2, "a1", "add", "unreadable", "test")])
    assert store.index() == [
        Indexed(1, "a1", "add"),
        Indexed(3, "a1", "add"),
        Indexed(4, "a2", "mul"),
        Indexed(5, "a2", "mul"),
        Indexed(6, "a2", "mul"),
    ]
    assert [e.seq for e in store.index(after_seq=3, upto_seq=5)] == [4, 5]
    for segment in store.segments_dir.iterdir():  # the index is the catalog's: no segment is opened
        segment.unlink()
    assert len(store.index()) == 5


def test_read_seqs_reads_exactly_those_rows_across_segments(store: ParquetLearningStore) -> None:
    store.append([make_learning("a1", "add", i) for i in range(4)], {})
    store.append([make_learning("a2", "mul", i) for i in range(4)], {})
    everything = dict(store.read_with_seq())
    good, bad = store.read_seqs([7, 2, 99, 2, 5])  # out of order, repeated, and one never stored
    assert [seq for seq, _ in good] == [2, 5, 7] and bad == []
    assert all(learning == everything[seq] for seq, learning in good)
    assert store.read_seqs([]) == ([], [])


def test_read_seqs_returns_an_unparseable_row_as_unreadable(store: ParquetLearningStore) -> None:
    import pyarrow as pa

    store.append([make_learning("a1", "add", i) for i in range(3)], {})
    [path] = list(store.segments_dir.iterdir())
    table = pq.read_table(path)
    texts = table.column("json").to_pylist()
    texts[1] = '{"id": "x"}'
    pq.write_table(table.set_column(table.schema.get_field_index("json"), "json", pa.array(texts, pa.string())), path)
    good, bad = store.read_seqs([1, 2, 3])
    assert [seq for seq, _ in good] == [1, 3]
    assert [(b.seq, b.reason) for b in bad] == [(2, "unreadable")]


def test_read_seqs_of_a_lost_segment_says_so(store: ParquetLearningStore) -> None:
    store.append([make_learning("a1", "add", i) for i in range(3)], {})
    for segment in store.segments_dir.iterdir():
        segment.unlink()
    with pytest.raises(StoreError, match="missing from"):
        store.read_seqs([2])
