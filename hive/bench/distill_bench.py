"""``hive bench distill``: DeepSpeed's distill step against a plain PyTorch loop, on one synthetic round."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agents.model import build_core, save_core
from agents.skills import BUILTIN_SKILLS
from distill.manifest import DistillParams, EvalParams, Manifest, write_learnings
from hive.bench.machine import load_1m, machine_info
from hive.bench.synthetic import core_signals, learning_id, synthetic_learning
from streams.events import Learning, TeacherSignal

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
ROUND_ID = "bench"
# Both arms skip what is not throughput, but the DeepSpeed job still evaluates its core on rank 0.
EVAL_TASKS = 10
TAIL_LINES = 40
Say = Callable[[str], None]


class BenchError(RuntimeError):
    """An arm of the benchmark failed; the message carries the tail of its log."""


@dataclass(frozen=True)
class DistillBenchPlan:
    """One synthetic round and how both arms train on it."""

    steps: int = 200
    nproc: int = 2
    batch_size: int = 64
    learnings: int = 600
    k: int = 16
    skills: tuple[str, ...] = field(default=("capital", "morse", "add"))
    ds_config: str = "zero2_cpu.yaml"
    # The plain loop's torch threads; None gives it as many as the DeepSpeed arm has ranks (one thread each).
    plain_threads: int | None = None
    seed: int = 0
    timeout_s: int = 900

    @property
    def threads(self) -> int:
        return self.plain_threads or self.nproc

    def __post_init__(self) -> None:
        if self.steps < 1 or self.nproc < 1 or self.learnings < len(self.skills):
            raise ValueError("steps and nproc must be positive, and every skill needs a learning")
        if self.plain_threads is not None and self.plain_threads < 1:
            raise ValueError("--plain-threads must be positive")
        if self.batch_size % self.nproc:
            raise ValueError(f"--batch-size {self.batch_size} does not split evenly over {self.nproc} ranks")


def synthetic_learnings(plan: DistillBenchPlan, core: Any) -> list[Learning]:
    """``plan.learnings`` verified learnings, one agent per skill, each with the core's own top-k signal.

    The teacher is core v0 itself: what it teaches is noise, but the tensors have the shapes and sizes of
    a real round's, which is all that throughput depends on.
    """
    rng = random.Random(plan.seed)
    per_skill = plan.learnings // len(plan.skills)
    learnings: list[Learning] = []
    for number, name in enumerate(plan.skills, start=1):
        skill = BUILTIN_SKILLS[name]
        tasks = [skill.sample(rng) for _ in range(per_skill)]  # type: ignore[attr-defined]
        signals = core_signals(core, [p for p, _ in tasks], [a for _, a in tasks], plan.k, chunk=128)
        for (prompt, answer), (ids, lps) in zip(tasks, signals, strict=True):
            teacher = TeacherSignal(k=plan.k, token_ids=ids, logprobs=lps)
            learnings.append(
                synthetic_learning(learning_id(rng), f"agent-{number}", name, prompt, answer, teacher=teacher)
            )
    return learnings


def build_round(directory: Path, plan: DistillBenchPlan) -> Path:
    """Writes core v0, the learnings and a manifest under ``directory``; returns the manifest's path.

    Earlier results under ``directory`` are removed first, so neither arm can resume or read a stale file.
    """
    directory = directory.resolve()
    for stale in ("round", "plain"):
        if (directory / stale).exists():
            shutil.rmtree(directory / stale)
    directory.mkdir(parents=True, exist_ok=True)
    core = build_core(seed=plan.seed)
    save_core(core, directory / "core_v0")
    learnings = directory / "learnings.jsonl"
    write_learnings(learnings, synthetic_learnings(plan, core))
    manifest = Manifest(
        round_id=ROUND_ID,
        base_core=directory / "core_v0",
        out_dir=directory / "round" / "out",
        learnings=learnings,
        skills=list(plan.skills),
        distill=DistillParams(
            nproc=plan.nproc,
            steps=plan.steps,
            batch_size=plan.batch_size,
            ds_config=plan.ds_config,
            seed=plan.seed,
            timeout_s=plan.timeout_s,
            # Both arms time the same step loop; the plain arm writes no checkpoints, so neither does this one.
            checkpoint_every=0,
        ),
        eval=EvalParams(tasks=EVAL_TASKS),
    )
    path = directory / "manifest.json"
    path.write_text(manifest.model_dump_json(indent=2))
    return path


def arm_report(metrics: dict[str, Any], started: float, load_before: float | None, **arm: Any) -> dict[str, Any]:
    """What both arms report from their job's metrics, timed from ``started``; ``arm`` (what only this arm has)
    follows ``steps``."""
    return {
        "tokens_per_s": metrics["tokens_per_s"],
        "steps": metrics["steps"],
        **arm,
        "tokens": metrics["tokens"],
        "train_s": metrics["train_s"],
        "wall_s": time.perf_counter() - started,
        "first_loss": metrics["first_loss"],
        "final_loss": metrics["final_loss"],
        "load_1m_before": load_before,
        "load_1m_after": load_1m(),
    }


def run_deepspeed_arm(manifest_path: Path, plan: DistillBenchPlan, say: Say) -> dict[str, Any]:
    """The real round job under the DeepSpeed launcher, ``plan.nproc`` CPU ranks; no MLflow."""
    # The launcher module is light; the ranks it starts import DeepSpeed, this process never does.
    from distill.launch import DistillError, launch_job

    def progress(step: int, total: int, loss: float) -> None:
        if step % 50 == 0 or step == total:
            say(f"deepspeed: step {step}/{total} loss {loss:.4f}")

    load = load_1m()
    started = time.perf_counter()
    try:
        metrics = launch_job(manifest_path, nproc=plan.nproc, on_progress=progress, timeout_s=plan.timeout_s)
    except DistillError as err:
        raise BenchError(f"the DeepSpeed arm failed: {err}") from err
    return arm_report(
        metrics, started, load, nproc=metrics["world_size"], zero_stage=metrics["zero_stage"], ds_config=plan.ds_config
    )


def run_plain_arm(manifest_path: Path, plan: DistillBenchPlan, say: Say) -> dict[str, Any]:
    """``distill.plain`` in a fresh process, as each DeepSpeed rank is, with ``plan.threads`` torch threads."""
    out_dir = manifest_path.parent / "plain"
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = out_dir / "metrics.json"
    command = [
        sys.executable,
        "-m",
        "distill.plain",
        "--manifest",
        str(manifest_path),
        "--out",
        str(metrics_path),
        "--threads",
        str(plan.threads),
    ]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p)
    say(f"plain: {plan.steps} steps in one process with {plan.threads} torch thread(s)")
    load = load_1m()
    started = time.perf_counter()
    log_path = out_dir / "plain.log"
    with log_path.open("w") as log:
        try:
            proc = subprocess.run(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=plan.timeout_s, check=False
            )
        except subprocess.TimeoutExpired as err:
            raise BenchError(f"the plain arm timed out after {plan.timeout_s}s; see {log_path}") from err
    if proc.returncode != 0:
        with log_path.open() as log:
            tail = "".join(deque(log, maxlen=TAIL_LINES))
        raise BenchError(f"the plain arm exited with code {proc.returncode}:\n{tail}")
    metrics = json.loads(metrics_path.read_text())
    return arm_report(metrics, started, load, threads=metrics["threads"])


def run_distill_bench(directory: Path, plan: DistillBenchPlan, say: Say) -> dict[str, Any]:
    """Builds the round under ``directory``, runs the DeepSpeed arm, then the plain arm, and reports both.

    ``ratio`` is DeepSpeed's tokens/s over the plain loop's; both count the same tokens (the same examples
    at every step) and time only their step loops.
    """
    say(f"building a synthetic round under {directory}: {plan.learnings} learnings, k={plan.k}")
    manifest_path = build_round(directory, plan)
    say(f"deepspeed: {plan.steps} steps on {plan.nproc} ranks with {plan.ds_config}")
    deepspeed_arm = run_deepspeed_arm(manifest_path, plan, say)
    plain_arm = run_plain_arm(manifest_path, plan, say)
    return {
        "deepspeed": deepspeed_arm,
        "plain": plain_arm,
        "ratio": deepspeed_arm["tokens_per_s"] / plain_arm["tokens_per_s"],
        "batch_size": plan.batch_size,
        "learnings": plan.learnings,
        "machine": machine_info(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def summary_line(report: dict[str, Any]) -> str:
    ds, plain = report["deepspeed"], report["plain"]
    threads = f"{plain['threads']} thread" + ("s" if plain["threads"] != 1 else "")
    return (
        f"distill: deepspeed {ds['tokens_per_s']:,.0f} tokens/s (ZeRO-{ds['zero_stage']}, {ds['nproc']} ranks), "
        f"plain {plain['tokens_per_s']:,.0f} tokens/s ({threads}), "
        f"ratio {report['ratio']:.2f}, {ds['steps']} steps"
    )
