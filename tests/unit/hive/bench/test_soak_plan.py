"""The soak's plan refuses a run that cannot show joining and leaving, and its learnings are valid train tasks."""

from __future__ import annotations

import random

import pytest

from agents.skills import BUILTIN_SKILLS
from agents.skills.splits import kind_of, split_of
from hive.bench.soak import SKILLS, SoakPlan, _learnings, _percentile


def test_a_plan_needs_room_for_joiners_and_leavers() -> None:
    assert SoakPlan(agents=50).churn == 5 and SoakPlan(agents=6).churn == 1
    for bad in ({"agents": 1}, {"rounds": 2}, {"per_agent": 0}):
        with pytest.raises(ValueError, match="a soak needs"):
            SoakPlan(**bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("skill", SKILLS)
def test_precomputed_learnings_are_verified_answers_to_train_prompts(skill: str) -> None:
    learnings = _learnings("soak-000", skill, 30, random.Random(0), core_version=0)
    assert len({lr.id for lr in learnings}) == 30
    for learning in learnings:
        assert learning.feedback.reward == 1.0 and learning.learned_answer() == learning.completion
        spec = BUILTIN_SKILLS[skill]
        # A recall skill's table is its test; a generalize skill's learnings come from its train split only.
        assert kind_of(spec) == "recall" or split_of(spec, learning.prompt) == "train"


def test_percentiles_pick_the_ordered_value() -> None:
    assert _percentile([], 0.5) is None
    assert _percentile([3.0, 1.0, 2.0, 4.0], 0.5) == 3.0 and _percentile(list(map(float, range(100))), 0.99) == 99.0
