"""The distill job's finish on rank 0: metrics.json holds the candidate's eval and the base core's, on the same
held-out tasks, and the tracker gets both."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from agents.evaluation import evaluate_skills
from agents.model import CoreSize, build_core, load_core, save_core
from distill.data import Data
from distill.dataset import BalancedSampler, Example, LoadReport
from distill.manifest import Manifest
from distill.report import METRICS
from distill.tracking import Tracker
from distill.train import Job, Trained, finish

SIZE = CoreSize(width=32, layers=1)
TASKS, SEED = 6, 123


class ByteSum:
    """A fake skill whose score depends on every byte a core answers, so two different cores score apart."""

    def __init__(self, name: str, modulus: int) -> None:
        self.name, self.modulus = name, modulus

    def sample(self, rng: random.Random) -> tuple[str, str]:
        return f"{self.name} {rng.randint(0, 999)}", "x"

    def score(self, prompt: str, answer: str, output: str) -> float:
        return sum(output.encode()) % self.modulus / (self.modulus - 1)


class RecordingTracker(Tracker):
    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}
        self.closed = False

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.metrics |= metrics

    def close(self) -> None:
        self.closed = True


class Engine:
    def zero_optimization_stage(self) -> int:
        return 2


@pytest.fixture(autouse=True)
def _threads():
    """finish() sets torch's thread count for rank 0's evaluation; the rest of the session keeps its own."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _job(tmp_path: Path, skills: list[Any], tracker: Tracker) -> Job:
    save_core(build_core(SIZE, seed=0), tmp_path / "base")
    save_core(build_core(SIZE, seed=1), tmp_path / "out" / "core")  # what the job trained and saved
    manifest = Manifest.model_validate(
        {
            "round_id": "r0001",
            "base_core": tmp_path / "base",
            "out_dir": tmp_path / "out",
            "learnings": tmp_path / "learnings.jsonl",
            "skills": [skill.name for skill in skills],
            "eval": {"tasks": TASKS, "seed": SEED},
        }
    )
    examples = [Example("add 1 2", "3", "agent-a", "add", verified=True)]
    data = Data(examples, LoadReport(kept=1), BalancedSampler(["agent-a"]), [], None, {"learnings": 1}, "id\n")
    return Job(manifest, skills, "zero2_cpu.yaml", data, Engine(), None, 0, 1, 1, tracker, trainable=1234)


def test_metrics_hold_the_base_cores_eval_on_the_same_held_out_tasks(tmp_path: Path) -> None:
    skills: list[Any] = [ByteSum("alpha", 7), ByteSum("beta", 11)]
    tracker = RecordingTracker()
    finish(_job(tmp_path, skills, tracker), Trained([2.0, 1.0], 10, 10, 1.0), "sha", time.perf_counter())

    metrics = json.loads((tmp_path / "out" / METRICS).read_text())
    base = evaluate_skills(load_core(tmp_path / "base"), skills, n=TASKS, seed=SEED)
    candidate = evaluate_skills(load_core(tmp_path / "out" / "core"), skills, n=TASKS, seed=SEED)
    assert set(metrics["base_eval"]) == set(metrics["eval"]) == {"alpha", "beta"}
    assert metrics["base_eval"] == base
    assert metrics["eval"] == candidate
    assert base != candidate  # the two cores answer differently, so the check above can tell them apart
    assert (metrics["tuning"], metrics["trainable_parameters"]) == ("full", 1234)
    assert {f"base_eval_{name}": acc for name, acc in base.items()}.items() <= tracker.metrics.items()
    assert {f"eval_{name}": acc for name, acc in candidate.items()}.items() <= tracker.metrics.items()
    assert tracker.closed
