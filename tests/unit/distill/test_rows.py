"""rows_per_skill counts exactly the rows that train_step draws, on every rank: the budget an arm really ran."""

from __future__ import annotations

import copy
import math
from collections import Counter

import pytest

from agents.model import CoreSize, build_core
from agents.tokenizer import ByteTokenizer
from distill import step as step_module
from distill.data import Data
from distill.dataset import BalancedSampler, Example, LoadReport
from distill.manifest import DistillParams
from distill.rows import rows_per_skill
from distill.step import train_step

from factories import FakeEngine


def _example(prompt: str, answer: str, agent: str, skill: str) -> Example:
    ids = [[t, (t + 1) % 256] for t in ByteTokenizer().answer_ids(answer)]
    return Example(prompt, answer, agent, skill, ids, [[math.log(0.8), math.log(0.1)] for _ in ids])


def _data() -> Data:
    # Three agents over two skills: a balanced-by-agent sampler gives the skills unequal shares.
    new = [
        _example("add 1 2", "3", "agent-a", "add"),
        _example("add 2 2", "4", "agent-b", "add"),
        _example("cap x", "y", "agent-c", "capital"),
    ]
    replay = [_example("morse a", ".-", "agent-d", "morse"), _example("cap z", "w", "agent-c", "capital")]
    return Data(
        new,
        LoadReport(kept=3),
        BalancedSampler([e.agent_id for e in new], seed=3),
        replay,
        BalancedSampler([e.skill for e in replay], seed=4),
        {},
        "",
    )


@pytest.mark.parametrize("ranks", [1, 2])
def test_the_rows_counted_are_the_rows_each_rank_trained_on(monkeypatch, ranks: int) -> None:
    data, steps, micro = _data(), 5, 4
    trained: Counter[tuple[str, str]] = Counter()
    real_collate = step_module.collate

    def recording_collate(examples, codec):
        for i, example in enumerate(examples):
            trained[(example.skill, "new" if i < micro else "replay")] += 1
        return real_collate(examples, codec)

    monkeypatch.setattr(step_module, "collate", recording_collate)
    core = build_core(CoreSize(width=32, layers=1), seed=0)
    for rank in range(ranks):
        on_rank = copy.copy(data)
        on_rank.sampler = copy.copy(data.sampler)
        on_rank.sampler.rank = rank
        on_rank.replay_sampler = copy.copy(data.replay_sampler)
        on_rank.replay_sampler.rank = rank
        for step in range(steps):
            train_step(FakeEngine(core), None, on_rank, DistillParams(), step, micro)

    counted = rows_per_skill(data, steps, micro, ranks)
    assert counted == {
        skill: {"new": trained[(skill, "new")], "replay": trained[(skill, "replay")]}
        for skill in ("add", "capital", "morse")
    }
    rows = steps * micro * ranks
    assert sum(c["new"] for c in counted.values()) == sum(c["replay"] for c in counted.values()) == rows
