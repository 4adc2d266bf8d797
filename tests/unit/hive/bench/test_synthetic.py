"""The benchmarks' shared synthetic learnings and machine report: seeded, signed when asked, one signal per answer."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from agents.model import build_core
from hive.bench.machine import load_1m, machine_info, package_version
from hive.bench.synthetic import agent_key, core_signals, learning_id, payload, synthetic_learning
from streams.codec import decode
from streams.events import Feedback, Learning
from streams.signing import verify

WHEN = datetime(2026, 11, 22, tzinfo=UTC)


def test_the_same_seed_gives_the_same_ids_and_another_seed_other_ones() -> None:
    first = [learning_id(random.Random(7)) for _ in range(3)]
    assert first == [learning_id(random.Random(7)) for _ in range(3)]
    assert learning_id(random.Random(8)) != first[0]


def test_a_learning_is_signed_only_when_given_a_key_and_rewarded_unless_told_otherwise() -> None:
    key = agent_key("agent-1")
    made = synthetic_learning(learning_id(random.Random(0)), "agent-1", "add", "1+1", "2", created_at=WHEN, key=key)
    assert verify(made, key) and not verify(made, agent_key("agent-2"))
    assert (made.core_version, made.feedback.reward, made.created_at) == (0, 1.0, WHEN)
    plain = synthetic_learning(
        learning_id(random.Random(0)), "agent-1", "add", "1+1", "?", feedback=Feedback(reward=0.0, correction="2")
    )
    assert plain.signature is None and plain.feedback.correction == "2"


def test_a_payload_is_the_learning_keyed_by_its_agent() -> None:
    made = synthetic_learning(learning_id(random.Random(1)), "agent-3", "add", "2+2", "4", created_at=WHEN)
    key, value = payload(made)
    assert key == b"agent-3"
    assert decode(value, Learning, 1_000_000) == made


def test_the_core_gives_one_signal_per_answer_whatever_the_chunk() -> None:
    core = build_core(seed=0)
    prompts, answers = ["1+1=", "2+3=", "4+4=", "9+0=", "7+1="], ["2", "5", "8", "9", "8"]
    for chunk in (2, 64):
        signals = list(core_signals(core, prompts, answers, k=3, chunk=chunk))
        assert len(signals) == len(prompts)
        for answer, (ids, lps) in zip(answers, signals, strict=True):
            # One position per answer byte plus its end-of-sequence, k entries each.
            assert len(ids) == len(lps) == len(answer) + 1
            assert all(len(row) == 3 for row in ids)


def test_the_machine_report_names_the_versions_that_set_the_speed() -> None:
    info = machine_info()
    assert {"cpu_count", "memory_gb", "python", "torch", "deepspeed", "transformers"} <= set(info)
    assert info["torch"] == package_version("torch") is not None
    assert package_version("no-such-package-at-all") is None
    load = load_1m()
    assert load is None or load >= 0
