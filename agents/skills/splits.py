"""Which split a task belongs to: what agents learn from, what tuning reads, and what evaluation tests.

A ``generalize`` skill (the default kind) has a task space too large to memorise: its prompts fall into
``train``, ``validation`` and ``test`` by the skill's own ``split(prompt)`` if it gives one, else by a
stable hash of the exact prompt. Agents learn only from ``train`` prompts, tuning reads only
``validation`` and every evaluation reads only ``test``, so a held-out score is on prompts that no
training stream can contain.

A ``recall`` skill is a closed table of facts: the test is the table itself, and its scores are recall,
reported apart.
"""

from __future__ import annotations

import hashlib
import random
from typing import Literal, get_args

Split = Literal["train", "validation", "test"]
Kind = Literal["generalize", "recall"]
SPLITS: tuple[Split, ...] = get_args(Split)
KINDS: tuple[Kind, ...] = get_args(Kind)

# A tenth of the task space is test and a tenth validation: enough distinct held-out prompts for a skill
# of a few thousand tasks, while training keeps eight tenths.
TEST_FRACTION = 0.1
VALIDATION_FRACTION = 0.1
# A draw lands in the test split one time in ten; 2,000 misses in a row mean the skill's space has no
# prompt there at all (a closed table marked ``generalize`` by mistake), not bad luck (odds 0.9**2000).
MAX_DRAWS = 2_000


class SkillSplitError(ValueError):
    """A skill whose kind or split cannot give the tasks asked for."""


def _name(skill: object) -> str:
    return str(getattr(skill, "name", type(skill).__name__))


def kind_of(skill: object) -> Kind:
    """The skill's ``kind``: ``generalize`` unless it says ``recall``; any other value is refused."""
    kind = getattr(skill, "kind", "generalize")
    if kind not in KINDS:
        raise SkillSplitError(f"skill {_name(skill)!r} has kind {kind!r}: use one of {', '.join(KINDS)}")
    return kind


def hash_split(skill_name: str, prompt: str) -> Split:
    """The split of a prompt by a stable hash of the skill's name and the exact prompt."""
    # surrogatepass: a prompt decoded from JSON may hold a lone surrogate; it still gets a split, never an error.
    digest = hashlib.sha256(f"{skill_name}\x00{prompt}".encode("utf-8", "surrogatepass")).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    if position < TEST_FRACTION:
        return "test"
    if position < TEST_FRACTION + VALIDATION_FRACTION:
        return "validation"
    return "train"


def split_of(skill: object, prompt: str) -> Split:
    """Where ``prompt`` belongs for a ``generalize`` skill: its own ``split(prompt)``, else the hash split."""
    if kind_of(skill) == "recall":
        raise SkillSplitError(f"skill {_name(skill)!r} is a recall skill: its prompts are its table, in no split")
    own = getattr(skill, "split", None)
    if own is None:
        return hash_split(_name(skill), prompt)
    split = own(prompt)
    if split not in SPLITS:
        raise SkillSplitError(
            f"skill {_name(skill)!r}: split({prompt!r}) returned {split!r}; it must return one of {', '.join(SPLITS)}"
        )
    return split


def held_out_split(skill: object, prompt: str) -> Split | None:
    """The held-out split (``validation`` or ``test``) that ``prompt`` is in, or None when it may be learned: a
    train prompt, or any prompt of a recall skill (whose table is taught and tested alike)."""
    if kind_of(skill) == "recall":
        return None
    split = split_of(skill, prompt)
    return None if split == "train" else split


def sample_task(skill: object, rng: random.Random, split: Split) -> tuple[str, str]:
    """One task of the skill from ``split``. A recall skill's table serves every split."""
    if kind_of(skill) == "recall":
        return skill.sample(rng)  # type: ignore[attr-defined]
    for _ in range(MAX_DRAWS):
        prompt, answer = skill.sample(rng)  # type: ignore[attr-defined]
        if split_of(skill, prompt) == split:
            return prompt, answer
    raise SkillSplitError(
        f"skill {_name(skill)!r} drew {MAX_DRAWS} tasks without one in its {split!r} split: its task space is "
        f"too small to hold tasks out; declare kind = 'recall', or give it a split(prompt) of its own"
    )


def sample_tasks(skill: object, rng: random.Random, split: Split, n: int) -> list[tuple[str, str]]:
    return [sample_task(skill, rng, split) for _ in range(n)]
