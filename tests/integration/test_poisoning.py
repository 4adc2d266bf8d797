"""One of five agents, holding a valid key, teaches confident wrong answers of a skill the core knows: the round
leaves it out, and the honest skills do not drop (the hive's round path, real DeepSpeed ranks, MLflow on SQLite)."""

from __future__ import annotations

from pathlib import Path

from hive.bench.poisoner import ARMS, GOAL_MAX_DROP, HONEST, POISONER, PoisonerPlan, run_seed

# Smaller than the bench's defaults, to keep make test short; the bench's figures are in docs/benchmarks.md.
PLAN = PoisonerPlan(seeds=1, learnings=96, distill_steps=60, gate_tasks=60)


def test_a_poisoner_is_left_out_and_the_honest_skills_do_not_drop(tmp_path: Path) -> None:
    run = run_seed(PLAN, 0, tmp_path, print)
    clean, screened, unscreened = (run["arms"][arm] for arm in ARMS)
    poisoner, poisoned_skill = POISONER
    assert clean["champion_eval"][poisoned_skill] >= 0.5, "v1 never learned the poisoned skill; this proves nothing"

    # The screen left out the poisoner, and only it: every honest agent was screened and kept.
    assert screened["state"] == "released", screened["gate_reasons"]
    assert [(e["agent"], e["skill"]) for e in screened["excluded"]] == [POISONER]
    for agent, skill in HONEST:
        figures = screened["screen_agents"][agent][skill]
        assert figures["screened"] and not figures.get("excluded"), (agent, figures)
    assert screened["quarantined_by_agent"] == {f"{poisoner} {poisoned_skill} disagrees_with_base": PLAN.learnings}
    assert clean["excluded"] == [] and clean["quarantined"] == 0

    # The honest skills, the poisoned one's honest teacher included, are where the clean round left them.
    assert run["max_honest_drop"] <= GOAL_MAX_DROP, run["honest_drop"]

    # The poison is real: without the screen the same round loses the skill, and the gate refuses the core.
    assert unscreened["state"] == "rejected"
    assert unscreened["eval"][poisoned_skill] < clean["eval"][poisoned_skill] - 0.2
    assert [reason.split(":")[0] for reason in unscreened["gate_reasons"]] == [poisoned_skill]
