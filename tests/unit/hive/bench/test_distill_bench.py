"""The distill benchmark: a synthetic round the distill job accepts, in the tokens of the model it is run on,
the model found as HIVE_MODEL__PATH is, and the FLOP arithmetic that holds each arm against the CPU's peak."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.codec import load_codec
from agents.core_files import CoreDirError
from agents.model import build_core, load_core, save_core
from distill.data import load_data
from distill.manifest import load_manifest, read_learnings
from hive.bench.distill_bench import (
    PRETRAINED_DEFAULTS,
    TINY_DEFAULTS,
    DistillBenchPlan,
    build_round,
    core_parameters,
    fraction_of_peak,
    run_distill_bench,
    summary_line,
    train_flops_per_s,
    with_flops,
)
from hive.cores.pretrained import ModelSourceError

from tiny_hf import make_hf_core


def test_the_round_is_one_the_distill_job_loads(tmp_path: Path) -> None:
    stale = tmp_path / "round" / "out" / "metrics.json"
    stale.parent.mkdir(parents=True)
    stale.write_text("{}")
    plan = DistillBenchPlan(steps=7, nproc=2, batch_size=8, learnings=30, k=16)
    manifest = load_manifest(build_round(tmp_path, plan))
    assert not stale.exists(), "a stale metrics file would pass for this run's"
    assert (manifest.distill.steps, manifest.distill.nproc, manifest.distill.batch_size) == (7, 2, 8)
    assert manifest.mlflow is None
    data = load_data(manifest, rank=0)
    assert data.report.kept == 30
    assert sorted({e.skill for e in data.examples}) == ["add", "capital", "morse"]
    assert len(data.sampler.agents) == 3
    assert all(e.teacher_ids is not None and len(e.teacher_ids[0]) == 16 for e in data.examples)
    assert all(e.verified for e in data.examples)


def test_a_batch_that_does_not_split_over_the_ranks_is_refused() -> None:
    with pytest.raises(ValueError, match="split"):
        DistillBenchPlan(nproc=3, batch_size=64)


def test_the_plain_loop_defaults_to_one_thread_per_rank() -> None:
    assert DistillBenchPlan(nproc=2).threads == 2
    assert DistillBenchPlan(nproc=2, plain_threads=1).threads == 1


def test_the_summary_names_both_rates_the_ratio_and_the_fractions_of_peak() -> None:
    report = {
        "deepspeed": {"tokens_per_s": 6512.4, "zero_stage": 2, "nproc": 2, "steps": 200, "fraction_of_peak": 0.2231},
        "plain": {"tokens_per_s": 5480.9, "threads": 1, "fraction_of_peak": 0.3456},
        "ratio": 1.188,
        "model": {"name": "tiny", "parameters": 1_118_976},
        "peak_matmul": [{"threads": 1, "flops_per_s": 101.4e9}, {"threads": 2, "flops_per_s": 197.2e9}],
    }
    line = summary_line(report)
    assert "distill tiny (1,118,976 parameters)" in line
    assert "deepspeed 6,512 tokens/s (ZeRO-2, 2 ranks) = 22% of peak" in line
    assert "plain 5,481 tokens/s (1 thread) = 35% of peak" in line
    assert "ratio 1.19" in line
    assert "101 GFLOP/s on 1 thread, 197 GFLOP/s on 2 threads" in line


def test_training_flops_are_six_per_parameter_per_token() -> None:
    # SmolLM2-135M at 100 tokens/s: 6 x 134,515,008 x 100 = 80.7 GFLOP/s, 41% of a 197 GFLOP/s peak.
    flops = train_flops_per_s(134_515_008, 100.0)
    assert flops == 6 * 134_515_008 * 100.0
    assert fraction_of_peak(flops, 197e9) == pytest.approx(0.4097, abs=1e-4)
    with pytest.raises(ValueError, match="peak"):
        fraction_of_peak(flops, 0.0)


def test_each_arm_is_held_against_the_peak_on_its_own_threads() -> None:
    peak = {"threads": 2, "flops_per_s": 2e11}
    arm = with_flops({"tokens_per_s": 10_000.0, "steps": 5}, 1_000_000, peak)
    assert arm["steps"] == 5, "what the arm reported stays"
    assert arm["model_flops_per_s"] == 6e10
    assert arm["fraction_of_peak"] == pytest.approx(0.3)
    assert (arm["peak_threads"], arm["peak_flops_per_s"]) == (2, 2e11)
    nothing = with_flops({"tokens_per_s": None}, 1_000_000, peak)
    assert nothing["model_flops_per_s"] is None and nothing["fraction_of_peak"] is None


def test_the_parameter_count_is_the_models_own_tied_weights_counted_once(tmp_path: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    tiny = build_core(seed=0)
    save_core(tiny, tmp_path / "tiny")
    assert core_parameters(tmp_path / "tiny") == tiny.num_parameters() == sum(p.numel() for p in tiny.parameters())
    counts = {}
    for tie in (True, False):
        config = LlamaConfig(
            vocab_size=300,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            tie_word_embeddings=tie,
        )
        model = LlamaForCausalLM(config)
        save_core(model, tmp_path / f"tie-{tie}")
        counts[tie] = core_parameters(tmp_path / f"tie-{tie}")
        assert counts[tie] == sum(p.numel() for p in model.parameters())
    # A tied embedding is the output layer too (as in SmolLM2): one 300 x 32 matrix, counted once.
    assert counts[False] - counts[True] == 300 * 32


def test_a_pretrained_model_defaults_to_a_short_gentle_run_and_tiny_to_the_old_one() -> None:
    tiny = DistillBenchPlan.for_model("tiny")
    assert (tiny.steps, tiny.batch_size, tiny.lr, tiny.learnings) == (200, 64, 3e-3, 600)
    assert tiny.warmup_steps == 20
    smol = DistillBenchPlan.for_model("smollm2-135m")
    local = DistillBenchPlan.for_model("/any/local/core")
    assert (local.steps, local.batch_size, local.lr) == (smol.steps, smol.batch_size, smol.lr)
    assert (smol.steps, smol.batch_size, smol.learnings) == (
        PRETRAINED_DEFAULTS.steps,
        PRETRAINED_DEFAULTS.batch_size,
        PRETRAINED_DEFAULTS.learnings,
    )
    assert smol.lr <= TINY_DEFAULTS.lr / 30, "pretrained weights are tuned far more gently than random ones"
    assert smol.steps < tiny.steps and smol.batch_size < tiny.batch_size
    assert 1 <= smol.warmup_steps < smol.steps
    given = DistillBenchPlan.for_model("smollm2-135m", steps=5, batch_size=4, lr=1e-4)
    assert (given.steps, given.batch_size, given.lr) == (5, 4, 1e-4)


def test_distill_params_pass_through_to_the_manifest_and_a_wrong_one_is_refused(tmp_path: Path) -> None:
    plan = DistillBenchPlan(steps=3, nproc=1, batch_size=4, learnings=6, k=4, distill_params={"temperature": 2.0})
    manifest = load_manifest(build_round(tmp_path, plan))
    assert manifest.distill.temperature == 2.0
    assert (manifest.distill.lr, manifest.distill.warmup_steps) == (plan.lr, 1)
    with pytest.raises(ValueError, match="not distill parameters: temprature"):
        DistillBenchPlan(distill_params={"temprature": 2.0})
    with pytest.raises(ValueError, match="bench's own options"):
        DistillBenchPlan(distill_params={"steps": 10})


def test_a_local_core_is_the_round_base_and_its_signals_are_in_its_tokens(tmp_path: Path) -> None:
    core_dir = make_hf_core(tmp_path / "hf-core")
    before = {p.name: p.read_bytes() for p in core_dir.iterdir()}
    plan = DistillBenchPlan(steps=3, nproc=2, batch_size=4, learnings=12, k=5, model=str(core_dir))
    manifest = load_manifest(build_round(tmp_path / "bench", plan, source=core_dir))
    assert manifest.base_core == core_dir.resolve(), "the plain arm and the DeepSpeed arm load this very model"
    assert not (tmp_path / "bench" / "core_v0").exists()
    codec = load_codec(core_dir)
    learnings = read_learnings(manifest.learnings)
    assert len(learnings) == 12
    for learning in learnings:
        teacher = learning.teacher
        assert teacher is not None and teacher.k == 5
        assert teacher.tokenizer == codec.fingerprint
        # One position per answer token plus the end of the turn, in the model's ids, not the byte codec's.
        assert len(teacher.token_ids) == len(codec.answer_ids(learning.completion))
        assert all(0 <= i < codec.vocab_size for row in teacher.token_ids for i in row)
    data = load_data(manifest, rank=0)
    assert data.codec.fingerprint == codec.fingerprint
    assert data.report.kept == 12 and not data.report.teacher_skipped, "the job keeps every signal"
    assert all(e.teacher_ids is not None for e in data.examples)
    assert {p.name: p.read_bytes() for p in core_dir.iterdir()} == before, "the model's directory is only read"
    assert core_parameters(core_dir) == load_core(core_dir).num_parameters()


def test_the_tiny_cores_signals_name_no_tokenizer(tmp_path: Path) -> None:
    plan = DistillBenchPlan(steps=3, nproc=1, batch_size=4, learnings=3, k=4)
    manifest = load_manifest(build_round(tmp_path, plan))
    assert manifest.base_core == (tmp_path / "core_v0").resolve()
    # None is the byte tokenizer's name in a teacher signal (streams.events.TeacherSignal).
    assert all(
        learning.teacher and learning.teacher.tokenizer is None for learning in read_learnings(manifest.learnings)
    )


def test_a_model_that_cannot_be_found_fails_before_anything_is_built(tmp_path: Path) -> None:
    directory = tmp_path / "bench"

    def run(model: str) -> None:
        run_distill_bench(directory, DistillBenchPlan(model=model), lambda _: None, model_cache=tmp_path / "cache")

    with pytest.raises(ModelSourceError, match="hive model prepare smollm2-135m"):
        run("smollm2-135m")
    with pytest.raises(ModelSourceError, match="neither a built-in model"):
        run(str(tmp_path / "no-such-core"))
    pickled = make_hf_core(tmp_path / "pickled")
    (pickled / "pytorch_model.bin").write_bytes(b"not safetensors")
    with pytest.raises(CoreDirError, match=r"pytorch_model\.bin"):
        run(str(pickled))
    assert not directory.exists()
