"""Opening a round: its learnings, a per-skill balanced replay of earlier ones, and the lineage in the manifest."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from distill.manifest import Lineage, Manifest, load_manifest, read_learnings
from hive.config import DistillSettings, HiveSettings
from hive.cores.files import CoreFiles
from hive.rounds.book import RoundBook, RoundRecord
from hive.rounds.gate_seed import round_eval_seed
from hive.rounds.open import open_round, sample_replay
from hive.store.parquet import ParquetLearningStore

from factories import make_learning


def test_replay_sample_is_balanced_per_skill_and_seeded() -> None:
    earlier = [make_learning(n=i) for i in range(300)] + [make_learning("a1", "capital", i) for i in range(40)]
    earlier += [make_learning("a1", "mul", i) for i in range(100)]
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
    store.append([make_learning(n=i) for i in range(7)], {})
    record = open_round(settings, store, book, base, "hive-rounds")
    manifest = load_manifest(book.path(record.id) / "manifest.json")
    assert manifest.replay is None
    assert manifest.lineage is not None
    assert (manifest.lineage.after_seq, manifest.lineage.upto_seq) == (0, 7)
    assert manifest.distill.retention_weight == 1.0
    assert manifest.distill.topk == 16
    assert not (book.path(record.id) / "replay.jsonl").exists()


def test_the_manifest_is_the_typed_one_the_job_reads(hive) -> None:
    settings, store, book, base = hive
    store.append([make_learning(n=i) for i in range(3)], {})
    record = open_round(settings, store, book, base, "hive-rounds")
    text = (book.path(record.id) / "manifest.json").read_text()
    manifest = Manifest.model_validate_json(text)
    # Written as the model dumps itself: no field the job does not know, none it knows missing.
    assert json.loads(text) == json.loads(manifest.model_dump_json())
    assert manifest.store_range == Lineage(after_seq=0, upto_seq=3)
    assert (manifest.eval.tasks, manifest.eval.seed) == (settings.gate.eval_tasks, round_eval_seed(settings, record.id))
    assert manifest.mlflow is not None and (manifest.mlflow.experiment, manifest.mlflow.run_name) == (
        "hive-rounds",
        record.id,
    )


def test_a_later_round_replays_earlier_learnings(hive) -> None:
    settings, store, book, base = hive
    # One agent per skill here, 50 against 10: the share cap (tests/unit/hive/rounds/test_agent_share.py) is off.
    settings = settings.model_copy(update={"distill": DistillSettings(replay_size=30, seed=5, max_agent_share=1.0)})
    store.append(
        [make_learning("a1", "add", i) for i in range(50)] + [make_learning("a2", "capital", i) for i in range(10)], {}
    )
    first = open_round(settings, store, book, base, "hive-rounds")
    first.state = "released"
    book.save(first)
    new = [make_learning("a3", "mul", i) for i in range(5)]
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
    store.append([make_learning(n=i) for i in range(3)], {})
    first = open_round(settings, store, book, base, "hive-rounds")
    first.state = "rejected"
    book.save(first)
    store.append([make_learning(n=9)], {})
    record = open_round(settings, store, book, base, "hive-rounds")
    assert load_manifest(book.path(record.id) / "manifest.json").replay is None


def _record(round_id: str, state: str = "released", after_seq: int = 0, upto_seq: int = 4) -> RoundRecord:
    return RoundRecord(
        id=round_id,
        state=state,  # type: ignore[arg-type]
        base_version=0,
        after_seq=after_seq,
        upto_seq=upto_seq,
        learnings=upto_seq - after_seq,
        per_agent={"a1": upto_seq - after_seq},
        skills=["add"],
    )


@pytest.mark.parametrize("content", [b'{"id": "r0002", "sta', b'{"state": 5}', b"[]", b"{}", b"\xff\xfe", b""])
def test_an_unreadable_round_file_reads_as_a_failed_round_and_is_repaired_aside(tmp_path: Path, content: bytes) -> None:
    book = RoundBook(tmp_path / "rounds")
    book.save(_record("r0001"))
    book.save(_record("r0002", "distilling", after_seq=4, upto_seq=9))
    (book.path("r0002") / "manifest.json").write_text(
        json.dumps({"lineage": None, "store_range": {"after_seq": 4, "upto_seq": 9}})
    )
    (book.path("r0002") / "round.json").write_bytes(content)
    # No reader raises: the round is failed, with why, and its range from the manifest.
    [_, torn] = book.all()
    assert (torn.id, torn.state, torn.after_seq, torn.upto_seq) == ("r0002", "failed", 4, 9)
    assert torn.error is not None and torn.error.startswith("unreadable round.json: ")
    assert book.get("r0002") == torn
    assert (book.covered_seq(), book.taught_skills(), book.ids(), book.next_id()) == (
        4,
        ["add"],
        ["r0001", "r0002"],
        "r0003",
    )
    assert (book.path("r0002") / "round.json").read_bytes() == content  # reading changes nothing
    # The round runner records it as failed for good, keeping the bad bytes aside.
    [repaired] = book.repair()
    assert repaired.id == "r0002" and repaired.ended_at is not None
    assert (book.path("r0002") / "round.json.torn").read_bytes() == content
    saved = json.loads((book.path("r0002") / "round.json").read_text())
    assert (saved["state"], saved["error"]) == ("failed", torn.error)
    assert book.repair() == []
    assert book.get("r0002") == repaired


def test_a_round_id_is_never_given_twice(tmp_path: Path) -> None:
    book = RoundBook(tmp_path / "rounds")
    book.save(_record("r0001"))
    book.save(_record("r0002", "failed"))
    (book.path("r0002") / "round.json").unlink()  # lost, with its directory still there
    (book.path("r0003")).mkdir()  # a crash before any file of r0003 was written
    assert book.next_id() == "r0004"
    assert [r.state for r in book.all()] == ["released", "failed", "failed"]
    assert book.get("r0003").error.startswith("unreadable round.json: the file is missing")  # type: ignore[union-attr]
    assert book.get("../rounds/r0001") is None


def test_a_streak_of_failed_rounds_over_the_same_learnings(tmp_path: Path) -> None:
    book = RoundBook(tmp_path / "rounds")
    book.save(_record("r0001", "released", 0, 4))
    book.save(_record("r0002", "failed", 4, 8))
    book.save(_record("r0003", "cancelled", 4, 9))
    book.save(_record("r0004", "failed", 4, 9))
    assert [r.id for r in book.failed_streak(4)] == ["r0004", "r0002"]
    book.save(_record("r0005", "skipped", 4, 9))
    assert book.covered_seq() == 9 and book.failed_streak(9) == []
    assert book.failed_streak(4) == []  # a skip ends the streak


def test_a_rejected_rounds_learnings_are_never_replayed(hive) -> None:
    settings, store, book, base = hive
    kept = [make_learning("a1", "add", i) for i in range(6)]
    store.append(kept, {})
    first = open_round(settings, store, book, base, "hive-rounds")
    first.state = "released"
    book.save(first)
    refused = [make_learning("a2", "add", 100 + i) for i in range(6)]
    store.append(refused, {})
    second = open_round(settings, store, book, base, "hive-rounds")
    second.state = "rejected"  # the gate refused what these taught
    book.save(second)
    store.append([make_learning("a1", "add", 200)], {})
    third = open_round(settings, store, book, base, "hive-rounds")
    replay = read_learnings(book.path(third.id) / "replay.jsonl")
    assert {lr.id for lr in replay} == {lr.id for lr in kept}


def test_replay_reads_only_the_learnings_it_samples(hive, monkeypatch: pytest.MonkeyPatch) -> None:
    settings, store, book, base = hive
    settings = settings.model_copy(update={"distill": DistillSettings(replay_size=12, seed=5)})
    store.append(
        [make_learning("a1", "add", i) for i in range(200)] + [make_learning("a2", "mul", i) for i in range(100)], {}
    )
    first = open_round(settings, store, book, base, "hive-rounds")
    first.state = "released"
    book.save(first)
    store.append([make_learning("a3", "capital", i) for i in range(5)], {})
    read: list[int] = []
    original = ParquetLearningStore._read_located

    def counting(self, located):
        read.extend(seq for seq, _ in located)
        return original(self, located)

    monkeypatch.setattr(ParquetLearningStore, "_read_located", counting)
    record = open_round(settings, store, book, base, "hive-rounds")
    replay = read_learnings(book.path(record.id) / "replay.jsonl")
    assert Counter(lr.skill for lr in replay) == Counter({"add": 6, "mul": 6})
    # The round's own 5 learnings and the 12 sampled ones: none of the other 288 earlier learnings was read.
    assert sorted(seq for seq in read if seq > 300) == [301, 302, 303, 304, 305]
    assert sorted(seq for seq in read if seq <= 300) == sorted({lr_seq for lr_seq in read if lr_seq <= 300})
    assert len([seq for seq in read if seq <= 300]) == 12
