"""The skill contract: ``name`` and ``sample(rng)``, with an optional ``score``."""

from __future__ import annotations

import random
from typing import Protocol, runtime_checkable


@runtime_checkable
class Skill(Protocol):
    """Any object with a ``name`` and ``sample(rng) -> (prompt, answer)`` is a skill.

    It may also define ``score(prompt, answer, output) -> float`` in [0, 1]; without one, the
    score is an exact match after stripping whitespace. A plugin needs no import from this project.
    """

    name: str

    def sample(self, rng: random.Random) -> tuple[str, str]: ...


def score_output(skill: object, prompt: str, answer: str, output: str) -> float:
    """Scores ``output`` with the skill's own ``score`` if it has one, else by exact match."""
    scorer = getattr(skill, "score", None)
    if scorer is None:
        return 1.0 if output.strip() == answer.strip() else 0.0
    value = float(scorer(prompt, answer, output))
    if not 0.0 <= value <= 1.0:
        name = getattr(skill, "name", type(skill).__name__)
        raise ValueError(f"skill {name!r} returned score {value}, outside [0, 1]")
    return value
