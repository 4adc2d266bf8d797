"""metrics.json's per-agent block: the training KD loss of the base and trained cores on each agent's examples."""

from __future__ import annotations

import pytest

from agents.codec import BYTE_CODEC
from agents.model import CoreSize, build_core, topk_signal
from distill.attribution import per_agent_metrics
from distill.dataset import Example

SIZE = CoreSize(width=32, layers=1)
PAIRS = [(f"add {i} {i + 1}", str(2 * i + 1)) for i in range(12)]


def _examples(teacher, agent: str, pairs: list[tuple[str, str]], k: int = 8) -> list[Example]:
    signals = topk_signal(teacher, [p for p, _ in pairs], [a for _, a in pairs], k, BYTE_CODEC)
    return [Example(p, a, agent, "add", ids, lps, True) for (p, a), (ids, lps) in zip(pairs, signals, strict=True)]


def test_a_student_equal_to_the_teacher_has_lower_kd_than_the_base() -> None:
    base, teacher = build_core(SIZE, seed=0), build_core(SIZE, seed=1)
    examples = _examples(teacher, "agent-a", PAIRS[:6]) + _examples(teacher, "agent-b", PAIRS[6:])
    # The "trained" student is the teacher itself: its KD to its own top-k signal is (almost) zero.
    figures = per_agent_metrics(examples, base, teacher, temperature=1.0, codec=BYTE_CODEC)
    assert sorted(figures) == ["agent-a", "agent-b"]
    for row in figures.values():
        assert row["learnings"] == 6 and row["scored"] == 6
        assert row["weight"] == pytest.approx(0.5)
        assert row["kd_positions"] > 0 and row["ce_positions"] == 0
        assert row["ce_before"] is None and row["ce_after"] is None
        assert row["kd_after"] < 1e-3 < row["kd_before"]
    # Deterministic: the same inputs give the same figures.
    assert per_agent_metrics(examples, base, teacher, temperature=1.0, codec=BYTE_CODEC) == figures


def test_examples_without_a_teacher_are_scored_by_cross_entropy_and_limit_caps_them() -> None:
    base, after = build_core(SIZE, seed=0), build_core(SIZE, seed=2)
    corrections = [Example(p, a, "agent-c", "add", verified=True) for p, a in PAIRS]
    figures = per_agent_metrics(corrections, base, after, temperature=2.0, codec=BYTE_CODEC, limit=4)
    row = figures["agent-c"]
    assert (row["learnings"], row["scored"], row["weight"]) == (12, 4, 1.0)
    assert row["kd_before"] is None and row["kd_after"] is None and row["kd_positions"] == 0
    assert row["ce_positions"] == sum(len(a) + 1 for _, a in PAIRS[:4])  # each answer plus its EOS
    assert row["ce_before"] > 0 and row["ce_after"] > 0
    assert base.training is False and after.training is False
