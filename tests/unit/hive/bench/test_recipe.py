"""Every trained arm of the fleet bench runs the distill job's optimizer and lr schedule."""

from __future__ import annotations

import pytest
import torch

from agents.learner import Specialist
from agents.model import CoreSize, build_core
from distill.manifest import DistillParams
from distill.plain import warmup_cosine
from hive.bench.recipe import apply_recipe, arm_config, describe_recipe


def test_a_specialist_on_the_recipe_follows_the_distill_jobs_schedule() -> None:
    params = DistillParams(warmup_steps=5)
    config = arm_config(params, steps=30, lr=3e-3, batch_size=4)
    specialist = Specialist(build_core(CoreSize(width=32, layers=1), seed=0), 0, lr=1.0, topk=1)
    apply_recipe(specialist, config)
    group = specialist.optimizer.param_groups[0]
    assert isinstance(specialist.optimizer, torch.optim.AdamW)
    assert group["betas"] == (0.9, 0.95) and group["weight_decay"] == 0.01
    factor = warmup_cosine(**{k: v for k, v in config["scheduler"]["params"].items()})
    lrs = []
    for _ in range(30):
        lrs.append(group["lr"])
        specialist.learn(["add 1 2"], ["3"])
    assert lrs == pytest.approx([3e-3 * factor(i) for i in range(30)])
    assert lrs[0] < lrs[5] and lrs[-1] < lrs[5]  # a warmup, then a decay: not the agents' constant lr


def test_the_description_is_the_config_that_ran() -> None:
    described = describe_recipe(arm_config(DistillParams(), steps=400, lr=3e-3, batch_size=64))
    assert described["optimizer"] == "AdamW(lr=0.003, betas=(0.9, 0.95), weight_decay=0.01)"
    assert "warmup 20 steps" in described["schedule"] and "step 400" in described["schedule"]


def test_an_optimizer_over_other_parameters_is_refused() -> None:
    specialist = Specialist(build_core(CoreSize(width=32, layers=1), seed=0), 0, lr=1e-3, topk=1)
    other = build_core(CoreSize(width=32, layers=1), seed=1)
    with pytest.raises(ValueError, match="exactly the specialist's trainable parameters"):
        specialist.use_optimizer(torch.optim.AdamW(other.parameters()))
