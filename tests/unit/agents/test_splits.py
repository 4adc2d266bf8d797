"""Splits: agents learn from train prompts, tuning reads validation, evaluation reads test, and none overlap."""

from __future__ import annotations

import random
import sys
import textwrap
from collections import Counter
from dataclasses import dataclass

import pytest

from agents.evaluation import held_out_tasks
from agents.learner import Specialist, work_batch
from agents.model import build_core
from agents.skills import BUILTIN_SKILLS, SkillLoadError, load_skill
from agents.skills.splits import (
    MAX_DRAWS,
    SPLITS,
    SkillSplitError,
    hash_split,
    kind_of,
    sample_task,
    sample_tasks,
    split_of,
)

GENERALIZE = sorted(name for name, skill in BUILTIN_SKILLS.items() if kind_of(skill) == "generalize")


def test_at_least_half_of_the_builtin_skills_generalize() -> None:
    assert len(GENERALIZE) * 2 >= len(BUILTIN_SKILLS)


def test_the_hash_split_is_stable_and_keeps_about_a_tenth_for_test_and_for_validation() -> None:
    prompts = [f"p{i}" for i in range(20_000)]
    counts = Counter(hash_split("s", p) for p in prompts)
    assert 0.09 < counts["test"] / len(prompts) < 0.11
    assert 0.09 < counts["validation"] / len(prompts) < 0.11
    assert [hash_split("s", p) for p in prompts[:50]] == [hash_split("s", p) for p in prompts[:50]]
    # The skill's name is part of the hash: the same prompt text may fall differently for two skills.
    assert any(hash_split("a", p) != hash_split("b", p) for p in prompts[:50])


def test_any_prompt_text_gets_a_split() -> None:
    for prompt in ("", "\ud800 lone surrogate", "zorbish: \x00", "é" * 10_000):
        assert hash_split("zorbish", prompt) in SPLITS


@pytest.mark.parametrize("name", GENERALIZE)
def test_every_split_of_a_builtin_skill_draws_only_its_own_prompts(name: str) -> None:
    skill = BUILTIN_SKILLS[name]
    drawn = {split: {p for p, _ in sample_tasks(skill, random.Random(1), split, 300)} for split in SPLITS}
    for split, prompts in drawn.items():
        assert {split_of(skill, p) for p in prompts} == {split}
    assert not drawn["train"] & drawn["test"] and not drawn["validation"] & drawn["test"]
    assert len(drawn["test"]) >= 20, "too few distinct test prompts to measure generalization"


@pytest.mark.parametrize("name", GENERALIZE)
def test_an_agent_works_only_train_prompts_and_evaluation_only_test_ones(name: str) -> None:
    skill = BUILTIN_SKILLS[name]
    specialist = Specialist(build_core(seed=0), core_version=0, lr=1e-3, topk=2)
    worked = work_batch(specialist, skill, "agent-1", random.Random(0), batch_size=64, publish=8)
    assert {split_of(skill, p) for p, _ in worked.tasks} == {"train"}
    assert {split_of(skill, lr.prompt) for lr in worked.learnings} == {"train"}
    assert {split_of(skill, p) for p, _ in held_out_tasks(skill, 100)} == {"test"}
    assert {split_of(skill, p) for p, _ in held_out_tasks(skill, 100, split="validation")} == {"validation"}


def test_a_recall_skill_is_tested_on_its_table() -> None:
    capital = BUILTIN_SKILLS["capital"]
    tested = {p for p, _ in held_out_tasks(capital, 400)}
    assert tested == {f"cap {country}" for country in capital.table}
    with pytest.raises(SkillSplitError, match="recall skill"):
        split_of(capital, "cap x")


@dataclass(frozen=True)
class Tiny:
    """A task space of three prompts, none of which the hash split puts in test."""

    name: str = "tiny-space"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        prompt = rng.choice([p for p in (f"t{i}" for i in range(40)) if hash_split(self.name, p) == "train"][:3])
        return prompt, "x"


def test_a_generalize_skill_with_no_test_prompts_is_refused_with_the_fix() -> None:
    with pytest.raises(SkillSplitError, match=rf"drew {MAX_DRAWS} tasks without one in its 'test' split.*recall"):
        sample_task(Tiny(), random.Random(0), "test")


@dataclass(frozen=True)
class OwnSplit:
    name: str = "own"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        n = rng.randint(0, 99)
        return f"n{n}", str(n)

    def split(self, prompt: str) -> str:
        n = int(prompt[1:])
        return "test" if n < 10 else "validation" if n < 20 else "train"


def test_a_skill_may_give_its_own_split() -> None:
    assert {int(p[1:]) for p, _ in held_out_tasks(OwnSplit(), 200)} <= set(range(10))
    assert min(int(p[1:]) for p, _ in sample_tasks(OwnSplit(), random.Random(0), "train", 200)) >= 20


@dataclass(frozen=True)
class BadSplit(OwnSplit):
    def split(self, prompt: str) -> str:
        return "holdout"


def test_a_split_outside_the_three_is_refused_naming_the_skill() -> None:
    with pytest.raises(SkillSplitError, match=r"'own'.*returned 'holdout'"):
        sample_task(BadSplit(), random.Random(0), "test")


def test_a_plugin_with_a_bad_kind_or_an_unusable_split_is_refused_at_load(tmp_path, monkeypatch) -> None:
    (tmp_path / "bad_kinds.py").write_text(
        textwrap.dedent(
            """
            class Fuzzy:
                name = "fuzzy"
                kind = "memorize"
                def sample(self, rng):
                    return "a", "b"

            class RecallWithSplit:
                name = "rws"
                kind = "recall"
                def sample(self, rng):
                    return "a", "b"
                def split(self, prompt):
                    return "test"

            class Plain:
                name = "plain"
                def sample(self, rng):
                    return "a", "b"
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SkillLoadError, match="kind 'memorize'"):
        load_skill("bad_kinds:Fuzzy")
    with pytest.raises(SkillLoadError, match="recall skill's test is its whole table"):
        load_skill("bad_kinds:RecallWithSplit")
    assert kind_of(load_skill("bad_kinds:Plain")) == "generalize"
    sys.modules.pop("bad_kinds", None)
