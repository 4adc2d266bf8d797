"""The distill job, one process per rank under the DeepSpeed launcher: train the student, save it, evaluate it."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from agents.evaluation import evaluate_skills
from agents.lora import resolve_tuning
from agents.model import load_core
from agents.skills import load_skills
from distill.attribution import per_agent_metrics
from distill.checkpoint import resume, run_fingerprint, save_checkpoint, save_student
from distill.data import Data, load_data, screen_data
from distill.manifest import MANIFEST_MARKER, DistillParams, Manifest, load_manifest, resolve_ds_config
from distill.report import close_run, open_run
from distill.rows import rows_per_skill
from distill.step import global_mean, train_step
from distill.student import AdapterOff, load_previous_core, load_student, trainable_parameters
from distill.tracking import Tracker

PROGRESS_EVERY = 10


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="distill.train", description=__doc__)
    parser.add_argument(
        "--manifest",
        type=Path,
        action="append",
        required=True,
        help="a round's manifest JSON; repeat it to train several rounds in turn in the same ranks",
    )
    parser.add_argument("--ds-config", default=None, help="DeepSpeed YAML; overrides the manifest's ds_config")
    # The DeepSpeed launcher passes --local_rank=N to every process; the rank itself comes from the env.
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0)
    return parser.parse_args(argv)


def load_ds_config(path: Path, params: DistillParams, world_size: int) -> dict[str, Any]:
    """Reads a DeepSpeed YAML and overrides batch sizes, lr and schedule lengths from the manifest."""
    if params.batch_size % world_size:
        raise ValueError(f"batch_size {params.batch_size} does not split evenly over {world_size} ranks")
    config = yaml.safe_load(path.read_text())
    if not isinstance(config, dict):
        raise ValueError(f"{path} does not hold a DeepSpeed config mapping")
    config["train_batch_size"] = params.batch_size
    config["train_micro_batch_size_per_gpu"] = params.batch_size // world_size
    config["gradient_accumulation_steps"] = 1
    config.setdefault("optimizer", {"type": "AdamW", "params": {"torch_adam": True}})
    config["optimizer"].setdefault("params", {})["lr"] = params.lr
    scheduler = config.get("scheduler")
    if scheduler is not None:
        sched_params = scheduler.setdefault("params", {})
        sched_params["total_num_steps"] = params.steps
        # DeepSpeed's warmup schedulers refuse zero warmup steps.
        sched_params["warmup_num_steps"] = max(1, params.warmup_steps)
        if "warmup_max_lr" in sched_params:
            sched_params["warmup_max_lr"] = params.lr
    return config


@dataclass
class Job:
    """One rank's run, set up: what it trains on, the DeepSpeed engine, and where rank 0 reports."""

    manifest: Manifest
    skills: list[Any]
    ds_config: str  # the DeepSpeed config's file name
    data: Data
    engine: Any
    previous: Any  # what retention pulls towards (distill.student.load_previous_core), or None
    rank: int
    world_size: int
    micro: int  # this rank's examples per step
    tracker: Tracker
    trainable: int  # the parameters the optimizer steps: the whole core, or a LoRA student's adapter


@dataclass
class Trained:
    """What the step loop left: every step's loss and the tokens (resumed steps included), and the tokens and
    seconds this process itself trained for."""

    losses: list[float]
    tokens: int
    tokens_trained: int
    train_s: float


def main(argv: list[str] | None = None) -> int:
    """Trains, saves and evaluates each manifest's round in turn. Rounds after the first reuse the ranks, their
    imports and their process group: a launch costs about 15 s on two CPU cores, a tiny round 20 s of training."""
    args = parse_args(argv)
    last = len(args.manifest) - 1
    for i, manifest_path in enumerate(args.manifest):
        started = time.perf_counter()
        job = setup(manifest_path, args.ds_config)
        if job.rank == 0:
            print(f"{MANIFEST_MARKER}{manifest_path.resolve()}", flush=True)
        trained = train(job)
        sha = save_student(job.engine, job.manifest.out_dir / "core", job.rank, job.manifest.base_core)
        torch.distributed.barrier()
        if i == last:
            # Every rank leaves the process group before it exits: a rank that exited with the group still up
            # sometimes aborted in teardown ("terminate called without an active exception", a joinable comm
            # thread destroyed), the launcher then killed rank 0 mid-evaluation, and the round failed.
            torch.distributed.destroy_process_group()
        if job.rank == 0:
            finish(job, trained, sha, started)
        if i < last:
            # The other ranks wait here while rank 0 evaluates; then the next round starts from a clean slate.
            torch.distributed.barrier()
            job.engine.destroy()
            # Dropped before the next round loads its own student: a pretrained core twice over need not fit.
            del job, trained
    return 0


def setup(manifest_path: Path, ds_config_name: str | None = None) -> Job:
    """Joins the process group (once per process), loads the round's data and the student into a DeepSpeed
    engine; rank 0 opens the run's tracking. ``ds_config_name`` overrides the manifest's DeepSpeed config."""
    # Ranks share a few CPU cores; one thread each avoids oversubscription (rank 0's evaluation of an earlier
    # round raised it).
    torch.set_num_threads(1)
    manifest = load_manifest(manifest_path)
    ds_path = resolve_ds_config(ds_config_name or manifest.distill.ds_config)
    skills = load_skills(manifest.skills)  # fail before training, not after it

    # deepspeed is imported here, not at module level: an agent process must start without it.
    import deepspeed

    deepspeed.init_distributed(dist_backend="gloo")
    rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
    ds_config = load_ds_config(ds_path, manifest.distill, world_size)
    data = load_data(manifest, rank)

    student = load_student(manifest, data.codec)
    data = screen_data(data, student, skills, manifest, rank)
    previous = load_previous_core(manifest, data, student)
    # Only what trains goes to the optimizer: a LoRA student's frozen base stays in the model, unoptimized.
    trainable = trainable_parameters(student)
    trainable_count = sum(p.numel() for p in trainable)  # counted now: ZeRO-3 partitions the tensors
    engine, _, _, _ = deepspeed.initialize(model=student, model_parameters=trainable, config=ds_config)
    tracker = Tracker()
    if rank == 0:
        tracker = open_run(manifest, data, world_size, ds_path.name, engine.zero_optimization_stage())
    micro = ds_config["train_micro_batch_size_per_gpu"]
    return Job(
        manifest, skills, ds_path.name, data, engine, previous, rank, world_size, micro, tracker, trainable_count
    )


def train(job: Job) -> Trained:
    """Runs the steps from the last checkpoint of this run (or step 0) to the end, checkpointing on the way."""
    params, engine = job.manifest.distill, job.engine
    ckpt_dir = job.manifest.out_dir / "ckpt"
    fingerprint = run_fingerprint(job.manifest, job.data, job.ds_config, job.world_size)
    client = resume(engine, ckpt_dir, fingerprint, job.rank)
    start_step, losses, tokens = (client["step"], list(client["losses"]), client["tokens"]) if client else (0, [], 0)

    started, tokens_at_start = time.perf_counter(), tokens
    for step in range(start_step, params.steps):
        parts, step_tokens = train_step(engine, job.previous, job.data, params, step, job.micro)
        means, step_tokens = global_mean(parts, step_tokens, job.world_size)
        losses.append(means["total"])
        tokens += step_tokens
        done = step + 1
        if job.rank == 0:
            lr = engine.get_lr()[0]
            step_metrics = {("loss" if k == "total" else f"loss_{k}"): v for k, v in means.items()}
            job.tracker.log_metrics(step_metrics | {"lr": lr}, done)
            if done % PROGRESS_EVERY == 0 or done == params.steps:
                # The hive parses exactly this line; keep its format.
                print(f"progress step={done}/{params.steps} loss={means['total']:.4f}", flush=True)
                job.tracker.flush()
        if params.checkpoint_every and done % params.checkpoint_every == 0 and done < params.steps:
            client_state = {"step": done, "losses": losses, "tokens": tokens}
            save_checkpoint(engine, ckpt_dir, done, client_state, job.rank, fingerprint)
    return Trained(losses, tokens, tokens - tokens_at_start, time.perf_counter() - started)


def finish(job: Job, trained: Trained, sha: str | None, started: float) -> None:
    """Rank 0, once the other ranks are gone: evaluates the saved core and the base core on the same held-out
    tasks, attributes the round per agent, and writes metrics.json."""
    manifest, data, losses = job.manifest, job.data, trained.losses
    # The other ranks are done; evaluation decodes on rank 0 and may use their cores.
    torch.set_num_threads(max(1, min(job.world_size, os.cpu_count() or 1)))
    core = load_core(manifest.out_dir / "core")  # evaluate exactly what ships
    scores = evaluate_skills(core, job.skills, n=manifest.eval.tasks, seed=manifest.eval.seed, codec=data.codec)
    # The base core: a full round's retention already holds it; otherwise (no retention, or a LoRA student's own
    # base) it is loaded only now that training is over.
    retained = job.previous is not None and not isinstance(job.previous, AdapterOff)
    base = job.previous if retained else load_core(manifest.base_core)
    # The same held-out tasks for the core the round started from, so the hive's gate compares two metric
    # dicts and never loads a model itself.
    base_scores = evaluate_skills(base, job.skills, n=manifest.eval.tasks, seed=manifest.eval.seed, codec=data.codec)
    per_agent = per_agent_metrics(data.examples, base, core, manifest.distill.temperature, data.codec)
    wall_s = time.perf_counter() - started
    metrics = {
        "round_id": manifest.round_id,
        "steps": manifest.distill.steps,
        "losses": losses,
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "eval": scores,
        "base_eval": base_scores,
        "sha256": sha,
        "tokens": trained.tokens,
        "wall_s": wall_s,
        "train_s": trained.train_s,
        # This process's trained tokens over its training time: saving, evaluation and resumed steps are not
        # throughput.
        "tokens_per_s": trained.tokens_trained / trained.train_s if trained.train_s > 0 else None,
        "world_size": job.world_size,
        "zero_stage": job.engine.zero_optimization_stage(),
        "tuning": resolve_tuning(manifest.distill.tuning, data.codec),
        "trainable_parameters": job.trainable,
        "learnings": data.lineage["learnings"],
        "rows_per_skill": rows_per_skill(data, manifest.distill.steps, job.micro, job.world_size),
        "examples": data.report.kept,
        "skipped": dict(data.report.skipped),
        "teacher_skipped": dict(data.report.teacher_skipped),
        "unusable": len(data.report.dropped),
        "per_agent": per_agent,
        "screen": data.screen,
        "mlflow_run_id": job.tracker.run_id,
    }
    close_run(job.tracker, manifest.out_dir, metrics)
    print(f"distill: done in {wall_s:.1f}s, eval {json.dumps(scores)}, base {json.dumps(base_scores)}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
