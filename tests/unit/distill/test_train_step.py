"""One training step of the distill job: replay rows teach by CE and KD, and carry the retention KL, aligned."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from agents.model import CoreSize, build_core
from agents.tokenizer import ByteTokenizer
from distill.data import Data
from distill.dataset import BalancedSampler, Example, LoadReport
from distill.manifest import DistillParams
from distill.step import train_step

from factories import FakeEngine


def _teacher(answer: str) -> tuple[list[list[int]], list[list[float]]]:
    ids = [[t, (t + 1) % 256] for t in ByteTokenizer().answer_ids(answer)]
    return ids, [[math.log(0.8), math.log(0.1)] for _ in ids]


def _data(replay: list[Example]) -> Data:
    # A long new example with a teacher only, so the replay rows sit on a wider, padded batch.
    new = [Example("cap somewhere far away", "belmarish", "agent-a", "capital", *_teacher("belmarish"))]
    sampler = BalancedSampler([e.agent_id for e in new])
    replay_sampler = BalancedSampler([e.skill for e in replay], seed=1) if replay else None
    return Data(new, LoadReport(kept=1), sampler, replay, replay_sampler, {}, "")


@pytest.fixture
def core():
    return build_core(CoreSize(width=32, layers=1), seed=0)


def test_without_replay_only_the_new_signal_teaches(core) -> None:
    parts, _ = train_step(FakeEngine(core), None, _data([]), DistillParams(), step=0, micro=2)
    assert parts["kd"] > 0
    assert parts["ce"] == 0.0 and parts["retention"] == 0.0


def test_replay_rows_get_cross_entropy_and_an_aligned_retention(core) -> None:
    replay = [
        Example("add 1 2", "3", "old-agent", "add", verified=True),
        Example("mul 2 3", "6", "old-agent", "mul", *_teacher("6"), verified=True),
    ]
    engine = FakeEngine(core)
    previous = copy.deepcopy(core)  # the student has not moved yet, so retention must be zero if rows line up
    parts, tokens = train_step(engine, previous, _data(replay), DistillParams(retention_weight=1.0), step=0, micro=2)
    assert parts["ce"] > 0  # only the replay rows are verified
    assert parts["kd"] > 0
    assert parts["retention"] == pytest.approx(0.0, abs=1e-6)
    assert engine.steps == 1
    assert tokens > 0
    assert all(p.grad is not None for p in core.parameters() if p.requires_grad)


def test_retention_grows_once_the_student_moves(core) -> None:
    replay = [Example("add 1 2", "3", "old-agent", "add", verified=True)]
    previous = copy.deepcopy(core)
    with torch.no_grad():
        for p in core.parameters():
            p.add_(0.05 * torch.randn_like(p))
    parts, _ = train_step(
        FakeEngine(core), previous, _data(replay), DistillParams(retention_weight=1.0), step=0, micro=2
    )
    assert parts["retention"] > 1e-4
