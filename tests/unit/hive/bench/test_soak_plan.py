"""The soak's plan refuses a run that cannot show joining and leaving, and its learnings are valid train tasks."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from agents.skills import BUILTIN_SKILLS
from agents.skills.splits import kind_of, split_of
from hive.bench.soak import SKILLS, SoakPlan, _lags_per_phase, _learnings, _percentile


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


def test_lags_are_told_per_phase_by_when_the_learning_was_made() -> None:
    t0 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
    starts = [t0, t0 + timedelta(seconds=60)]
    lags = [(t0 + timedelta(seconds=1), 12.0), (t0 + timedelta(seconds=2), 11.0), (t0 + timedelta(seconds=61), 0.5)]
    per_phase = _lags_per_phase(lags, starts)
    assert per_phase["1"]["max"] == 12.0 and per_phase["1"]["count"] == 2
    assert per_phase["2"] == {"p50": 0.5, "p99": 0.5, "max": 0.5, "count": 1}
