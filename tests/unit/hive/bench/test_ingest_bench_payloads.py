"""The ingest bench's payloads: valid learnings with a k=16 signal over 16 positions, encoded once."""

from __future__ import annotations

import pytest

from hive.bench.ingest_bench import IngestBenchPlan, build_learnings, build_payloads, summary_line
from hive.bench.synthetic import AGENTS
from streams.codec import decode
from streams.events import Learning

MAX_BYTES = 1_000_000


def test_every_payload_decodes_to_a_valid_learning_with_a_k16_signal_over_16_positions() -> None:
    plan = IngestBenchPlan(count=40)
    payloads = build_payloads(plan)
    assert len(payloads) == 40
    for key, value in payloads:
        learning = decode(value, Learning, MAX_BYTES)
        assert key == learning.agent_id.encode()
        assert learning.teacher is not None
        assert learning.teacher.k == 16
        assert len(learning.teacher.token_ids) == len(learning.teacher.logprobs) == 16
        for ids, lps in zip(learning.teacher.token_ids, learning.teacher.logprobs, strict=True):
            assert len(set(ids)) == 16
            assert lps == sorted(lps, reverse=True)
            assert all(lp < 0 for lp in lps)
        assert learning.prompt and learning.completion and learning.feedback.reward == 1.0


def test_ids_are_unique_and_the_agents_spread_over_partitions() -> None:
    learnings = build_learnings(IngestBenchPlan(count=200))
    assert len({x.id for x in learnings}) == 200
    assert len({x.agent_id for x in learnings}) == AGENTS


def test_the_same_plan_gives_byte_identical_payloads() -> None:
    plan = IngestBenchPlan(count=25)
    first, second = build_payloads(plan), build_payloads(plan)
    assert first == second
    # A learning is encoded once: the bytes are realistic in size (a 16 x 16 signal is most of them).
    assert all(4000 < len(value) < 10_000 for _, value in first)


def test_a_different_seed_gives_other_learnings() -> None:
    assert build_payloads(IngestBenchPlan(count=5, seed=1)) != build_payloads(IngestBenchPlan(count=5, seed=2))


@pytest.mark.parametrize(
    "kwargs", [{"count": 0}, {"repeats": 0}, {"k": 0}, {"positions": 0}, {"partitions": 0}, {"k": 10_000}]
)
def test_a_bad_plan_is_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        IngestBenchPlan(**kwargs)


def test_the_summary_names_both_rates_and_the_ratio() -> None:
    report = {
        "hive": {"learnings_per_s": 1200.0, "wall_s": 4.2},
        "raw": {"records_per_s": 2400.0, "wall_s": 2.1},
        "ratio": 0.5,
        "ratio_min": 0.41,
        "ratio_max": 0.62,
        "repeats": [{"ratio": 0.41}, {"ratio": 0.5}, {"ratio": 0.62}],
        "count": 5000,
        "payload_bytes": 5000 * 6300,
    }
    line = summary_line(report)
    assert "1,200 learnings/s" in line and "2,400 records/s" in line
    assert "ratio 0.50 (median of 3, 0.41 to 0.62)" in line
