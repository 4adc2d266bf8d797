"""Per-skill accuracy of a model on held-out tasks: seeded draws from the skill's ``test`` split."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agents.codec import BYTE_CODEC, Codec
from agents.model import generate
from agents.skills import score_output
from agents.skills.splits import Split, sample_tasks

if TYPE_CHECKING:
    from transformers import PreTrainedModel

# Held-out tasks are draws from the skill's test split (agents.skills.splits), which no agent learns from;
# a recall skill's test is its table, which is what such a skill is.
HELD_OUT_SEED = 10_000


@dataclass(frozen=True)
class TaskOutput:
    """One held-out task as the model answered it, with the skill's score of that answer in [0, 1]."""

    prompt: str
    reference: str
    output: str
    score: float


def held_out_tasks(skill: object, n: int, seed: int = HELD_OUT_SEED, split: Split = "test") -> list[tuple[str, str]]:
    """``n`` seeded tasks of the skill's ``split``: ``test`` to evaluate, ``validation`` to tune."""
    rng = random.Random(f"{seed}:{skill.name}")  # type: ignore[attr-defined]
    return sample_tasks(skill, rng, split, n)


def skill_outputs(
    model: PreTrainedModel,
    skill: object,
    n: int = 100,
    seed: int = HELD_OUT_SEED,
    batch_size: int = 128,
    codec: Codec = BYTE_CODEC,
    split: Split = "test",
) -> list[TaskOutput]:
    """The model's greedy answer to each of the skill's ``n`` held-out tasks, scored, in task order.

    ``codec`` is the model's core's; the byte default is the tiny core's, and ``generate`` refuses a codec
    that does not match the model's vocabulary.
    """
    tasks = held_out_tasks(skill, n, seed, split)
    results: list[TaskOutput] = []
    for start in range(0, len(tasks), batch_size):
        chunk = tasks[start : start + batch_size]
        outputs = generate(model, [p for p, _ in chunk], codec)
        results.extend(
            TaskOutput(p, a, o, score_output(skill, p, a, o)) for (p, a), o in zip(chunk, outputs, strict=True)
        )
    return results


def evaluate_skills(
    model: PreTrainedModel,
    skills: list[object],
    n: int = 100,
    seed: int = HELD_OUT_SEED,
    batch_size: int = 128,
    codec: Codec = BYTE_CODEC,
    split: Split = "test",
) -> dict[str, float]:
    """Mean score per skill over ``n`` held-out tasks of ``split``, decoding greedily (see ``skill_outputs``)."""
    scores: dict[str, float] = {}
    for skill in skills:
        outputs = skill_outputs(model, skill, n, seed, batch_size, codec, split)
        scores[skill.name] = sum(o.score for o in outputs) / len(outputs)  # type: ignore[attr-defined]
    return scores
