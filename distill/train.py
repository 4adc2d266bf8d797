"""The distill job, one process per rank under the DeepSpeed launcher: train the student, save it, evaluate it."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from agents.evaluation import evaluate_skills
from agents.model import load_core
from agents.skills import load_skills
from distill.attribution import per_agent_metrics
from distill.checkpoint import COMMITTED, run_fingerprint, save_checkpoint, save_student, stale_checkpoint
from distill.data import load_data
from distill.manifest import DistillParams, load_manifest, resolve_ds_config
from distill.step import global_mean, load_previous_core, train_step
from distill.tracking import MlflowTracker, Tracker
from streams import durable

PROGRESS_EVERY = 10


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="distill.train", description=__doc__)
    parser.add_argument("--manifest", type=Path, required=True, help="the round's manifest JSON")
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


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Writes atomically and durably, so a reader never sees half a metrics file, even after a crash."""
    durable.write_text(path, json.dumps(payload, indent=2, sort_keys=True))


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    args = parse_args(argv)
    # Ranks share a few CPU cores; one thread each avoids oversubscription.
    torch.set_num_threads(1)
    manifest = load_manifest(args.manifest)
    params = manifest.distill
    ds_path = resolve_ds_config(args.ds_config or params.ds_config)
    skills = load_skills(manifest.skills)  # fail before training, not after it

    # deepspeed is imported here, not at module level: an agent process must start without it.
    import deepspeed

    deepspeed.init_distributed(dist_backend="gloo")
    rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
    is_main = rank == 0
    ds_config = load_ds_config(ds_path, params, world_size)
    micro = ds_config["train_micro_batch_size_per_gpu"]
    data = load_data(manifest, rank)

    student = load_core(manifest.base_core)
    student.train()
    previous = load_previous_core(manifest, data)
    engine, _, _, _ = deepspeed.initialize(model=student, model_parameters=student.parameters(), config=ds_config)

    out_dir = manifest.out_dir
    ckpt_dir = out_dir / "ckpt"
    tracker: Tracker = Tracker()
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        if manifest.mlflow is not None:
            tracker = MlflowTracker(manifest.mlflow)
        tracker.log_params(
            {
                "round_id": manifest.round_id,
                "world_size": world_size,
                "ds_config": ds_path.name,
                "zero_stage": engine.zero_optimization_stage(),
                "skills": ",".join(manifest.skills),
                "examples": data.report.kept,
                "replay_examples": len(data.replay),
                "agents": len(data.sampler.agents),
                **params.model_dump(),
            }
        )
        lineage = data.lineage
        if manifest.lineage is not None:
            tracker.log_params(
                {
                    "learnings": lineage["learnings"],
                    "after_seq": lineage["after_seq"],
                    "upto_seq": lineage["upto_seq"],
                    "learning_ids_sha256": lineage["learning_ids_sha256"],
                }
            )
        else:
            tracker.log_params({"learnings": lineage["learnings"]})
        write_json(out_dir / "lineage.json", lineage)
        (out_dir / "learning_ids.txt").write_text(data.learning_ids)
        tracker.log_artifact(out_dir / "lineage.json")
        tracker.log_artifact(out_dir / "learning_ids.txt")
        skipped = dict(data.report.skipped)
        print(f"distill: {data.report.kept} examples from {len(data.sampler.agents)} agents, skipped {skipped}")
        if data.report.teacher_skipped:
            print(f"distill: teacher_skipped {dict(data.report.teacher_skipped)}", flush=True)

    start_step, losses, tokens = 0, [], 0
    fingerprint = run_fingerprint(manifest, data, ds_path.name, world_size)
    if (ckpt_dir / COMMITTED).is_file():
        stale = stale_checkpoint(ckpt_dir, fingerprint)
        # Every rank has decided (on the same files) before rank 0 may remove them.
        torch.distributed.barrier()
        if stale is not None:
            if is_main:
                print(f"distill: discarding checkpoint {ckpt_dir}: {stale}; starting from step 0", flush=True)
                shutil.rmtree(ckpt_dir)
            torch.distributed.barrier()
        else:
            # Every rank loads its own shard; the client state carries the step and the history so far.
            _, client = engine.load_checkpoint(str(ckpt_dir), tag=(ckpt_dir / COMMITTED).read_text().strip())
            if client is not None:
                start_step, losses, tokens = client["step"], list(client["losses"]), client["tokens"]
                if is_main:
                    print(f"distill: resumed from {ckpt_dir} at step {start_step}", flush=True)

    train_started, tokens_at_start = time.perf_counter(), tokens
    for step in range(start_step, params.steps):
        parts, step_tokens = train_step(engine, previous, data, params, step, micro)
        means, step_tokens = global_mean(parts, step_tokens, world_size)
        losses.append(means["total"])
        tokens += step_tokens
        done = step + 1
        if is_main:
            lr = engine.get_lr()[0]
            step_metrics = {("loss" if k == "total" else f"loss_{k}"): v for k, v in means.items()}
            tracker.log_metrics(step_metrics | {"lr": lr}, done)
            if done % PROGRESS_EVERY == 0 or done == params.steps:
                # The hive parses exactly this line; keep its format.
                print(f"progress step={done}/{params.steps} loss={means['total']:.4f}", flush=True)
                tracker.flush()
        if params.checkpoint_every and done % params.checkpoint_every == 0 and done < params.steps:
            client_state = {"step": done, "losses": losses, "tokens": tokens}
            save_checkpoint(engine, ckpt_dir, done, client_state, rank, fingerprint)
    train_s = time.perf_counter() - train_started

    sha = save_student(engine, out_dir / "core", rank)
    # Every rank leaves the process group before it exits: a rank that exited with the group still up
    # sometimes aborted in teardown ("terminate called without an active exception", a joinable comm
    # thread destroyed), the launcher then killed rank 0 mid-evaluation, and the round failed.
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    if not is_main:
        return 0

    # The other ranks are done; evaluation decodes on rank 0 and may use their cores.
    torch.set_num_threads(max(1, min(world_size, os.cpu_count() or 1)))
    core = load_core(out_dir / "core")  # evaluate exactly what ships
    scores = evaluate_skills(core, skills, n=manifest.eval.tasks, seed=manifest.eval.seed)
    # The base core: retention already holds it; otherwise it is loaded only now that training is over.
    base = previous if previous is not None else load_core(manifest.base_core)
    per_agent = per_agent_metrics(data.examples, base, core, params.temperature)
    wall_s = time.perf_counter() - started
    metrics = {
        "round_id": manifest.round_id,
        "steps": params.steps,
        "losses": losses,
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "eval": scores,
        "sha256": sha,
        "tokens": tokens,
        "wall_s": wall_s,
        "train_s": train_s,
        # This process's trained tokens over its training time: saving, evaluation and resumed steps are not
        # throughput.
        "tokens_per_s": (tokens - tokens_at_start) / train_s if train_s > 0 else None,
        "world_size": world_size,
        "zero_stage": engine.zero_optimization_stage(),
        "learnings": data.lineage["learnings"],
        "examples": data.report.kept,
        "skipped": dict(data.report.skipped),
        "teacher_skipped": dict(data.report.teacher_skipped),
        "unusable": len(data.report.dropped),
        "per_agent": per_agent,
        "mlflow_run_id": tracker.run_id,
    }
    write_json(out_dir / "metrics.json", metrics)
    tracker.log_metrics({f"eval_{name}": acc for name, acc in scores.items()})
    tracker.log_metrics({f"teacher_skipped_{k}": n for k, n in data.report.teacher_skipped.items()})
    tracker.log_metrics({"final_loss": metrics["final_loss"] or 0.0, "tokens_per_s": metrics["tokens_per_s"] or 0.0})
    tracker.log_artifact(out_dir / "metrics.json")
    tracker.close()
    print(f"distill: done in {wall_s:.1f}s, eval {json.dumps(scores)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
