"""The distill job, one process per rank under the DeepSpeed launcher: train the student, save it, evaluate it."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from agents.evaluation import evaluate_skills
from agents.model import WEIGHTS_FILE, Batch, answer_logits, file_sha256, load_core, save_core
from agents.skills import load_skills
from distill.dataset import BalancedSampler, Example, LoadReport, build_examples, collate, read_learnings
from distill.lineage import learning_ids_text, round_lineage
from distill.losses import distill_loss, topk_forward_kl
from distill.manifest import DistillParams, Manifest, MlflowParams, load_manifest, resolve_ds_config
from distill.teachers import AdapterTeachers
from streams import durable
from streams.events import Learning

PROGRESS_EVERY = 10
# Replay draws use their own stream, so adding replay data never changes which learnings a step sees.
REPLAY_SEED_OFFSET = 1_000_003
LOSS_PARTS = ("total", "kd", "ce", "retention")
# Examples per agent scored for metrics.json's per_agent block: enough for a stable mean, cheap on rank 0.
PER_AGENT_EXAMPLES = 256
PER_AGENT_BATCH = 64
# Names the last checkpoint every rank finished writing (see save_checkpoint).
COMMITTED = "committed"
# What run the checkpoints in a ckpt directory belong to (see run_fingerprint).
FINGERPRINT = "fingerprint.json"
# The round's learnings the job did not train on, one JSON object per line; the hive quarantines them.
UNUSABLE = "unusable.jsonl"


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


class Tracker:
    """A no-op run: what every rank but 0 gets, and rank 0 when the manifest has no MLflow section."""

    run_id: str | None = None

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        pass

    def flush(self) -> None:
        pass

    def log_artifact(self, path: Path) -> None:
        pass

    def close(self) -> None:
        pass


class MlflowTracker(Tracker):
    """Rank 0's MLflow run; per-step metrics are buffered and written in batches, one per progress line."""

    def __init__(self, settings: MlflowParams) -> None:
        # mlflow is imported here, not at module level: an agent process must start without it.
        import mlflow
        from mlflow.tracking import MlflowClient

        self._mlflow = mlflow
        mlflow.set_tracking_uri(settings.tracking_uri)
        mlflow.set_experiment(settings.experiment)
        self._run = mlflow.start_run(run_name=settings.run_name)
        self.run_id = self._run.info.run_id
        self._client = MlflowClient(settings.tracking_uri)
        self._pending: list[Any] = []

    def log_params(self, params: dict[str, Any]) -> None:
        self._mlflow.log_params(params)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pending.extend(Metric(key, float(value), now, step or 0) for key, value in metrics.items())

    def flush(self) -> None:
        # log_batch takes at most 1000 metrics per call.
        while self._pending:
            chunk, self._pending = self._pending[:1000], self._pending[1000:]
            self._client.log_batch(self._run.info.run_id, metrics=chunk)

    def log_artifact(self, path: Path) -> None:
        self._mlflow.log_artifact(str(path))

    def close(self) -> None:
        self.flush()
        self._mlflow.end_run()


@dataclass
class Data:
    examples: list[Example]
    report: LoadReport
    sampler: BalancedSampler
    replay: list[Example]
    replay_sampler: BalancedSampler | None
    lineage: dict[str, Any]  # lineage.json
    learning_ids: str  # learning_ids.txt
    replay_ids: list[str] = field(default_factory=list)


def load_data(manifest: Manifest, rank: int) -> Data:
    """Reads the round's learnings (and replay) into examples; rank 0 writes ``unusable.jsonl`` first, so the
    learnings the job cannot use are listed even when that leaves it nothing to train on."""
    params = manifest.distill
    learnings = read_learnings(manifest.learnings)
    lineage = round_lineage(learnings, manifest.lineage)  # fails before training on a file that is not the range
    teachers = AdapterTeachers(params.topk, manifest.base_core, manifest.adapters.roots, manifest.adapters.max_bytes)
    examples, report = build_examples(learnings, teachers=teachers)
    if rank == 0:
        manifest.out_dir.mkdir(parents=True, exist_ok=True)
        write_unusable(manifest.out_dir / UNUSABLE, report)
        for uri, err in teachers.failures.items():
            print(f"distill: no teacher from claim check {uri}: {err.reason}: {err.detail}", flush=True)
    if not examples:
        raise ValueError(f"{manifest.learnings} holds no learning with a teacher signal or a verified answer")
    sampler = BalancedSampler([e.agent_id for e in examples], seed=params.seed, rank=rank)
    replay: list[Example] = []
    replay_learnings: list[Learning] = []
    replay_sampler = None
    if manifest.replay is not None:
        # Replay learnings keep teaching as they did in their own round: KD where they ship a signal, CE
        # where their answer is verified, so earlier skills stay trained, not only held in place. With
        # retention on, those with neither still serve the KL to the previous core. Their adapters are not
        # followed: an agent's specialist has usually moved on since, and would fail its old claim check.
        replay_learnings = read_learnings(manifest.replay)
        replay, _ = build_examples(replay_learnings, require_signal=params.retention_weight == 0)
        if replay:
            # Drawn per skill, not per agent: the hive sampled the replay set balanced per skill.
            replay_sampler = BalancedSampler(
                [e.skill for e in replay], seed=params.seed + REPLAY_SEED_OFFSET, rank=rank
            )
    return Data(
        examples,
        report,
        sampler,
        replay,
        replay_sampler,
        lineage,
        learning_ids_text(learnings),
        [str(learning.id) for learning in replay_learnings],
    )


def write_unusable(path: Path, report: LoadReport) -> None:
    """One ``{"id", "reason", "detail"}`` line per learning not trained on, written whole and durably."""
    durable.write_lines(
        path, [json.dumps({"id": d.id, "reason": d.reason, "detail": d.detail}, sort_keys=True) for d in report.dropped]
    )


def run_fingerprint(manifest: Manifest, data: Data, ds_config: str, world_size: int) -> dict[str, Any]:
    """What makes a checkpoint this run's: the learnings' and replay's ids in order, the distill parameters,
    the adapter settings, the DeepSpeed config, the world size and the base core's sha256.

    A checkpoint from a run with any other fingerprint is not resumed (see ``stale_checkpoint``).
    """
    parts: dict[str, Any] = {
        "learning_ids_sha256": hashlib.sha256(data.learning_ids.encode()).hexdigest(),
        "replay_ids_sha256": hashlib.sha256("\n".join(data.replay_ids).encode()).hexdigest(),
        # The timeout only bounds the run; it changes nothing it computes.
        "distill": manifest.distill.model_dump(mode="json", exclude={"timeout_s", "ds_config"}),
        "ds_config": ds_config,
        "adapters": manifest.adapters.model_dump(mode="json"),
        "world_size": world_size,
        "base_core_sha256": file_sha256(manifest.base_core / WEIGHTS_FILE),
    }
    parts["sha256"] = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    return parts


def stale_checkpoint(ckpt_dir: Path, fingerprint: dict[str, Any]) -> str | None:
    """Why the committed checkpoint in ``ckpt_dir`` is not this run's, or None when it is."""
    try:
        recorded = json.loads((ckpt_dir / FINGERPRINT).read_text())
    except FileNotFoundError:
        return f"it records no {FINGERPRINT}, so nothing says which run wrote it"
    except (OSError, ValueError) as err:
        return f"its {FINGERPRINT} cannot be read: {err}"
    if not isinstance(recorded, dict):
        return f"its {FINGERPRINT} is not a JSON object"
    if recorded.get("sha256") == fingerprint["sha256"]:
        return None
    differ = sorted(k for k in fingerprint if k != "sha256" and recorded.get(k) != fingerprint[k])
    return f"it was written for another run (differs in {', '.join(differ) or 'sha256'})"


def load_previous_core(manifest: Manifest, data: Data):
    """The frozen previous core that retention pulls towards, or None when the round has no retention."""
    if data.replay_sampler is None or manifest.distill.retention_weight <= 0:
        return None
    previous = load_core(manifest.base_core)
    previous.eval()  # the teacher runs in eval() under no_grad
    previous.requires_grad_(False)
    return previous


def train_step(engine, previous, data: Data, params: DistillParams, step: int, micro: int) -> tuple[dict, int]:
    """One optimizer step on this rank's micro batch; returns the loss parts and the tokens it trained on.

    New and replay rows share one forward pass and one KD and one CE mean, per position; the replay rows
    alone also carry the retention KL to the previous core.
    """
    examples = [data.examples[i] for i in data.sampler.batch(step, micro)]
    replay: list[Example] = []
    if data.replay_sampler is not None:
        replay = [data.replay[i] for i in data.replay_sampler.batch(step, micro)]
    tb = collate(examples + replay)
    logits = answer_logits(engine, tb.batch)[tb.positions]  # (P, V)
    kd, ce = tb.has_teacher, tb.verified
    inputs: dict[str, Any] = {
        "kd_logits": logits[kd],
        "teacher_ids": tb.teacher_ids[kd],
        "teacher_logprobs": tb.teacher_logprobs[kd],
        "ce_logits": logits[ce],
        "ce_targets": tb.targets[ce],
    }
    if previous is not None and replay:
        rows = slice(len(examples), None)
        replay_batch = Batch(tb.batch.input_ids[rows], tb.batch.attention_mask[rows], tb.batch.labels[rows])
        # Positions are flattened row by row, so the replay rows' positions are the last ones.
        inputs["replay_logits"] = logits[int(tb.positions[: len(examples)].sum()) :]
        # The previous core is a frozen reference: eval() and no_grad, as for any teacher.
        with torch.no_grad():
            inputs["previous_logits"] = answer_logits(previous, replay_batch)[tb.positions[rows]]
    tokens = tb.tokens
    total, parts = distill_loss(
        **inputs,
        temperature=params.temperature,
        kd_weight=params.kd_weight,
        ce_weight=params.ce_weight,
        retention_weight=params.retention_weight,
    )
    engine.backward(total)
    engine.step()
    return parts, tokens


def global_mean(parts: dict[str, float], tokens: int, world_size: int) -> tuple[dict[str, float], int]:
    """Averages the loss parts over ranks and sums the tokens, so rank 0 reports the whole step."""
    values = torch.tensor([parts[name] for name in LOSS_PARTS] + [float(tokens)], dtype=torch.float64)
    torch.distributed.all_reduce(values)
    means = {name: float(values[i]) / world_size for i, name in enumerate(LOSS_PARTS)}
    return means, int(values[-1])


def gathered_state_dict(engine) -> dict[str, torch.Tensor]:
    """A full copy of the student's weights; under ZeRO-3 every rank must call this (it gathers)."""
    # deepspeed is imported here, not at module level: an agent process must start without it.
    import deepspeed

    module = engine.module
    if engine.zero_optimization_stage() == 3:
        with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
            return {k: v.detach().clone() for k, v in module.state_dict().items()}
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def save_student(engine, directory: Path, rank: int) -> str | None:
    """Saves the student as a plain core (no DeepSpeed wrappers) on rank 0; returns its sha256 there."""
    state = gathered_state_dict(engine)
    if rank != 0:
        return None
    module = engine.module
    clean = type(module)(module.config)
    clean.load_state_dict(state)
    clean.eval()
    return save_core(clean, directory)


def save_checkpoint(
    engine, ckpt_dir: Path, step: int, client_state: dict[str, Any], rank: int, fingerprint: dict[str, Any]
) -> None:
    """Saves every rank's shard, then marks the checkpoint committed; every rank must call this.

    DeepSpeed's own ``latest`` is written by rank 0 before the closing barrier, so a kill can leave it naming a
    checkpoint another rank never finished. ``committed`` is written after that barrier, when all shards exist.
    """
    tag = f"global_step{step}"
    engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state=client_state)
    if rank == 0:
        # The fingerprint first: a committed checkpoint always says which run it belongs to.
        durable.write_text(ckpt_dir / FINGERPRINT, json.dumps(fingerprint, sort_keys=True))
        durable.write_text(ckpt_dir / COMMITTED, tag)


def _loss_sums(model, examples: list[Example], temperature: float) -> tuple[float, int, float, int]:
    """Summed top-k KD over the teacher positions and summed CE over the verified positions of rows that
    ship no teacher signal, with their position counts: ``(kd_sum, kd_n, ce_sum, ce_n)``."""
    kd_sum, kd_n, ce_sum, ce_n = 0.0, 0, 0.0, 0
    for start in range(0, len(examples), PER_AGENT_BATCH):
        tb = collate(examples[start : start + PER_AGENT_BATCH])
        with torch.no_grad():
            logits = answer_logits(model, tb.batch)[tb.positions]  # (P, V)
        kd = tb.has_teacher
        if bool(kd.any()):
            n = int(kd.sum())
            # The training loss itself (same function, same temperature); it returns a mean, so weight it back.
            loss = topk_forward_kl(logits[kd], tb.teacher_ids[kd], tb.teacher_logprobs[kd], temperature)
            kd_sum, kd_n = kd_sum + float(loss) * n, kd_n + n
        ce = tb.verified & ~tb.has_teacher
        if bool(ce.any()):
            n = int(ce.sum())
            loss = torch.nn.functional.cross_entropy(logits[ce].float(), tb.targets[ce], reduction="sum")
            ce_sum, ce_n = ce_sum + float(loss), ce_n + n
    return kd_sum, kd_n, ce_sum, ce_n


def per_agent_metrics(
    examples: list[Example], before, after, temperature: float, limit: int = PER_AGENT_EXAMPLES
) -> dict[str, dict[str, Any]]:
    """What each agent of the round contributed, for metrics.json's ``per_agent`` block.

    Per agent (the round's new learnings, not the replay): ``learnings``, its examples trained on;
    ``weight``, its expected share of the new-learning rows of every batch (BalancedSampler picks an agent
    uniformly, so 1 / agents); ``kd_before``/``kd_after``, the mean top-k KD loss per teacher position of the
    ``before`` (base) and ``after`` (trained) core over its first ``limit`` examples, None when none of them
    ships a teacher signal; ``ce_before``/``ce_after``, the mean cross-entropy over the verified answers of
    those examples that ship no signal (which train by CE instead), None when there are none; and
    ``kd_positions``/``ce_positions``, the positions each mean is over. Deterministic: the examples are taken
    in file order and both cores run in eval().
    """
    by_agent: dict[str, list[Example]] = {}
    for example in examples:
        by_agent.setdefault(example.agent_id, []).append(example)
    was_training = before.training, after.training
    before.eval()
    after.eval()
    result: dict[str, dict[str, Any]] = {}
    for agent in sorted(by_agent):
        chosen = by_agent[agent][:limit]
        kd_b, kd_n, ce_b, ce_n = _loss_sums(before, chosen, temperature)
        kd_a, _, ce_a, _ = _loss_sums(after, chosen, temperature)
        result[agent] = {
            "learnings": len(by_agent[agent]),
            "weight": 1.0 / len(by_agent),
            "scored": len(chosen),
            "kd_before": kd_b / kd_n if kd_n else None,
            "kd_after": kd_a / kd_n if kd_n else None,
            "kd_positions": kd_n,
            "ce_before": ce_b / ce_n if ce_n else None,
            "ce_after": ce_a / ce_n if ce_n else None,
            "ce_positions": ce_n,
        }
    before.train(was_training[0])
    after.train(was_training[1])
    return result


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
