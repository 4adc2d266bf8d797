"""The benchmarks' shared synthetic learnings and machine report: seeded, signed when asked, one signal per answer
in the core's own tokens, and the CPU's peak matmul rate."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import pytest
import torch

from agents.codec import BYTE_CODEC, load_codec
from agents.model import build_core, load_core
from hive.bench.machine import load_1m, machine_info, matmul_flops, package_version, peak_matmul
from hive.bench.synthetic import (
    SIGNAL_MAX_CHUNK,
    agent_key,
    core_signals,
    core_teacher_signals,
    learning_id,
    payload,
    signal_chunk,
    synthetic_learning,
)
from streams.codec import decode
from streams.events import Feedback, Learning
from streams.signing import verify

from tiny_hf import make_hf_core

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


def test_teacher_signals_are_in_the_cores_codec_and_name_its_tokenizer(tmp_path: Path) -> None:
    directory = make_hf_core(tmp_path / "hf-core")
    core, codec = load_core(directory), load_codec(directory)
    prompts, answers = ["the capital of zorvia?", "add 12 30"], ["belmar", "42"]
    signals = list(core_teacher_signals(core, codec, prompts, answers, k=4))
    assert [s.tokenizer for s in signals] == [codec.fingerprint] * 2
    for answer, signal in zip(answers, signals, strict=True):
        # The BPE's positions, not one per byte: "belmar" is fewer tokens than bytes in this tokenizer.
        assert len(signal.token_ids) == len(codec.answer_ids(answer))
        assert all(0 <= i < codec.vocab_size for row in signal.token_ids for i in row)
    assert len(signals[0].token_ids) != len(answers[0]) + 1
    tiny = list(core_teacher_signals(build_core(seed=0), BYTE_CODEC, ["1+1="], ["2"], k=3))
    assert tiny[0].tokenizer is None, "None names the byte tokenizer in a teacher signal"


def test_a_large_vocabulary_takes_fewer_examples_per_forward_pass() -> None:
    class Vocab:
        def __init__(self, size: int) -> None:
            self.vocab_size = size

    assert signal_chunk(BYTE_CODEC) == SIGNAL_MAX_CHUNK
    smollm2 = signal_chunk(Vocab(49_152))  # type: ignore[arg-type]
    assert 1 < smollm2 < SIGNAL_MAX_CHUNK
    assert signal_chunk(Vocab(10**9)) == 1  # type: ignore[arg-type]


def test_a_matmul_of_n_square_matrices_is_2n3_flops() -> None:
    assert matmul_flops(1) == 2
    assert matmul_flops(2048) == 17_179_869_184


def test_the_peak_is_the_median_of_the_timed_runs_on_the_threads_asked_for() -> None:
    before = torch.get_num_threads()
    asked = before + 1
    threads_seen: list[int] = []
    # Three timed runs of 1 s, 3 s and 2 s; a warm-up run that read the clock would exhaust it.
    ticks = iter([0.0, 1.0, 10.0, 13.0, 20.0, 22.0])

    def clock() -> float:
        threads_seen.append(torch.get_num_threads())
        return next(ticks)

    peak = peak_matmul(asked, size=8, warmup=2, repeats=3, clock=clock)
    assert peak["median_s"] == 2.0
    assert peak["flops_per_s"] == matmul_flops(8) / 2.0
    assert (peak["threads"], peak["dtype"], peak["size"]) == (asked, "float32", 8)
    assert set(threads_seen) == {asked}
    assert torch.get_num_threads() == before, "the caller's thread count is restored"


def test_a_peak_needs_at_least_one_thread_and_one_run() -> None:
    with pytest.raises(ValueError, match="positive"):
        peak_matmul(0)
    with pytest.raises(ValueError, match="positive"):
        peak_matmul(1, repeats=0)
