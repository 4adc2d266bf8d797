"""The distill benchmark's synthetic round: a manifest the distill job accepts, with k=16 signals for every skill."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.data import load_data
from distill.manifest import load_manifest
from hive.bench.distill_bench import DistillBenchPlan, build_round, summary_line


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


def test_the_summary_names_both_rates_and_the_ratio() -> None:
    report = {
        "deepspeed": {"tokens_per_s": 6512.4, "zero_stage": 2, "nproc": 2, "steps": 200},
        "plain": {"tokens_per_s": 5480.9, "threads": 1},
        "ratio": 1.188,
    }
    line = summary_line(report)
    assert "deepspeed 6,512 tokens/s (ZeRO-2, 2 ranks)" in line
    assert "plain 5,481 tokens/s (1 thread)" in line
    assert "ratio 1.19" in line
