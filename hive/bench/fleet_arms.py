"""The arms of the fleet benchmark that run in-process: specialists, multitask, and weight merges."""

from __future__ import annotations

import copy
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.codec import BYTE_CODEC, Codec
from agents.construction import MODEL_CONSTRUCTION
from agents.evaluation import evaluate_skills
from agents.learner import Specialist, work_batch
from agents.skills.splits import sample_tasks
from hive.bench.recipe import apply_recipe
from streams.events import ClaimCheck, Learning

if TYPE_CHECKING:
    from transformers import PreTrainedModel

# Validation tasks, for picking a merge's scale, come from the validation split: never the test one.
VALIDATION_SEED = 20_000
MERGE_SCALES = (0.3, 0.5, 0.7, 1.0)


@dataclass(frozen=True)
class CoreStart:
    """Core v0 that every arm starts from: the model, its directory (the rounds' base core) and its codec."""

    model: PreTrainedModel
    directory: Path
    codec: Codec = BYTE_CODEC

    def evaluate(self, model: PreTrainedModel, skills: list[object], n: int, **kw: Any) -> dict[str, float]:
        """``agents.evaluation.evaluate_skills`` in this core's codec (test split unless ``split`` is given)."""
        return evaluate_skills(model, skills, n, codec=self.codec, **kw)


@dataclass
class TrainedSpecialist:
    """One skill's specialist: the learner (its model, a LoRA adapter on a pretrained core), every task it worked,
    and the learnings it would publish."""

    skill: object
    specialist: Specialist
    tasks: list[tuple[str, str]] = field(default_factory=list)
    learnings: list[Learning] = field(default_factory=list)

    @property
    def model(self) -> PreTrainedModel:
        return self.specialist.model

    def weights(self) -> PreTrainedModel:
        """The specialist as one plain model, for the merges: a LoRA adapter merged into a copy of its core (its
        task vector is then the adapter's dense delta), the fully tuned model itself otherwise."""
        if self.specialist.tuning != "lora":
            return self.model
        with MODEL_CONSTRUCTION:
            peft_model: Any = copy.deepcopy(self.model)
            plain = peft_model.merge_and_unload()
        plain.eval()
        return plain


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
    recipe: dict[str, Any] | None = None,
    codec: Codec = BYTE_CODEC,
) -> TrainedSpecialist:
    """Learns one skill on the job from the core, with the agents' own code (``work_batch``), on train prompts.

    ``recipe`` (``hive.bench.recipe.arm_config``) replaces the agents' constant lr with the distill job's
    optimizer and schedule, so that the specialist and the core are trained alike.
    """
    specialist = Specialist(core, core_version=0, lr=lr, topk=topk, codec=codec)
    if recipe is not None:
        apply_recipe(specialist, recipe)
    rng = random.Random(f"{seed}:{agent_id}")
    trained = TrainedSpecialist(skill, specialist)
    for _ in range(steps):
        worked = work_batch(specialist, skill, agent_id, rng, batch_size, publish)
        trained.tasks.extend(worked.tasks)  # the multitask arm trains on exactly these raw tasks
        trained.learnings.extend(worked.learnings)
    return trained


def publish_specialist(trained: TrainedSpecialist, directory: Path) -> None:
    """Saves the final specialist as its agent would (``directory``) and makes every learning of it name that
    claim check, so that a round under ``teacher="latest"`` re-scores them with it (streamed signals stay)."""
    directory.mkdir(parents=True, exist_ok=True)
    check = ClaimCheck(uri=directory.resolve().as_uri(), sha256=trained.specialist.save(directory))
    trained.learnings = [lr.model_copy(update={"adapter": check}) for lr in trained.learnings]


@dataclass
class Multitask:
    """The multitask arm: its model, and per skill the rows it trained on and their distinct prompts."""

    model: PreTrainedModel
    rows: Counter[str]
    prompts: dict[str, set[str]]


def train_multitask(
    core: PreTrainedModel,
    tasks_by_skill: dict[str, list[tuple[str, str]]],
    steps: int,
    batch_size: int,
    seed: int,
    recipe: dict[str, Any],
    codec: Codec = BYTE_CODEC,
) -> Multitask:
    """The upper bound: one model trained on the specialists' raw tasks, each batch balanced across skills, with
    the distill job's optimizer and schedule (``recipe``); on a pretrained core a LoRA adapter, as the core's
    rounds tune one."""
    learner = Specialist(core, core_version=0, lr=1.0, topk=1, codec=codec)  # the recipe sets the lr
    apply_recipe(learner, recipe)
    rng = random.Random(seed)
    names = list(tasks_by_skill)
    rows: Counter[str] = Counter()
    prompts: dict[str, set[str]] = {n: set() for n in names}
    for _ in range(steps):
        which = [names[i % len(names)] for i in range(batch_size)]
        picks = [(name, rng.choice(tasks_by_skill[name])) for name in which]
        for name, (prompt, _) in picks:
            rows[name] += 1
            prompts[name].add(prompt)
        learner.learn([p for _, (p, _) in picks], [a for _, (_, a) in picks])
    return Multitask(learner.model, rows, prompts)


def pretrain_base(
    core: PreTrainedModel, skills: list[object], steps: int, batch_size: int, seed: int, recipe: dict[str, Any]
) -> tuple[PreTrainedModel, set[str]]:
    """A shared starting point that is not random weights: ``core`` trained on base skills that no arm is
    evaluated on, batches balanced across them, train prompts only. Returns the base and every prompt it saw."""
    learner = Specialist(core, core_version=0, lr=1.0, topk=1)
    apply_recipe(learner, recipe)
    rng = random.Random(f"{seed}:base")
    seen: set[str] = set()
    per_skill = -(-batch_size // len(skills))
    for _ in range(steps):
        batch = [t for skill in skills for t in sample_tasks(skill, rng, "train", per_skill)][:batch_size]
        seen.update(p for p, _ in batch)
        learner.learn([p for p, _ in batch], [a for _, a in batch])
    learner.model.eval()
    return learner.model, seen


def merged_model(base: PreTrainedModel, state: dict) -> PreTrainedModel:
    model = copy.deepcopy(base)
    model.load_state_dict(state, strict=True)
    model.eval()
    return model


def merge_arm(
    method: str,
    base: PreTrainedModel,
    specialists: list[PreTrainedModel],
    skills: list[object],
    val_tasks: int,
    codec: Codec = BYTE_CODEC,
) -> tuple[PreTrainedModel, dict[str, float]]:
    """A merging baseline; a method with a scale gets the best one on validation tasks."""
    from distill.merge import merge, tune_scale

    base_sd = {k: v.detach().clone() for k, v in base.state_dict().items()}
    tuned = [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in specialists]

    def score(state: dict) -> float:
        model = merged_model(base, state)
        accs = evaluate_skills(model, skills, val_tasks, seed=VALIDATION_SEED, codec=codec, split="validation")
        return sum(accs.values()) / len(accs)

    if method == "weight_average":
        return merged_model(base, merge(method, base_sd, tuned)), {}
    scale, state, scores = tune_scale(method, base_sd, tuned, MERGE_SCALES, score)
    return merged_model(base, state), {"scale": scale, **{f"val_at_{s}": v for s, v in scores.items()}}
