"""The one optimizer and lr schedule every trained arm of ``hive bench fleet`` uses: the distill job's own.

Specialists and the multitask arm train in this process; the core trains in the distill job under DeepSpeed. All
of them take AdamW, the warmup-then-cosine schedule and the gradient clipping from the same DeepSpeed config, so
that a difference between arms is the data and the loss, not the recipe.
"""

from __future__ import annotations

from typing import Any

from agents.learner import Specialist
from distill.manifest import DistillParams, resolve_ds_config
from distill.plain import PlainEngine
from distill.train import load_ds_config


def arm_config(distill: DistillParams, steps: int, lr: float, batch_size: int) -> dict[str, Any]:
    """The DeepSpeed config that the distill job would run for ``steps`` steps at ``lr``, on one process."""
    params = distill.model_copy(update={"steps": steps, "lr": lr, "batch_size": batch_size})
    return load_ds_config(resolve_ds_config(distill.ds_config), params, world_size=1)


def apply_recipe(specialist: Specialist, config: dict[str, Any]) -> None:
    """Gives ``specialist`` the config's AdamW and lr schedule; its gradient clipping must be the learner's 1.0."""
    if float(config.get("gradient_clipping", 0.0)) != 1.0:
        raise ValueError("the fleet bench's arms clip gradients at 1.0, as the agents' learner does")
    engine = PlainEngine.from_ds_config(specialist.model, config)
    specialist.use_optimizer(engine.optimizer, engine.scheduler)


def describe_recipe(config: dict[str, Any]) -> dict[str, str]:
    """What the budget table prints for an arm: its optimizer and its schedule, from the config it ran."""
    opt = config["optimizer"]["params"]
    betas = tuple(opt.get("betas", (0.9, 0.999)))
    optimizer = f"AdamW(lr={opt['lr']:g}, betas={betas}, weight_decay={opt.get('weight_decay', 0.0):g})"
    sched = config.get("scheduler")
    if sched is None:
        return {"optimizer": optimizer, "schedule": "constant"}
    p = sched["params"]
    schedule = (
        f"{sched['type']}: {p.get('warmup_type', 'log')} warmup {p['warmup_num_steps']} steps, cosine to "
        f"{p.get('cos_min_ratio', 0.0001):g} x lr at step {p['total_num_steps']}"
    )
    return {"optimizer": optimizer, "schedule": schedule}
