"""hive bench poisoner's traffic: the poisoner's learnings pass the door like an honest agent's, and are wrong."""

from __future__ import annotations

import random

import pytest

from agents.codec import BYTE_CODEC
from agents.skills import BUILTIN_SKILLS
from distill.dataset import example_from_learning
from hive.bench.poisoner import HONEST, POISONER, PoisonerPlan, honest_learnings, poisoned_learnings
from hive.bench.synthetic import agent_key
from hive.ingest.admit import admit
from hive.ingest.auth import SenderPolicy
from streams.codec import encode
from streams.signing import KeyRing

AGENTS = [agent for agent, _ in HONEST] + [POISONER[0]]
POLICY = SenderPolicy(KeyRing({agent: (agent_key(agent),) for agent in AGENTS}))
SKILLS = {name: BUILTIN_SKILLS[name] for name in {skill for _, skill in HONEST}}
TRUTH = dict(BUILTIN_SKILLS["capital"].table)  # type: ignore[attr-defined]


def _admitted(learnings) -> None:
    for learning in learnings:
        decoded, rejection = admit(encode(learning), 1 << 20, POLICY, SKILLS)
        assert rejection is None and decoded == learning


def test_the_poisoners_learnings_pass_the_door_and_are_confidently_wrong() -> None:
    learnings = poisoned_learnings(*POISONER, 50, random.Random(0))
    _admitted(learnings)
    for learning in learnings:
        example, reason = example_from_learning(learning, BYTE_CODEC)
        assert reason is None and example is not None
        assert example.verified  # claimed correct: it trains by cross-entropy as well as by KD
        assert example.teacher_logprobs is not None and all(row[0] > -0.01 for row in example.teacher_logprobs)
        assert example.answer != TRUTH[learning.prompt.removeprefix("cap ")]


def test_honest_learnings_pass_the_door_and_are_right() -> None:
    rng = random.Random(0)
    for agent, skill in HONEST:
        learnings = honest_learnings(agent, skill, 20, rng)
        _admitted(learnings)
        if skill == "capital":
            assert all(x.completion == TRUTH[x.prompt.removeprefix("cap ")] for x in learnings)


def test_a_plan_the_ranks_cannot_split_is_refused() -> None:
    with pytest.raises(ValueError, match="multiple of the 2 ranks"):
        PoisonerPlan(batch_size=33)
    with pytest.raises(ValueError, match="at least 1"):
        PoisonerPlan(learnings=0)
