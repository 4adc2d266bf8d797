"""The release gate: any skill dropping beyond the limit rejects the core, with the reason."""

import pytest

from hive.cores.gate import decide


def test_no_regression_passes() -> None:
    decision = decide({"a": 0.9, "b": 0.5}, {"a": 0.9, "b": 0.4}, max_regression=0.02)
    assert decision.passed
    assert decision.reasons == []
    assert decision.deltas["b"] == pytest.approx(0.1)


def test_a_drop_within_the_limit_passes() -> None:
    assert decide({"a": 0.89}, {"a": 0.9}, max_regression=0.02).passed


def test_a_drop_beyond_the_limit_rejects_with_the_skill_named() -> None:
    decision = decide({"a": 0.95, "b": 0.5}, {"a": 0.9, "b": 0.6}, max_regression=0.02)
    assert not decision.passed
    assert len(decision.reasons) == 1
    assert decision.reasons[0].startswith("b:")


def test_a_skill_the_candidate_was_not_evaluated_on_rejects() -> None:
    decision = decide({"a": 1.0}, {"a": 0.9, "b": 0.1}, max_regression=0.02)
    assert not decision.passed
    assert "not evaluated" in decision.reasons[0]


def test_new_skills_count_as_gains() -> None:
    decision = decide({"a": 0.9, "new": 0.7}, {"a": 0.9}, max_regression=0.02)
    assert decision.passed
    assert decision.deltas["new"] == 0.7


def test_a_drop_of_exactly_the_limit_passes_despite_float_rounding() -> None:
    # 0.99 - 0.97 is 0.020000000000000018 in floats.
    assert decide({"a": 0.97}, {"a": 0.99}, max_regression=0.02).passed
    assert not decide({"a": 0.96}, {"a": 0.99}, max_regression=0.02).passed
