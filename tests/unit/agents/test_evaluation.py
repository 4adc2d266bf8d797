"""Held-out evaluation: per-task outputs, and per-skill accuracy as their mean."""

from __future__ import annotations

import random

from agents.codec import BYTE_CODEC
from agents.evaluation import TaskOutput, evaluate_skills, held_out_tasks, skill_outputs
from agents.model import CoreSize, build_core, generate


class Echo:
    """A fake skill whose score gives half credit for any non-empty output, so scores are not just 0/1."""

    name = "echo"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        word = "".join(rng.choice("abc") for _ in range(3))
        return f"echo {word}", word

    def score(self, prompt: str, answer: str, output: str) -> float:
        return 1.0 if output == answer else (0.5 if output else 0.0)


def test_skill_outputs_are_the_held_out_tasks_answered_and_scored() -> None:
    model, skill = build_core(CoreSize(width=32, layers=1), seed=0), Echo()
    outputs = skill_outputs(model, skill, n=7, seed=3, batch_size=3)
    tasks = held_out_tasks(skill, 7, 3)
    assert [(o.prompt, o.reference) for o in outputs] == tasks
    assert [o.output for o in outputs] == generate(model, [p for p, _ in tasks], BYTE_CODEC)
    assert all(isinstance(o, TaskOutput) and o.score == skill.score(o.prompt, o.reference, o.output) for o in outputs)


def test_evaluate_skills_is_the_mean_of_the_per_task_scores() -> None:
    model, skill = build_core(CoreSize(width=32, layers=1), seed=1), Echo()
    outputs = skill_outputs(model, skill, n=9, seed=5)
    assert evaluate_skills(model, [skill], n=9, seed=5, batch_size=4) == {
        "echo": sum(o.score for o in outputs) / len(outputs)
    }
