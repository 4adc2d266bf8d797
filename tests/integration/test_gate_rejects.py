"""A round that makes the core forget a taught skill is rejected: real DeepSpeed ranks, MLflow on SQLite, the gate."""

from __future__ import annotations

import random
from pathlib import Path

import torch

from agents.codec import BYTE_CODEC
from agents.model import build_core, lm_loss, make_batch, save_core
from agents.skills import BUILTIN_SKILLS
from hive.config import DistillSettings, GateSettings, HiveSettings
from hive.cores.files import core_dir, existing_core
from hive.cores.registry import CHAMPION, CoreRegistry
from hive.rounds.book import RoundBook, RoundRecord
from hive.rounds.open import open_round
from hive.rounds.run import run_round
from hive.store.parquet import ParquetLearningStore
from streams.events import Learning

from factories import make_learning

CHAMPION_STEPS = 150
N_ADD = 100


def _capital_core(steps: int = CHAMPION_STEPS):
    """Core v1: a fresh core taught the 40-entry capital table in-process (accuracy ~1.0 at 150 steps)."""
    model = build_core(seed=0)
    model.train()
    threads = torch.get_num_threads()
    # One thread: the machine's few cores are shared, and a tiny core gains nothing from more.
    torch.set_num_threads(1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    capital, rng = BUILTIN_SKILLS["capital"], random.Random(0)
    for _ in range(steps):
        prompts, answers = zip(*(capital.sample(rng) for _ in range(64)), strict=True)
        loss = lm_loss(model, make_batch(list(prompts), list(answers), BYTE_CODEC))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    torch.set_num_threads(threads)
    model.eval()
    return model


def _add_learnings(n: int) -> list[Learning]:
    rng, add = random.Random(1), BUILTIN_SKILLS["add"]
    items = []
    for _ in range(n):
        prompt, answer = add.sample(rng)
        items.append(
            make_learning("agent-add", prompt=prompt, completion="0", reward=0.0, correction=answer, core_version=1)
        )
    return items


def test_a_round_that_forgets_capital_is_rejected_and_v1_stays_champion(tmp_path: Path) -> None:
    settings = HiveSettings(
        home=tmp_path / "hive",
        # No replay and no retention, and a learning rate ten times the default: built to forget capital.
        distill=DistillSettings(
            nproc=2,
            steps=30,
            batch_size=32,
            lr=3e-2,
            warmup_steps=1,
            retention_weight=0.0,
            replay_size=0,
            timeout_s=300,
        ),
        gate=GateSettings(eval_tasks=40, max_regression=0.02),
    )
    v1 = core_dir(settings, 1)
    sha = save_core(_capital_core(), v1)
    registry = CoreRegistry.from_settings(settings)
    registry.log_core(v1, 1, sha)
    registry.set_alias(CHAMPION, 1)
    book = RoundBook(settings.rounds_dir)
    # The round that taught v1 capital; the gate must keep checking it from now on.
    book.save(
        RoundRecord(
            id="r0001",
            state="released",
            base_version=0,
            after_seq=0,
            upto_seq=0,
            learnings=0,
            per_agent={},
            skills=["capital"],
            candidate_version=1,
        )
    )
    with ParquetLearningStore(settings.store_dir) as store:
        assert store.append(_add_learnings(N_ADD), {}) == N_ADD
        registry.experiment_id()  # the round's run keeps its artifacts under the hive home
        record = open_round(settings, store, book, existing_core(settings, 1), registry.experiment)
    assert record.id == "r0002"
    assert record.skills == ["add", "capital"]
    assert (record.after_seq, record.upto_seq, record.learnings) == (0, N_ADD, N_ADD)

    record = run_round(settings, book, registry, record)

    assert record.state == "rejected", record.gate_reasons
    assert record.distill["steps"] == 30
    assert record.champion_eval["capital"] >= 0.5, "v1 never learned capital; the test proves nothing"
    assert record.eval["capital"] < record.champion_eval["capital"] - settings.gate.max_regression
    assert [reason.split(":")[0] for reason in record.gate_reasons] == ["capital"]
    assert registry.champion_version() == 1
    assert record.candidate_version is None
    assert not core_dir(settings, 2).exists()
    assert [row["core_version"] for row in registry.list_versions()] == [1]
    # The book on disk says the same, so a restarted hive does not retry or release it.
    saved = {r.id: r for r in book.all()}["r0002"]
    assert saved.state == "rejected" and saved.gate_reasons == record.gate_reasons
    assert book.covered_seq() == N_ADD
