"""The quarantine: learnings no round can use are left out of every later round, never failing one for good."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import distill.launch
from distill.launch import DistillError
from distill.manifest import load_manifest, read_learnings
from hive.config import DistillSettings, HiveSettings, ScheduleSettings
from hive.cores.files import CoreFiles
from hive.rounds import runner as round_runner
from hive.rounds.book import NoNewLearnings, RoundBook, RoundFailed
from hive.rounds.lock import round_lock
from hive.rounds.open import open_round
from hive.rounds.quarantine import read_unusable
from hive.rounds.runner import RoundRunner
from hive.store.parquet import ParquetLearningStore

from factories import make_learning


@pytest.fixture
def hive(tmp_path: Path):
    settings = HiveSettings(home=tmp_path, distill=DistillSettings(replay_size=0))
    store = ParquetLearningStore(settings.store_dir)
    base = CoreFiles(0, tmp_path / "cores" / "v0", "0" * 64)
    yield settings, store, RoundBook(settings.rounds_dir), base
    store.close()


def test_an_unknown_skill_is_quarantined_and_the_round_opens_without_it(hive) -> None:
    settings, store, book, base = hive
    items = [make_learning(n=0), make_learning(n=1), make_learning("a2", "nope"), make_learning(n=2)]
    items.append(make_learning("a2", "nope", 1))
    store.append(items, {})
    record = open_round(settings, store, book, base, "hive-rounds")
    assert (record.learnings, record.quarantined, record.skills, record.per_agent) == (3, 2, ["add"], {"a1": 3})
    assert (record.after_seq, record.upto_seq) == (0, 5)
    manifest = load_manifest(book.path(record.id) / "manifest.json")
    assert [lr.skill for lr in read_learnings(manifest.learnings)] == ["add"] * 3
    # Seqs 1, 2, 4: not the whole range, so no per-line lineage; the hive keeps the range itself.
    assert manifest.lineage is None
    assert json.loads((book.path(record.id) / "manifest.json").read_text())["store_range"] == {
        "after_seq": 0,
        "upto_seq": 5,
    }
    held = store.quarantined()
    assert sorted((q.seq, q.reason, q.round_id) for q in held) == [
        (3, "unknown_skill", "r0001"),
        (5, "unknown_skill", "r0001"),
    ]
    assert "add its module:attr to HIVE_SKILLS" in held[0].detail
    assert store.quarantine_counts() == {"unknown_skill": 2}
    # The round fails for another reason: the next one takes the same range, without them.
    record.state = "failed"
    book.save(record)
    again = open_round(settings, store, book, base, "hive-rounds")
    assert (again.id, again.learnings, again.quarantined) == ("r0002", 3, 0)


def test_learnings_all_quarantined_mean_no_round_and_no_backlog(hive) -> None:
    settings, store, book, base = hive
    store.append([make_learning("a1", "nope"), make_learning("a1", "nope", 1)], {})
    runner = RoundRunner(settings.model_copy(update={"schedule": ScheduleSettings(min_new=1)}), store, None, None)  # type: ignore[arg-type]
    assert runner.backlog().new_learnings == 2
    with pytest.raises(NoNewLearnings, match="2 quarantined now"):
        open_round(settings, store, book, base, "hive-rounds")
    assert [q.round_id for q in store.quarantined()] == [None, None]  # no round was opened
    assert book.ids() == []
    # The scheduler no longer fires on them, so it does not open a round for them every check.
    backlog = runner.backlog()
    assert (backlog.new_learnings, backlog.per_agent, backlog.oldest_new_at) == (0, {}, None)
    assert runner.decide(None, backlog=backlog).reason == "no new learnings"


def _corrupt(store: ParquetLearningStore, seq: int) -> None:
    """Rewrites the stored JSON of learning ``seq`` as an older hive might have left it: no longer a Learning."""
    [path] = [p for p in store.segments_dir.iterdir() if int(p.stem.split("-")[1]) <= seq <= int(p.stem.split("-")[2])]
    table = pq.read_table(path)
    texts = table.column("json").to_pylist()
    texts[seq - int(path.stem.split("-")[1])] = '{"id": "x", "created_at": "yesterday"}'
    table = table.set_column(table.schema.get_field_index("json"), "json", pa.array(texts, pa.string()))
    pq.write_table(table, path)


def test_a_stored_learning_that_no_longer_parses_is_quarantined_as_unreadable(hive) -> None:
    settings, store, book, base = hive
    store.append([make_learning(n=i) for i in range(4)], {})
    _corrupt(store, 1)
    runner = RoundRunner(settings, store, None, None)  # type: ignore[arg-type]
    backlog = runner.backlog()  # the scheduler reads past it rather than raising
    assert backlog.new_learnings == 4 and backlog.oldest_new_at is not None
    record = open_round(settings, store, book, base, "hive-rounds")
    assert (record.learnings, record.quarantined) == (3, 1)
    [held] = store.quarantined()
    assert (held.seq, held.reason, held.agent_id, held.skill) == (1, "unreadable", "a1", "add")
    assert "no longer parses" in held.detail


def test_read_unusable_skips_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "unusable.jsonl"
    good = str(uuid.uuid4())
    lines = [
        json.dumps({"id": good, "reason": "adapter_too_large", "detail": "3 GB"}),
        "{not json",
        json.dumps(["a list"]),
        json.dumps({"id": good, "reason": "again"}),  # a repeat: the first entry wins
        json.dumps({"id": 5, "reason": "x"}),
        json.dumps({"id": str(uuid.uuid4())}),
        '{"id": "torn',
    ]
    path.write_text("\n".join(lines))
    assert read_unusable(path) == [(good, "adapter_too_large", "3 GB")]
    assert read_unusable(tmp_path / "absent.jsonl") == []


def test_what_the_distill_job_could_not_use_is_quarantined_and_the_next_round_runs_without_it(
    hive, monkeypatch: pytest.MonkeyPatch, fake_registry: object
) -> None:
    settings, store, book, base = hive
    items = [make_learning("a1", "add", i) for i in range(4)]
    store.append(items, {})
    bad, also_bad = items[1], items[2]

    def failing_job(manifest: Path, **kwargs: Any) -> dict[str, Any]:
        # The contract with the distill job, written by hand: one line per learning it could not use.
        out = Path(manifest).parent / "out"
        out.mkdir(parents=True, exist_ok=True)
        (out / "unusable.jsonl").write_text(
            json.dumps({"id": str(bad.id), "reason": "adapter_sha_mismatch", "detail": "sha256 differs"})
            + "\n{torn\n"
            + json.dumps({"id": str(uuid.uuid4()), "reason": "not_in_the_store"})
            + "\n"
            + json.dumps({"id": str(also_bad.id), "reason": "bad_teacher_signal"})
            + "\n"
            # A valid learning that taught nothing new: listed, but no fault of its own, so not quarantined.
            + json.dumps({"id": str(items[3].id), "reason": "no_signal"})
            + "\n"
        )
        raise DistillError("distill job exited with 1", "RuntimeError: shape mismatch")

    monkeypatch.setattr(distill.launch, "launch_job", failing_job)
    monkeypatch.setattr(round_runner, "champion_core", lambda settings, registry: base)
    runner = RoundRunner(settings, store, fake_registry, None)  # type: ignore[arg-type]
    with round_lock(settings.home) as lock, pytest.raises(RoundFailed):
        runner.open_and_run(lock, "manual")
    saved = book.get("r0001")
    assert saved is not None and (saved.state, saved.quarantined) == ("failed", 2)
    assert "shape mismatch" in (saved.error or "")
    held = {q.learning_id: q for q in store.quarantined()}
    assert set(held) == {str(bad.id), str(also_bad.id)}
    assert (held[str(bad.id)].reason, held[str(bad.id)].detail, held[str(bad.id)].round_id) == (
        "adapter_sha_mismatch",
        "sha256 differs",
        "r0001",
    )
    assert held[str(also_bad.id)].detail.endswith("unusable.jsonl")
    # A failed round that quarantined learnings is not the same try again: it does not count towards a block.
    assert book.failed_streak(0) == []
    following = open_round(settings, store, book, base, "hive-rounds")
    manifest = load_manifest(book.path(following.id) / "manifest.json")
    assert [lr.id for lr in read_learnings(manifest.learnings)] == [items[0].id, items[3].id]
    assert runner.backlog().new_learnings == 2


def _zorbish_prompt(split: str) -> str:
    import random

    from agents.skills import BUILTIN_SKILLS
    from agents.skills.splits import sample_task

    return sample_task(BUILTIN_SKILLS["zorbish"], random.Random(split), split)[0]  # type: ignore[arg-type]


def test_a_stored_learning_on_a_held_out_prompt_is_quarantined_not_distilled(hive) -> None:
    """A store from before ingest refused held-out prompts: the round leaves them out, so the gate's test
    prompts are never taught."""
    settings, store, book, base = hive
    held = make_learning("a1", "zorbish", prompt=_zorbish_prompt("test"))
    val = make_learning("a1", "zorbish", prompt=_zorbish_prompt("validation"))
    kept = make_learning("a1", "zorbish", prompt=_zorbish_prompt("train"))
    store.append([held, val, kept, make_learning(n=0)], {})
    record = open_round(settings, store, book, base, "hive-rounds")
    assert (record.learnings, record.quarantined) == (2, 2)
    manifest = load_manifest(book.path(record.id) / "manifest.json")
    assert sorted(str(lr.id) for lr in read_learnings(manifest.learnings)) == sorted(
        str(x.id) for x in (kept, store_first_add(store))
    )
    reasons = {q.learning_id: (q.reason, q.detail) for q in store.quarantined()}
    assert reasons[str(held.id)][0] == reasons[str(val.id)][0] == "held_out_prompt"
    assert "test split" in reasons[str(held.id)][1] and "validation split" in reasons[str(val.id)][1]


def store_first_add(store):
    rows, _ = store.read_checked(after_seq=0, upto_seq=store.max_seq())
    return next(learning for _, learning in rows if learning.skill == "add")


def test_quarantining_many_learnings_logs_one_line_per_agent_skill_and_reason(
    hive, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from hive.rounds.quarantine import quarantine
    from hive.store.interface import Quarantined

    _, store, _, _ = hive
    items = [make_learning("a5", "add", i) for i in range(50)] + [make_learning("a1", "add", 99)]
    store.append(items, {})
    stored = store.read_with_seq()
    entries = [
        Quarantined(str(x.id), seq, x.agent_id, x.skill, "disagrees_with_base" if x.agent_id == "a5" else "other", "d")
        for seq, x in stored
    ]
    with caplog.at_level(logging.WARNING, logger="hive.rounds.quarantine"):
        assert quarantine(store, entries, "r0002") == 51
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "quarantined 50 learning(s) of agent a5, skill add (seqs 1..50): disagrees_with_base: d",
        "quarantined 1 learning(s) of agent a1, skill add (seqs 51..51): other: d",
    ]
