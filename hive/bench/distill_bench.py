"""``hive bench distill``: DeepSpeed's distill step against a plain PyTorch loop, on one synthetic round."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agents.codec import Codec, load_codec
from agents.model import build_core, load_core, save_core
from agents.skills import BUILTIN_SKILLS
from agents.skills.splits import sample_tasks
from distill.manifest import DistillParams, EvalParams, Manifest, write_learnings
from hive.bench.machine import load_1m, machine_info, peak_matmul
from hive.bench.synthetic import core_teacher_signals, learning_id, synthetic_learning
from hive.cores.pretrained import TINY, core_source
from streams.events import Learning

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
ROUND_ID = "bench"
# Both arms skip what is not throughput, but the DeepSpeed job still evaluates its core on rank 0.
EVAL_TASKS = 10
TAIL_LINES = 40
# Training FLOPs per parameter per token: 2 in the forward pass, 4 in the backward (Kaplan et al., 2020).
FLOPS_PER_PARAMETER_TOKEN = 6
# Warm-up steps of the lr schedule: a tenth of the steps, at most the hive's 20.
MAX_WARMUP_STEPS = 20
# DistillParams fields the bench sets itself; ``DistillBenchPlan.distill_params`` may set any other.
PLAN_FIELDS = frozenset(
    {"nproc", "steps", "batch_size", "lr", "warmup_steps", "ds_config", "seed", "timeout_s", "checkpoint_every"}
)
Say = Callable[[str], None]


@dataclass(frozen=True)
class ModelDefaults:
    """What a bench on one kind of model trains with unless told otherwise."""

    steps: int
    batch_size: int
    lr: float
    learnings: int


# The tiny core's: what `hive bench distill` has always run (docs/benchmarks.md), at the hive's own lr.
TINY_DEFAULTS = ModelDefaults(steps=200, batch_size=64, lr=3e-3, learnings=600)
# Any pretrained model. Sized for SmolLM2-135M on 2 cores: full fine-tuning at 40% of this CPU's fp32 matmul peak
# (about 197 GFLOP/s) is 6 x 134.5 M x 100 tokens/s, and a row through its chat template is about 50 tokens, so
# 30 steps of 8 rows take about 2 min per arm, and the whole bench (loading, signals, saving, the DeepSpeed job's
# evaluation) should end within about 10 min: an estimate, not a measurement. Pretrained weights are tuned about
# 100 times more gently than the tiny core's random ones: 3e-3 would wreck them within a few steps.
PRETRAINED_DEFAULTS = ModelDefaults(steps=30, batch_size=8, lr=3e-5, learnings=96)


def model_defaults(model: str) -> ModelDefaults:
    """The defaults for ``--model``: the tiny core's for ``tiny``, the pretrained ones for any other model."""
    return TINY_DEFAULTS if model == TINY else PRETRAINED_DEFAULTS


class BenchError(RuntimeError):
    """An arm of the benchmark failed; the message carries the tail of its log."""


@dataclass(frozen=True)
class DistillBenchPlan:
    """One synthetic round and how both arms train on it.

    ``model`` is resolved as ``HIVE_MODEL__PATH`` is (``hive.cores.pretrained.core_source``); ``for_model`` fills
    in its defaults. ``distill_params`` are further ``DistillParams`` fields, passed through to the round's
    manifest, and so to both arms, as given: ``{"tuning": "lora"}`` once the job has that field.
    """

    steps: int = TINY_DEFAULTS.steps
    nproc: int = 2
    batch_size: int = TINY_DEFAULTS.batch_size
    learnings: int = TINY_DEFAULTS.learnings
    k: int = 16
    skills: tuple[str, ...] = field(default=("capital", "morse", "add"))
    ds_config: str = "zero2_cpu.yaml"
    # The plain loop's torch threads; None gives it as many as the DeepSpeed arm has ranks (one thread each).
    plain_threads: int | None = None
    seed: int = 0
    timeout_s: int = 900
    model: str = TINY
    lr: float = TINY_DEFAULTS.lr
    distill_params: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def for_model(
        cls,
        model: str,
        steps: int | None = None,
        batch_size: int | None = None,
        lr: float | None = None,
        learnings: int | None = None,
        **rest: Any,
    ) -> DistillBenchPlan:
        """A plan for ``model`` with its defaults (``model_defaults``) for every option given as None."""
        defaults = model_defaults(model)
        return cls(
            model=model,
            steps=defaults.steps if steps is None else steps,
            batch_size=defaults.batch_size if batch_size is None else batch_size,
            lr=defaults.lr if lr is None else lr,
            learnings=defaults.learnings if learnings is None else learnings,
            **rest,
        )

    @property
    def threads(self) -> int:
        return self.plain_threads or self.nproc

    @property
    def warmup_steps(self) -> int:
        return min(MAX_WARMUP_STEPS, max(1, self.steps // 10))

    def __post_init__(self) -> None:
        if self.steps < 1 or self.nproc < 1 or self.learnings < len(self.skills):
            raise ValueError("steps and nproc must be positive, and every skill needs a learning")
        if self.plain_threads is not None and self.plain_threads < 1:
            raise ValueError("--plain-threads must be positive")
        if self.batch_size % self.nproc:
            raise ValueError(f"--batch-size {self.batch_size} does not split evenly over {self.nproc} ranks")
        if self.lr <= 0:
            raise ValueError(f"--lr must be positive, got {self.lr}")
        unknown = set(self.distill_params) - set(DistillParams.model_fields)
        if unknown:
            # The manifest ignores fields it does not know: a misspelt one would be dropped without a word.
            raise ValueError(f"not distill parameters: {', '.join(sorted(unknown))}")
        owned = set(self.distill_params) & PLAN_FIELDS
        if owned:
            raise ValueError(f"set by the bench's own options, not distill_params: {', '.join(sorted(owned))}")


def synthetic_learnings(plan: DistillBenchPlan, core: Any, codec: Codec) -> list[Learning]:
    """``plan.learnings`` verified learnings, one agent per skill, each with the core's own top-k signal in the
    ids of ``codec``, the core's, and naming its tokenizer.

    The teacher is core v0 itself: what it teaches is noise, but the tensors have the shapes and sizes of
    a real round's, which is all that throughput depends on.
    """
    rng = random.Random(plan.seed)
    per_skill = plan.learnings // len(plan.skills)
    learnings: list[Learning] = []
    for number, name in enumerate(plan.skills, start=1):
        skill = BUILTIN_SKILLS[name]
        tasks = sample_tasks(skill, rng, "train", per_skill)
        signals = core_teacher_signals(core, codec, [p for p, _ in tasks], [a for _, a in tasks], plan.k)
        for (prompt, answer), teacher in zip(tasks, signals, strict=True):
            learnings.append(
                synthetic_learning(learning_id(rng), f"agent-{number}", name, prompt, answer, teacher=teacher)
            )
    return learnings


def build_round(directory: Path, plan: DistillBenchPlan, source: Path | None = None) -> Path:
    """Writes the learnings and a manifest under ``directory``; returns the manifest's path.

    ``source`` is where ``core_source(plan.model, ...)`` found the model: None builds the tiny core into
    ``directory/core_v0``; a directory is core v0 as it is, read and never written, so a 540 MB model is not
    copied. Earlier results under ``directory`` are removed first, so neither arm can resume or read a stale file.
    """
    directory = directory.resolve()
    for stale in ("round", "plain", "core_v0"):
        if (directory / stale).exists():
            shutil.rmtree(directory / stale)
    directory.mkdir(parents=True, exist_ok=True)
    if source is None:
        base_core = directory / "core_v0"
        core = build_core(seed=plan.seed)
        save_core(core, base_core)
    else:
        base_core = source.resolve()
        core = load_core(base_core)
    learnings = directory / "learnings.jsonl"
    write_learnings(learnings, synthetic_learnings(plan, core, load_codec(base_core)))
    manifest = Manifest(
        round_id=ROUND_ID,
        base_core=base_core,
        out_dir=directory / "round" / "out",
        learnings=learnings,
        skills=list(plan.skills),
        distill=DistillParams(
            **plan.distill_params,
            nproc=plan.nproc,
            steps=plan.steps,
            batch_size=plan.batch_size,
            lr=plan.lr,
            warmup_steps=plan.warmup_steps,
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


def core_parameters(directory: Path) -> int:
    """The parameters of the core in ``directory``, counted from its safetensors headers without loading it.

    A tied weight is saved once, so this is the model's own count (``sum(p.numel() for p in
    model.parameters())``): 134,515,008 for SmolLM2-135M, whose embedding is its output layer too.
    """
    from safetensors import safe_open  # comes with transformers, which the bench loads anyway

    total = 0
    for path in sorted(directory.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as weights:
            total += sum(math.prod(weights.get_slice(name).get_shape()) for name in weights.keys())  # noqa: SIM118
    return total


def train_flops_per_s(parameters: int, tokens_per_s: float) -> float:
    """The model FLOP/s of training at ``tokens_per_s``: 6 x ``parameters`` x tokens/s.

    The usual estimate of a dense transformer's matmul work, attention's own products left out. The tokens are
    those the job counts (every non-padding token of a row), so compute spent on padding shows as a lower
    fraction of peak, not as more FLOPs.
    """
    return FLOPS_PER_PARAMETER_TOKEN * parameters * tokens_per_s


def fraction_of_peak(flops_per_s: float, peak_flops_per_s: float) -> float:
    if peak_flops_per_s <= 0:
        raise ValueError(f"a peak of {peak_flops_per_s} FLOP/s cannot be measured against")
    return flops_per_s / peak_flops_per_s


def with_flops(arm: dict[str, Any], parameters: int, peak: dict[str, Any]) -> dict[str, Any]:
    """``arm``'s report plus its model FLOP/s and their fraction of ``peak``, the peak on as many threads."""
    tokens_per_s = arm["tokens_per_s"]
    flops = None if tokens_per_s is None else train_flops_per_s(parameters, tokens_per_s)
    return arm | {
        "model_flops_per_s": flops,
        "peak_flops_per_s": peak["flops_per_s"],
        "peak_threads": peak["threads"],
        "fraction_of_peak": None if flops is None else fraction_of_peak(flops, peak["flops_per_s"]),
    }


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
        # A pretrained model's few slow steps are all worth a line; the tiny core's hundreds are not.
        if step % 50 == 0 or step == total or total <= 100:
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


def run_distill_bench(directory: Path, plan: DistillBenchPlan, say: Say, model_cache: Path) -> dict[str, Any]:
    """Builds the round under ``directory``, measures the CPU's peak matmul rate, runs the DeepSpeed arm, then
    the plain arm, and reports both.

    ``plan.model`` is found as ``HIVE_MODEL__PATH`` is, built-in models in ``model_cache``; a model that is not
    prepared or not a loadable core raises ModelSourceError or CoreDirError before anything is built.
    ``ratio`` is DeepSpeed's tokens/s over the plain loop's; both count the same tokens (the same examples
    at every step) and time only their step loops. Each arm's ``fraction_of_peak`` holds its model FLOP/s
    (``train_flops_per_s`` of every parameter of the model) against the peak on as many threads as it has.
    """
    source = core_source(plan.model, model_cache)
    say(f"building a synthetic round of {plan.model} under {directory}: {plan.learnings} learnings, k={plan.k}")
    manifest_path = build_round(directory, plan, source)
    base_core = Manifest.model_validate_json(manifest_path.read_text()).base_core
    parameters = core_parameters(base_core)
    # Measured once per thread count, before either arm: the DeepSpeed arm has nproc ranks of one thread each.
    peaks = {threads: peak_matmul(threads) for threads in sorted({plan.nproc, plan.threads})}
    for peak in peaks.values():
        say(
            f"peak: {peak['flops_per_s'] / 1e9:,.1f} GFLOP/s, fp32 {peak['size']}-square matmul on "
            f"{peak['threads']} thread(s)"
        )
    say(f"deepspeed: {plan.steps} steps on {plan.nproc} ranks with {plan.ds_config}")
    deepspeed_arm = with_flops(run_deepspeed_arm(manifest_path, plan, say), parameters, peaks[plan.nproc])
    plain_arm = with_flops(run_plain_arm(manifest_path, plan, say), parameters, peaks[plan.threads])
    return {
        "deepspeed": deepspeed_arm,
        "plain": plain_arm,
        "ratio": deepspeed_arm["tokens_per_s"] / plain_arm["tokens_per_s"],
        "model": {
            "name": plan.model,
            "directory": str(base_core),
            "parameters": parameters,
            "tokenizer": load_codec(base_core).fingerprint,
        },
        # What model_flops_per_s counts: every parameter, trainable or not, as the estimate does.
        "flops_estimate": f"{FLOPS_PER_PARAMETER_TOKEN} x parameters x tokens/s",
        "flops_parameters": "total",
        "peak_matmul": list(peaks.values()),
        "batch_size": plan.batch_size,
        "lr": plan.lr,
        "learnings": plan.learnings,
        "distill_params": dict(plan.distill_params),
        "machine": machine_info(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _percent(fraction: float | None) -> str:
    return "n/a" if fraction is None else f"{fraction:.0%}"


def summary_line(report: dict[str, Any]) -> str:
    ds, plain, model = report["deepspeed"], report["plain"], report["model"]
    threads = f"{plain['threads']} thread" + ("s" if plain["threads"] != 1 else "")
    peaks = ", ".join(
        f"{peak['flops_per_s'] / 1e9:,.0f} GFLOP/s on {peak['threads']} thread{'s' if peak['threads'] != 1 else ''}"
        for peak in report["peak_matmul"]
    )
    return (
        f"distill {model['name']} ({model['parameters']:,} parameters): "
        f"deepspeed {ds['tokens_per_s']:,.0f} tokens/s (ZeRO-{ds['zero_stage']}, {ds['nproc']} ranks) "
        f"= {_percent(ds['fraction_of_peak'])} of peak, "
        f"plain {plain['tokens_per_s']:,.0f} tokens/s ({threads}) = {_percent(plain['fraction_of_peak'])} of peak, "
        f"ratio {report['ratio']:.2f}, {ds['steps']} steps; peak fp32 matmul {peaks}"
    )
