"""Opening a round: its learnings, a per-skill balanced replay of earlier ones, and the lineage in the manifest."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from pathlib import Path

import pytest

from distill.dataset import read_learnings
from distill.manifest import load_manifest
from hive.config import DistillSettings, HiveSettings
from hive.cores import CoreFiles
from hive.parquet_store import ParquetLearningStore
from hive.rounds import RoundBook, open_round, sample_replay
from streams.events import Feedback, Learning


def _learning(skill: str, agent: str = "a1", n: int = 0) -> Learning:
    return Learning(
        id=uuid.uuid4(),
        agent_id=agent,
        skill=skill,
        core_version=0,
        prompt=f"{skill} {n}",
        completion="x",
        feedback=Feedback(reward=1.0),
    )


def test_replay_sample_is_balanced_per_skill_and_seeded() -> None:
    earlier = [_learning("add", n=i) for i in range(300)] + [_learning("capital", n=i) for i in range(40)]
    earlier += [_learning("mul", n=i) for i in range(100)]
    sample = sample_replay(earlier, 120, "0:r0002")
    # The skill with 40 learnings gives all it has; the others share the rest equally.
    assert Counter(lr.skill for lr in sample) == Counter({"add": 40, "capital": 40, "mul": 40})
    sample = sample_replay(earlier, 200, "0:r0002")
    assert Counter(lr.skill for lr in sample) == Counter({"add": 80, "capital": 40, "mul": 80})
    assert len({lr.id for lr in sample}) == 200
    assert [lr.id for lr in sample] == [lr.id for lr in sample_replay(earlier, 200, "0:r0002")]
    assert [lr.id for lr in sample] != [lr.id for lr in sample_replay(earlier, 200, "1:r0002")]
    # Store order is kept, and a budget larger than the history takes all of it.
    positions = [earlier.index(lr) for lr in sample]
    assert positions == sorted(positions)
    assert len(sample_replay(earlier, 10_000, "s")) == len(earlier)
    assert sample_replay(earlier, 0, "s") == []


@pytest.fixture
def hive(tmp_path: Path):
    settings = HiveSettings(home=tmp_path, distill=DistillSettings(replay_size=30, seed=5))
    store = ParquetLearningStore(settings.store_dir)
    base = CoreFiles(0, tmp_path / "cores" / "v0", "0" * 64)
    yield settings, store, RoundBook(settings.rounds_dir), base
    store.close()


def test_first_round_has_no_replay_and_names_its_seq_range(hive) -> None:
    settings, store, book, base = hive
    store.append([_learning("add", n=i) for i in range(7)], {})
    record = open_round(settings, store, book, base, "hive-rounds")
    manifest = load_manifest(book.path(record.id) / "manifest.json")
    assert manifest.replay is None
    assert manifest.lineage is not None
    assert (manifest.lineage.after_seq, manifest.lineage.upto_seq) == (0, 7)
    assert manifest.distill.retention_weight == 1.0
    assert manifest.distill.topk == 16
    assert not (book.path(record.id) / "replay.jsonl").exists()


def test_a_later_round_replays_earlier_learnings(hive) -> None:
    settings, store, book, base = hive
    store.append(
        [_learning("add", "a1", i) for i in range(50)] + [_learning("capital", "a2", i) for i in range(10)], {}
    )
    first = open_round(settings, store, book, base, "hive-rounds")
    first.state = "released"
    book.save(first)
    new = [_learning("mul", "a3", i) for i in range(5)]
    store.append(new, {})
    record = open_round(settings, store, book, base, "hive-rounds")
    manifest = load_manifest(book.path(record.id) / "manifest.json")
    assert (manifest.lineage.after_seq, manifest.lineage.upto_seq) == (60, 65)
    assert [lr.id for lr in read_learnings(manifest.learnings)] == [lr.id for lr in new]
    assert manifest.replay == (book.path(record.id) / "replay.jsonl").resolve()
    replay = read_learnings(manifest.replay)
    assert Counter(lr.skill for lr in replay) == Counter({"add": 20, "capital": 10})
    assert json.loads((book.path(record.id) / "manifest.json").read_text())["distill"]["replay_size"] == 30


def test_no_replay_when_its_size_is_zero(hive) -> None:
    settings, store, book, base = hive
    settings = settings.model_copy(update={"distill": DistillSettings(replay_size=0)})
    store.append([_learning("add", n=i) for i in range(3)], {})
    first = open_round(settings, store, book, base, "hive-rounds")
    first.state = "rejected"
    book.save(first)
    store.append([_learning("add", n=9)], {})
    record = open_round(settings, store, book, base, "hive-rounds")
    assert load_manifest(book.path(record.id) / "manifest.json").replay is None
