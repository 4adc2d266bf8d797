"""Test data shared by every tier: one way to make a Learning (``from factories import make_learning``).

``tests/`` is on ``sys.path`` because pytest puts the directory of ``tests/conftest.py`` there (no ``__init__.py``).
"""

from __future__ import annotations

import uuid
from typing import Any

from streams.events import Feedback, Learning


def make_learning(
    agent: str = "a1",
    skill: str = "add",
    n: int = 0,
    *,
    prompt: str | None = None,
    completion: str = "x",
    reward: float = 1.0,
    correction: str | None = None,
    core_version: int = 0,
    **fields: Any,
) -> Learning:
    """A valid, unsigned Learning with a fresh id; ``n`` tells apart the prompts of one agent and skill
    (``"<skill> <n>"`` unless ``prompt`` is given). ``fields`` sets any other Learning field, ``id`` included
    (a seeded test draws its ids from its own random generator)."""
    fields.setdefault("id", uuid.uuid4())
    return Learning(
        agent_id=agent,
        skill=skill,
        core_version=core_version,
        prompt=f"{skill} {n}" if prompt is None else prompt,
        completion=completion,
        feedback=Feedback(reward=reward, correction=correction),
        **fields,
    )
