"""The Parquet learning store: dedupe, seq order, offsets, durability across reopen, crash leftovers."""

from __future__ import annotations

import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from hive.parquet_store import CATALOG_FILE, SEGMENTS_DIR, ParquetLearningStore
from hive.store import StoreError
from streams.events import Feedback, Learning, TeacherSignal


def learning(agent: str = "a1", skill: str = "reverse", n: int = 0, **over: object) -> Learning:
    fields: dict = {
        "id": uuid.uuid4(),
        "agent_id": agent,
        "skill": skill,
        "core_version": 1,
        "prompt": f"p{n}",
        "completion": f"c{n}",
        "feedback": Feedback(reward=0.5, correction=f"x{n}"),
    }
    return Learning(**(fields | over))


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
    first = [learning("a1", n=i) for i in range(3)]
    second = [learning("a2", n=i) for i in range(2)]
    assert store.append(first, {("hive.learnings", 0): 3}) == 3
    assert store.append(second, {("hive.learnings", 1): 2}) == 2
    assert store.max_seq() == 5
    assert store.read() == first + second
    assert [s for s, _ in store.read_with_seq()] == [1, 2, 3, 4, 5]
    assert store.read(after_seq=2, upto_seq=4) == first[2:] + second[:1]
    assert store.read(limit=2) == first[:2]
    assert store.read(agent_id="a2") == second


def test_dedupe_against_store_and_within_batch(store: ParquetLearningStore) -> None:
    a, b = learning(n=1), learning(n=2)
    twin = a.model_copy(update={"prompt": "changed"})  # same id, so the first one wins
    assert store.append([a, twin, b], {}) == 2
    assert store.append([a, b], {}) == 0
    assert store.append([b, learning(n=3)], {}) == 1
    assert store.count() == store.unique_ids() == 3
    assert store.read()[0].prompt == "p1"


def test_counts_by_agent_and_skill(store: ParquetLearningStore) -> None:
    batch = [learning("a1", "s1", 0), learning("a1", "s2", 1), learning("a2", "s1", 2)]
    store.append(batch, {})
    store.append([learning("a3", "s1", 3)], {})
    assert store.count(agent_id="a1") == 2
    assert store.count(skill="s1") == 3
    assert store.count(agent_id="a1", skill="s1") == 1
    assert store.per_agent_counts() == {"a1": 2, "a2": 1, "a3": 1}
    assert store.per_agent_counts(after_seq=1, upto_seq=3) == {"a1": 1, "a2": 1}


def test_offsets_merge_and_advance_even_without_new_learnings(store: ParquetLearningStore) -> None:
    a = learning()
    store.append([a], {("t", 0): 5, ("t", 1): 2})
    store.append([a], {("t", 0): 9})
    assert store.offsets() == {("t", 0): 9, ("t", 1): 2}


def test_everything_survives_reopen(tmp_path: Path) -> None:
    teacher = TeacherSignal(k=2, token_ids=[[1, 2]], logprobs=[[-0.1, -3.0]])
    items = [learning("a1", n=0, teacher=teacher), learning("a2", n=1)]
    with ParquetLearningStore(tmp_path) as s:
        s.append(items, {("hive.learnings", 3): 17})
    with ParquetLearningStore(tmp_path) as s:
        assert s.read() == items
        assert s.read()[0].teacher == teacher
        assert s.offsets() == {("hive.learnings", 3): 17}
        assert s.append(items, {}) == 0
        assert s.append([learning(n=2)], {}) == 1
        assert s.max_seq() == 3


def test_segment_holds_columns_and_full_json(store: ParquetLearningStore) -> None:
    item = learning("a9", "s9", 4)
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
        s.append([learning(n=0)], {("t", 0): 1})
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
        assert s.append([learning(n=5)], {}) == 1
        assert s.max_seq() == 2


def test_missing_committed_segment_is_reported(tmp_path: Path) -> None:
    with ParquetLearningStore(tmp_path) as s:
        s.append([learning()], {})
    for segment in (tmp_path / SEGMENTS_DIR).glob("*.parquet"):
        segment.unlink()
    with pytest.raises(StoreError, match="missing on disk"):
        ParquetLearningStore(tmp_path)


def test_failed_catalog_commit_leaves_no_segment(store: ParquetLearningStore, monkeypatch) -> None:
    def boom(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(store._catalog, "commit", boom)
    with pytest.raises(OSError, match="disk full"):
        store.append([learning(id=uuid.uuid4())], {})
    assert list((store.directory / SEGMENTS_DIR).iterdir()) == []
    assert (store.directory / CATALOG_FILE).exists()
    assert store.count() == 0
