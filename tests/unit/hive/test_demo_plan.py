"""The demo's plan per model: the tiny core's as before, a pretrained model's with skills it cannot already do."""

from __future__ import annotations

import pytest

from agents.skills import BUILTIN_SKILLS
from hive.demo import DemoPlan


def test_the_tiny_plan_is_the_one_the_demo_always_ran() -> None:
    assert DemoPlan.for_model("tiny") == DemoPlan()
    assert DemoPlan().model == "tiny" and DemoPlan().distill == {}


@pytest.mark.parametrize("model", ["smollm2-135m", "/models/my-llama"])
def test_a_pretrained_plan_learns_made_up_skills_with_its_own_round_settings(model: str) -> None:
    plan = DemoPlan.for_model(model)
    assert plan.model == model
    assert plan.skills == ["capital", "codes", "zorbish"]
    assert all(skill in BUILTIN_SKILLS for skill in plan.skills)
    # Far fewer, smaller steps than the tiny core's: each costs ~100 times more on a pretrained model.
    assert plan.learn_steps < DemoPlan().learn_steps and plan.batch_size < DemoPlan().batch_size
    # LoRA on the core, at the rate measured for it (full fine-tuning of a pretrained core wants ~2e-4).
    assert plan.distill.get("tuning", "auto") == "auto" and plan.distill["lr"] == 2e-3
    assert plan.expected_learnings == 3 * plan.learn_steps * plan.publish_per_step
