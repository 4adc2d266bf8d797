"""Built-in skills and the plugin contract: sampling, scoring and loading by name."""

import random
import sys
import textwrap

import pytest

from agents.skills import BUILTIN_SKILLS, SkillLoadError, load_skill, load_skills, score_output
from agents.skills.builtin import MORSE, ZORBISH_WORDS, Capital, Codes, Zorbish
from agents.skills.text import Double, Reverse, Shift, Upper
from agents.tokenizer import MAX_POSITIONS

ALL_SHIPPED = {**BUILTIN_SKILLS, **{s.name: s for s in (Reverse(), Upper(), Shift(), Double())}}


@pytest.mark.parametrize("name", sorted(ALL_SHIPPED))
def test_shipped_skill_samples_are_deterministic_and_short(name: str) -> None:
    skill = ALL_SHIPPED[name]
    first = [skill.sample(random.Random(3)) for _ in range(20)]
    again = [skill.sample(random.Random(3)) for _ in range(20)]
    assert first == again
    for prompt, answer in first:
        assert prompt and answer
        # BOS + prompt + SEP + answer + EOS must fit the tiny core's positions, and the answer plus EOS the
        # 16 tokens that evaluation decodes.
        assert len(prompt.encode()) + len(answer.encode()) + 3 <= MAX_POSITIONS
        assert len(answer.encode()) + 1 <= 16


def test_at_least_four_builtin_skills() -> None:
    assert len(BUILTIN_SKILLS) >= 4


@pytest.mark.parametrize(
    ("name", "check"),
    [
        ("reverse", lambda p, a: p.split()[1][::-1] == a),
        ("upper", lambda p, a: p.split()[1].upper() == a),
        ("add", lambda p, a: int(p.split()[1]) + int(p.split()[2]) == int(a)),
        ("mul", lambda p, a: int(p.split()[1]) * int(p.split()[2]) == int(a)),
        ("morse", lambda p, a: " ".join(MORSE[c] for c in p.split()[1]) == a),
        ("double", lambda p, a: "".join(c * 2 for c in p.split()[1]) == a),
        (
            "shift",
            lambda p, a: all((ord(x) - 97 + 1) % 26 == ord(y) - 97 for x, y in zip(p.split()[1], a, strict=True)),
        ),
    ],
)
def test_shipped_answers_are_correct(name: str, check) -> None:
    rng = random.Random(0)
    for _ in range(50):
        prompt, answer = ALL_SHIPPED[name].sample(rng)
        assert check(prompt, answer), (prompt, answer)


def test_codes_and_zorbish_are_fixed_by_their_seeds_and_consistent() -> None:
    assert Codes().table == Codes().table and Codes(seed=12).table != Codes().table
    assert len(Codes().table) == 40
    zorbish = Zorbish()
    assert len(set(zorbish.lexicon.values())) == len(ZORBISH_WORDS) == 20  # one made-up word per English word
    rng = random.Random(0)
    for _ in range(50):
        prompt, answer = zorbish.sample(rng)
        english = prompt.removeprefix("zorbish: ").split()
        assert answer.split() == [zorbish.lexicon[w] for w in english]


def test_every_builtin_skill_says_what_its_held_out_tasks_test() -> None:
    assert {name: skill.kind for name, skill in BUILTIN_SKILLS.items()} == {
        "capital": "recall",
        "codes": "recall",
        "morse": "generalize",
        "add": "recall",
        "mul": "recall",
        "zorbish": "generalize",
        "swap": "generalize",
        "next": "generalize",
    }


def test_capital_table_is_fixed_by_its_seed() -> None:
    assert Capital().table == Capital().table
    assert Capital(seed=8).table != Capital().table
    assert len(Capital().table) == 40


def test_default_score_is_exact_match_after_strip() -> None:
    skill = BUILTIN_SKILLS["add"]
    assert score_output(skill, "add 1 2", "3", " 3\n") == 1.0
    assert score_output(skill, "add 1 2", "3", "4") == 0.0


class _Partial:
    name = "partial"

    def sample(self, rng):
        return "x", "abc"

    def score(self, prompt, answer, output):
        return sum(a == b for a, b in zip(answer, output, strict=False)) / len(answer)


class _Broken(_Partial):
    def score(self, prompt, answer, output):
        return 2.0


def test_a_skill_may_score_itself_within_0_and_1() -> None:
    assert score_output(_Partial(), "x", "abc", "abz") == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="outside"):
        score_output(_Broken(), "x", "abc", "abc")


def test_plugin_skill_from_a_file_outside_the_project(tmp_path, monkeypatch) -> None:
    (tmp_path / "my_skills.py").write_text(
        textwrap.dedent(
            """
            class Echo:
                name = "echo"
                def sample(self, rng):
                    word = "".join(rng.choice("xyz") for _ in range(3))
                    return f"echo {word}", word

            echo = Echo()
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert load_skill("my_skills:echo").name == "echo"
        assert load_skill("my_skills:Echo").name == "echo"  # a class is instantiated
    finally:
        sys.modules.pop("my_skills", None)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nope", "unknown skill"),
        ("no_such_module_xyz:thing", "cannot import"),
        ("random:no_such_attr", "has no"),
        ("random:Random", "callable `sample"),
    ],
)
def test_bad_skill_names_get_clear_errors(spec: str, message: str) -> None:
    with pytest.raises(SkillLoadError, match=message):
        load_skill(spec)


def test_string_skills_load_as_plugins() -> None:
    assert load_skill("agents.skills.text:Reverse").name == "reverse"
    assert "reverse" not in BUILTIN_SKILLS


def test_two_skills_with_one_name_are_refused() -> None:
    with pytest.raises(SkillLoadError, match="more than once"):
        load_skills(["add", "add"])
