"""The demo's plan per model: the tiny core's as before, a pretrained model's with skills it cannot already do."""

from __future__ import annotations

import pytest

from agents.skills import BUILTIN_SKILLS
from hive.demo import DemoPlan, build_report
from hive.fleet import FleetView
from streams.events import Heartbeat


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


def test_the_demo_runs_two_rounds_and_agent_1_meets_new_material_after_the_first() -> None:
    plan = DemoPlan(skills=["capital", "morse", "add"], learn_steps=120, relearn_steps=80, publish_per_step=8)
    assert plan.rounds == 2 and plan.later_skill == "next"
    assert plan.all_skills == ["capital", "morse", "add", "next"]
    assert [plan.learnings_before_round(n) for n in (1, 2, 3)] == [2880, 1920, 1920]
    assert [plan.steps_through_round(n) for n in (0, 1, 2, 3)] == [0, 120, 200, 280]
    assert DemoPlan(rounds=1).all_skills == DemoPlan().skills  # one round: nothing new to meet
    with pytest.raises(ValueError, match="at least one round"):
        DemoPlan(rounds=0)
    with pytest.raises(ValueError, match="must be new"):
        DemoPlan(later_skill="morse")


def test_the_report_gives_every_agents_accuracy_on_each_rounds_core_as_it_found_it() -> None:
    plan = DemoPlan(skills=["capital", "morse", "add"])
    view = FleetView()
    for agent_id, skill in zip(plan.agent_ids, ["capital", "next", "add"], strict=True):
        view.offer(Heartbeat(agent_id=agent_id, skill=skill, core_version=2, state="learning"))
    view.evaluations = {(a, 0): {"capital": 0.1} for a in plan.agent_ids}
    # What each agent reported first on cores 1 and 2 (on a swap, before learning on it again).
    first_seen = {
        **{(a, 1): {"capital": 0.9, "morse": 0.5, "add": 0.8, "next": 0.0} for a in plan.agent_ids},
        **{(a, 2): {"capital": 0.9, "morse": 0.6, "add": 0.8, "next": 0.7} for a in plan.agent_ids},
    }
    rounds = [{"id": "r0001", "core_version": 1, "learnings": 10}, {"id": "r0002", "core_version": 2, "learnings": 6}]
    report = build_report(plan, view, rounds, first_seen)
    assert report["core_version"] == 2 and report["skills"] == ["capital", "morse", "add", "next"]
    assert [r["core_version"] for r in report["rounds"]] == [1, 2]
    assert report["rounds"][1]["accuracy"]["agent-2"] == first_seen[("agent-2", 2)]
    assert report["round"] == {"id": "r0002", "core_version": 2, "learnings": 6}  # the last round, as before
    assert [a["skill"] for a in report["agents"]] == ["capital", "morse", "add"]  # what each was deployed to first
    assert (
        report["agents"][0]["before"] == {"capital": 0.1} and report["agents"][0]["after"] == first_seen[("agent-1", 2)]
    )
    later = report["summary"]["later_skill"]
    assert later == {"skill": "next", "agent": "agent-1", "others_after_round": [0.0, 0.7]}
