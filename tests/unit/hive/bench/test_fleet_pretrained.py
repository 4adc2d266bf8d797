"""hive bench fleet on a pretrained core: its plan, LoRA specialists, their claim checks and merged deltas."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from agents.codec import load_codec
from agents.lora import ADAPTER_WEIGHTS
from agents.model import file_sha256, load_core
from agents.skills import load_skills
from hive.bench.fleet import FleetBenchPlan
from hive.bench.fleet_arms import CoreStart, merge_arm, publish_specialist, train_multitask, train_specialist

from tiny_hf import make_hf_core


@pytest.fixture(scope="module")
def start(tmp_path_factory: pytest.TempPathFactory) -> CoreStart:
    directory = make_hf_core(tmp_path_factory.mktemp("hf") / "core")
    return CoreStart(load_core(directory), directory, load_codec(directory))


def test_a_pretrained_plan_has_its_own_defaults_and_takes_overrides() -> None:
    plan = FleetBenchPlan.for_model("smollm2-135m", skills=["capital"])
    assert (plan.specialist_steps, plan.batch_size, plan.base_steps, plan.base_skills) == (60, 8, 0, [])
    assert (plan.distill.steps, plan.distill.batch_size, plan.distill.lr, plan.eval_tasks) == (120, 8, 2e-3, 50)
    assert plan.distill.continual_lr == plan.distill.lr and not plan.ablations
    given = FleetBenchPlan.for_model(
        "smollm2-135m", distill={"steps": 5, "teacher": "latest"}, skills=["c"], batch_size=4
    )
    assert (given.distill.steps, given.distill.teacher, given.distill.batch_size, given.batch_size) == (
        5,
        "latest",
        4,
        4,
    )
    tiny = FleetBenchPlan.for_model("tiny", distill={"steps": 7}, skills=["c"])
    assert (tiny.distill.steps, tiny.specialist_steps, tiny.base_steps, tiny.batch_size) == (7, 200, 600, 32)


@pytest.mark.parametrize(
    ("given", "message"),
    [({"base_steps": 10}, "is pretrained already"), ({"kd_compare_per_skill": 8}, "runs on tiny only")],
)
def test_what_a_pretrained_core_cannot_run_is_refused(given: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FleetBenchPlan.for_model("smollm2-135m", skills=["c"], **given)


def test_a_lora_specialist_publishes_its_adapter_and_merges_as_a_dense_delta(start: CoreStart, tmp_path: Path) -> None:
    (skill,) = load_skills(["zorbish"])
    torch.manual_seed(0)
    trained = train_specialist(start.model, skill, "agent-z", 3, 4, 2, 5e-2, 4, 0, codec=start.codec)
    assert trained.specialist.tuning == "lora" and len(trained.learnings) == 6

    publish_specialist(trained, tmp_path / "zorbish")
    assert {lr.adapter.sha256 for lr in trained.learnings if lr.adapter} == {
        file_sha256(tmp_path / "zorbish" / ADAPTER_WEIGHTS)
    }

    plain = trained.weights()
    assert not hasattr(plain, "peft_config")  # a plain model: the adapter merged into a copy of the core
    ids = torch.tensor([[1, 5, 9, 12]])
    with torch.no_grad():
        assert torch.allclose(plain(ids).logits, trained.model(ids).logits, atol=1e-5)
    base, tuned = start.model.state_dict(), plain.state_dict()
    changed = {k for k in base if not torch.equal(base[k], tuned[k])}
    # Only the LoRA-targeted linear layers moved; the core itself was never touched.
    assert changed and all(k.endswith(("proj.weight",)) for k in changed)
    assert all(torch.equal(v, load_core(start.directory).state_dict()[k]) for k, v in base.items())

    model, params = merge_arm("task_arithmetic", start.model, [plain], [skill], 2, start.codec)
    assert params["scale"] in (0.3, 0.5, 0.7, 1.0) and not hasattr(model, "peft_config")


def test_the_multitask_arm_on_a_pretrained_core_tunes_lora(start: CoreStart) -> None:
    from hive.bench.recipe import arm_config

    plan = FleetBenchPlan.for_model("smollm2-135m", skills=["capital"])
    (skill,) = load_skills(["zorbish"])
    tasks = {"zorbish": [skill.sample(__import__("random").Random(i)) for i in range(8)]}
    recipe = arm_config(plan.distill, 2, plan.distill.lr, 4)
    multitask = train_multitask(start.model, tasks, 2, 4, 0, recipe, start.codec)
    assert hasattr(multitask.model, "peft_config") and multitask.rows["zorbish"] == 8
