"""The arms of the fleet benchmark that run in-process: specialists, multitask, and weight merges."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agents.evaluation import evaluate_skills
from agents.learner import Specialist, work_batch
from streams.events import Learning

if TYPE_CHECKING:
    from transformers import PreTrainedModel

# Validation tasks, for picking a merge's scale, come from the validation split: never the test one.
VALIDATION_SEED = 20_000
MERGE_SCALES = (0.3, 0.5, 0.7, 1.0)


@dataclass
class TrainedSpecialist:
    """One skill's specialist: its model, every task it worked, and the learnings it would publish."""

    skill: object
    model: PreTrainedModel
    tasks: list[tuple[str, str]] = field(default_factory=list)
    learnings: list[Learning] = field(default_factory=list)


def train_specialist(
    core: PreTrainedModel,
    skill: object,
    agent_id: str,
    steps: int,
    batch_size: int,
    publish: int,
    lr: float,
    topk: int,
    seed: int,
) -> TrainedSpecialist:
    """Learns one skill on the job from the core, with the agents' own code (``work_batch``)."""
    specialist = Specialist(core, core_version=0, lr=lr, topk=topk)
    rng = random.Random(f"{seed}:{agent_id}")
    trained = TrainedSpecialist(skill, specialist.model)
    for _ in range(steps):
        worked = work_batch(specialist, skill, agent_id, rng, batch_size, publish)
        trained.tasks.extend(worked.tasks)  # the multitask arm trains on exactly these raw tasks
        trained.learnings.extend(worked.learnings)
    return trained


def train_multitask(
    core: PreTrainedModel,
    tasks_by_skill: list[list[tuple[str, str]]],
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
) -> tuple[PreTrainedModel, list[set[str]]]:
    """The upper bound: one model trained on all the raw tasks, each batch balanced across skills.

    Returns the model and, per skill, the prompts it trained on (what the contamination count checks).
    """
    learner = Specialist(core, core_version=0, lr=lr, topk=1)
    rng = random.Random(seed)
    seen: list[set[str]] = [set() for _ in tasks_by_skill]
    for _ in range(steps):
        picks = [
            (i % len(tasks_by_skill), rng.choice(tasks_by_skill[i % len(tasks_by_skill)])) for i in range(batch_size)
        ]
        for skill_index, (prompt, _) in picks:
            seen[skill_index].add(prompt)
        learner.learn([p for _, (p, _) in picks], [a for _, (_, a) in picks])
    return learner.model, seen


def merged_model(base: PreTrainedModel, state: dict) -> PreTrainedModel:
    import copy

    model = copy.deepcopy(base)
    model.load_state_dict(state, strict=True)
    model.eval()
    return model


def merge_arm(
    method: str, base: PreTrainedModel, specialists: list[PreTrainedModel], skills: list[object], val_tasks: int
) -> tuple[PreTrainedModel, dict[str, float]]:
    """A merging baseline; a method with a scale gets the best one on validation tasks."""
    from distill.merge import merge, tune_scale

    base_sd = {k: v.detach().clone() for k, v in base.state_dict().items()}
    tuned = [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in specialists]

    def score(state: dict) -> float:
        accs = evaluate_skills(merged_model(base, state), skills, val_tasks, seed=VALIDATION_SEED, split="validation")
        return sum(accs.values()) / len(accs)

    if method == "weight_average":
        return merged_model(base, merge(method, base_sd, tuned)), {}
    scale, state, scores = tune_scale(method, base_sd, tuned, MERGE_SCALES, score)
    return merged_model(base, state), {"scale": scale, **{f"val_at_{s}": v for s, v in scores.items()}}
