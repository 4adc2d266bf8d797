"""--tune picks the core's replay size and continual lr on validation prompts only, and records the sweep."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hive.bench import fleet_arms, fleet_seed
from hive.bench.fleet import FleetBenchPlan
from hive.bench.fleet_arms import VALIDATION_SEED, CoreStart
from hive.bench.fleet_seed import Curriculum, RoundsRun


def _course(workdir: Path) -> Curriculum:
    return Curriculum(seed=0, groups=[["s"]], learnings_of={}, spec_of={}, core0_dir=workdir, workdir=workdir)


def test_the_sweep_reads_validation_only_and_keeps_the_best_pair(monkeypatch, tmp_path: Path) -> None:
    trained: list[tuple[str, int, float]] = []
    calls: list[int] = []
    evaluated: list[dict[str, Any]] = []
    # Validation accuracy the fake rounds "reach" per pair: (4096, 1e-3) is best; (1024, 1e-3) ties (4096, 3e-4).
    quality = {
        (1024, 3e-4): 0.2,
        (1024, 1e-3): 0.5,
        (1024, 3e-3): 0.4,
        (4096, 3e-4): 0.5,
        (4096, 1e-3): 0.9,
        (4096, 3e-3): 0.3,
    }

    def fake_rounds(trajectories, plan, course, phase):
        calls.append(len(trajectories))
        trained.extend((t.label, t.distill.replay_size, t.distill.continual_lr) for t in trajectories)
        # Each trajectory's "final core" is its pair, which the fake evaluation scores.
        return {t.label: RoundsRun((t.distill.replay_size, t.distill.continual_lr)) for t in trajectories}

    def fake_evaluate(model, skills, n, seed=None, split="test", codec=None, **_):
        evaluated.append({"n": n, "seed": seed, "split": split})
        return {"s": quality[model]}

    monkeypatch.setattr(fleet_seed, "_rounds", fake_rounds)
    monkeypatch.setattr(fleet_seed, "load_core", lambda pair: pair)
    monkeypatch.setattr(fleet_arms, "evaluate_skills", fake_evaluate)
    plan = FleetBenchPlan(skills=["s"], val_tasks=50)
    start = CoreStart(None, tmp_path)  # type: ignore[arg-type]
    tuning = fleet_seed._tune_on_validation(plan, _course(tmp_path), [object()], start, print)

    assert tuning["chosen"] == {"replay_size": 4096, "continual_lr": 1e-3}
    assert [(p["replay_size"], p["continual_lr"], p["mean"]) for p in tuning["sweep"]] == [
        (1024, 3e-4, 0.2),
        (1024, 1e-3, 0.5),
        (1024, 3e-3, 0.4),
        (4096, 3e-4, 0.5),
        (4096, 1e-3, 0.9),
        (4096, 3e-3, 0.3),
    ]
    assert calls == [6]  # every pair of the grid trains side by side: one launch per round
    assert trained == [
        ("tune_replay1024_lr0.0003", 1024, 3e-4),
        ("tune_replay1024_lr0.001", 1024, 1e-3),
        ("tune_replay1024_lr0.003", 1024, 3e-3),
        ("tune_replay4096_lr0.0003", 4096, 3e-4),
        ("tune_replay4096_lr0.001", 4096, 1e-3),
        ("tune_replay4096_lr0.003", 4096, 3e-3),
    ]
    # Never a test prompt: every score the choice read came from the validation split and its own seed.
    assert evaluated and all(e == {"n": 50, "seed": VALIDATION_SEED, "split": "validation"} for e in evaluated)


def test_equal_validation_scores_keep_the_earlier_pair(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(fleet_seed, "_rounds", lambda ts, *a: {t.label: RoundsRun(tmp_path) for t in ts})
    monkeypatch.setattr(fleet_seed, "load_core", lambda d: d)
    monkeypatch.setattr(fleet_arms, "evaluate_skills", lambda *a, **k: {"s": 0.5})
    plan = FleetBenchPlan(skills=["s"], replay_grid=(512, 2048), continual_lr_grid=(1e-3,))
    start = CoreStart(None, tmp_path)  # type: ignore[arg-type]
    chosen = fleet_seed._tune_on_validation(plan, _course(tmp_path), [object()], start, print)["chosen"]
    assert chosen == {"replay_size": 512, "continual_lr": 1e-3}
