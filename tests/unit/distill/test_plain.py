"""The plain PyTorch distill loop: it learns, draws the DeepSpeed run's global batch, and follows its schedule."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from agents.model import CoreSize, build_core, save_core
from agents.tokenizer import ByteTokenizer
from distill.dataset import BalancedSampler
from distill.manifest import CONFIGS_DIR, DistillParams, EvalParams, Manifest
from distill.plain import AllRanks, PlainEngine, train_plain, warmup_cosine
from distill.train import load_ds_config
from streams.events import TeacherSignal

from factories import make_learning

TOK = ByteTokenizer()


def _confident_teacher(answer: str, k: int = 4) -> TeacherSignal:
    """0.9 on the right next token, the rest spread over k - 1 others."""
    ids, lps = [], []
    for target in TOK.answer_ids(answer):
        ids.append([target, *((target + j) % 256 for j in range(1, k))])
        lps.append([math.log(0.9), *[math.log(0.1 / (k - 1))] * (k - 1)])
    return TeacherSignal(k=k, token_ids=ids, logprobs=lps)


def _manifest(root: Path, steps: int) -> Manifest:
    core = root / "core"
    save_core(build_core(CoreSize(width=32, layers=1), seed=0), core)
    words = ["abc", "hello", "xyz", "zorvia", "belmar", "quo"]
    learnings = [
        make_learning(
            f"agent-{i % 2}",
            "fake",
            prompt=f"rev {word}",
            completion=word[::-1],
            teacher=_confident_teacher(word[::-1]),
        )
        for i, word in enumerate(words)
    ]
    path = root / "learnings.jsonl"
    path.write_text("".join(item.model_dump_json() + "\n" for item in learnings))
    return Manifest(
        round_id="plain",
        base_core=core,
        out_dir=root / "out",
        learnings=path,
        skills=["add"],
        distill=DistillParams(nproc=2, steps=steps, batch_size=8, lr=3e-3, warmup_steps=2),
        eval=EvalParams(tasks=1),
    )


def test_the_plain_loop_lowers_the_loss(tmp_path: Path) -> None:
    metrics = train_plain(_manifest(tmp_path, steps=20), threads=1)
    losses = metrics["losses"]
    assert len(losses) == metrics["steps"] == 20
    assert all(math.isfinite(loss) for loss in losses)
    assert sum(losses[-5:]) / 5 < 0.8 * (sum(losses[:5]) / 5)
    assert metrics["tokens"] > 0
    assert metrics["tokens_per_s"] == pytest.approx(metrics["tokens"] / metrics["train_s"])
    assert metrics["threads"] == 1
    assert metrics["data_ranks"] == 2


def test_all_ranks_draws_what_the_ranks_draw_together() -> None:
    agents = ["a", "a", "b", "c", "c", "c"]
    merged = AllRanks(BalancedSampler(agents, seed=3, rank=0), ranks=2)
    assert merged.agents == ["a", "b", "c"]
    for step in range(5):
        rank0 = BalancedSampler(agents, seed=3, rank=0).batch(step, 4)
        rank1 = BalancedSampler(agents, seed=3, rank=1).batch(step, 4)
        assert merged.batch(step, 8) == rank0 + rank1
    with pytest.raises(ValueError, match="split"):
        merged.batch(0, 7)


def test_the_schedule_matches_deepspeeds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    from deepspeed.runtime import lr_schedules  # the test extra installs deepspeed: a missing one must fail

    params = {"total_num_steps": 50, "warmup_num_steps": 7, "warmup_min_ratio": 0.01, "cos_min_ratio": 0.1}
    for warmup_type in ("linear", "log"):
        ds_opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
        ds = lr_schedules.WarmupCosineLR(ds_opt, warmup_type=warmup_type, **params)
        factor = warmup_cosine(warmup_type=warmup_type, **params)
        # As the engine does: train at the current lr, then step the schedule; past the end it stays flat.
        for step in range(60):
            assert ds_opt.param_groups[0]["lr"] == pytest.approx(0.5 * factor(step), abs=1e-12), (warmup_type, step)
            ds.step()


def test_the_engine_takes_the_configs_optimizer_schedule_and_clipping() -> None:
    params = DistillParams(batch_size=8, lr=1e-3, steps=10, warmup_steps=2)
    config = load_ds_config(CONFIGS_DIR / "zero2_cpu.yaml", params, world_size=2)
    model = torch.nn.Linear(3, 1)
    engine = PlainEngine.from_ds_config(model, config)
    group = engine.optimizer.param_groups[0]
    assert isinstance(engine.optimizer, torch.optim.AdamW)
    assert group["betas"] == (0.9, 0.95)
    assert group["weight_decay"] == 0.01
    assert engine.get_lr() == [0.0]  # DeepSpeed's first step trains at lr 0 too
    assert engine.gradient_clipping == 1.0
    engine.backward((model(torch.ones(2, 3)) * 1e6).sum())
    before = model.weight.detach().clone()
    engine.step()
    assert torch.equal(model.weight, before * (1 - 0.0 * 0.01))  # lr 0: nothing moves
    assert model.weight.grad is None
    assert engine.get_lr()[0] == pytest.approx(1e-3 * 0.01)


def test_an_optimizer_the_loop_does_not_know_is_refused() -> None:
    with pytest.raises(ValueError, match="AdamW"):
        PlainEngine.from_ds_config(torch.nn.Linear(1, 1), {"optimizer": {"type": "Lamb", "params": {"lr": 1e-3}}})
