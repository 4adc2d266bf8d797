"""The distill job as a plain PyTorch loop in one process: the baseline that ``hive bench distill`` compares with."""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from agents.skills import load_skills
from distill.data import load_data, screen_data
from distill.dataset import BalancedSampler
from distill.manifest import Manifest, load_manifest, resolve_ds_config
from distill.report import write_json
from distill.step import train_step
from distill.student import load_previous_core, load_student, trainable_parameters
from distill.train import load_ds_config

# The keys of a DeepSpeed optimizer section that select an implementation rather than being AdamW arguments.
DS_ONLY_OPTIMIZER_KEYS = ("torch_adam", "adam_w_mode", "fp32_optimizer_states")


class AllRanks(BalancedSampler):
    """The global batch of a ``ranks``-process data-parallel run, drawn in one process.

    Rank r of a DeepSpeed run draws ``size // ranks`` items from the sampler built with ``rank=r``; this
    sampler concatenates those draws in rank order, so the plain loop trains on exactly the examples the
    DeepSpeed run trains on at every step. It wraps a sampler the job built, whatever it groups by.
    """

    def __init__(self, sampler: BalancedSampler, ranks: int) -> None:
        # The same groups, seed and agents as the wrapped sampler; only the rank differs between its twins.
        vars(self).update(vars(sampler))
        self._twins = []
        for rank in range(ranks):
            twin = copy.copy(sampler)
            twin.rank = rank
            self._twins.append(twin)

    def batch(self, step: int, size: int) -> list[int]:
        if size % len(self._twins):
            raise ValueError(f"batch size {size} does not split evenly over {len(self._twins)} ranks")
        micro = size // len(self._twins)
        return [i for twin in self._twins for i in twin.batch(step, micro)]


def warmup_cosine(
    total_num_steps: int,
    warmup_num_steps: int = 1000,
    warmup_min_ratio: float = 0.0,
    cos_min_ratio: float = 1e-4,
    warmup_type: str = "log",
) -> Callable[[int], float]:
    """DeepSpeed's ``WarmupCosineLR`` as a ``LambdaLR`` factor of the number of optimizer steps taken.

    DeepSpeed sets the lr to 0 when it builds the scheduler and steps the scheduler after each optimizer
    step, so step 0 trains at lr 0 and step n at DeepSpeed's ratio for iteration n - 1.
    """
    warmup = max(2, warmup_num_steps)
    if warmup_type not in ("log", "linear"):
        raise ValueError(f"unknown warmup_type {warmup_type!r}: DeepSpeed knows 'log' and 'linear'")

    def factor(step: int) -> float:
        iteration = step - 1
        if iteration < 0:
            return 0.0
        if iteration < warmup:
            rise = math.log(iteration + 1) / math.log(warmup) if warmup_type == "log" else iteration / warmup
            return warmup_min_ratio + rise * (1.0 - warmup_min_ratio)
        progress = min(1.0, (iteration - warmup + 1) / max(1, total_num_steps - warmup))
        return max(0.0, cos_min_ratio + (1.0 - cos_min_ratio) * (1 + math.cos(math.pi * progress)) / 2)

    return factor


class PlainEngine:
    """The part of DeepSpeed's engine that ``distill.step.train_step`` uses, over a plain module.

    ``step()`` does what DeepSpeed's does for an fp32 run: clip the gradient norm, step the optimizer,
    step the lr schedule, zero the gradients.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None,
        gradient_clipping: float,
    ) -> None:
        self.module = module
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.gradient_clipping = gradient_clipping

    @classmethod
    def from_ds_config(cls, module: torch.nn.Module, config: dict[str, Any]) -> PlainEngine:
        """The optimizer, schedule and clipping a DeepSpeed config asks for, in plain PyTorch.

        Supports what distill/configs/ use: AdamW (``torch_adam``), an optional ``WarmupCosineLR``, and
        ``gradient_clipping``; anything else is refused rather than silently trained differently.
        """
        section = config.get("optimizer", {})
        if section.get("type", "AdamW").lower() != "adamw":
            raise ValueError(f"the plain loop supports the AdamW optimizer only, not {section.get('type')!r}")
        kwargs = {k: v for k, v in section.get("params", {}).items() if k not in DS_ONLY_OPTIMIZER_KEYS}
        if "betas" in kwargs:
            kwargs["betas"] = tuple(kwargs["betas"])
        # Only what trains: a LoRA student's frozen base is not the optimizer's, as in distill.train.
        optimizer = torch.optim.AdamW(trainable_parameters(module), **kwargs)
        scheduler = None
        sched = config.get("scheduler")
        if sched is not None:
            if sched.get("type") != "WarmupCosineLR":
                raise ValueError(f"the plain loop supports the WarmupCosineLR schedule only, not {sched.get('type')!r}")
            params = dict(sched.get("params", {}))
            params.pop("last_batch_iteration", None)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(**params))
        return cls(module, optimizer, scheduler, float(config.get("gradient_clipping", 0.0)))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def step(self) -> None:
        if self.gradient_clipping > 0:
            torch.nn.utils.clip_grad_norm_(trainable_parameters(self.module), self.gradient_clipping)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def get_lr(self) -> list[float]:
        return [float(group["lr"]) for group in self.optimizer.param_groups]


def train_plain(manifest: Manifest, threads: int, ds_config: Path | str | None = None) -> dict[str, Any]:
    """Trains the round's student for the manifest's steps in this process and returns its metrics.

    Everything but the process layout matches ``distill.train``: the same student, the global batch of the
    manifest's ``nproc`` ranks (``AllRanks``), the same collate and ``distill_loss`` via the same
    ``train_step``, and the optimizer, lr schedule and clipping of the same DeepSpeed config. One
    difference remains: this loop averages each loss part over the whole batch's positions, where a
    DeepSpeed run averages per-rank means. ``tokens_per_s`` is timed as in ``distill.train``: the step loop
    only, without loading, saving or evaluation.
    """
    torch.set_num_threads(threads)
    params = manifest.distill
    ranks = params.nproc
    config = load_ds_config(resolve_ds_config(str(ds_config or params.ds_config)), params, world_size=ranks)
    data = load_data(manifest, rank=0)
    student = load_student(manifest, data.codec)
    data = screen_data(data, student, load_skills(manifest.skills), manifest, rank=0)
    data.sampler = AllRanks(data.sampler, ranks)
    if data.replay_sampler is not None:
        data.replay_sampler = AllRanks(data.replay_sampler, ranks)
    previous = load_previous_core(manifest, data, student)
    engine = PlainEngine.from_ds_config(student, config)

    losses: list[float] = []
    tokens = 0
    train_started = time.perf_counter()
    for step in range(params.steps):
        parts, step_tokens = train_step(engine, previous, data, params, step, params.batch_size)
        losses.append(parts["total"])
        tokens += step_tokens
    train_s = time.perf_counter() - train_started
    return {
        "steps": params.steps,
        "losses": losses,
        "first_loss": losses[0],
        "final_loss": losses[-1],
        "tokens": tokens,
        "train_s": train_s,
        "tokens_per_s": tokens / train_s if train_s > 0 else None,
        "threads": threads,
        "data_ranks": ranks,
        "examples": data.report.kept,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="distill.plain", description=__doc__)
    parser.add_argument("--manifest", type=Path, required=True, help="the round's manifest JSON")
    parser.add_argument("--out", type=Path, required=True, help="where to write the metrics JSON")
    parser.add_argument("--threads", type=int, default=None, help="torch threads; default: the manifest's nproc")
    parser.add_argument("--ds-config", default=None, help="DeepSpeed YAML to take the optimizer and schedule from")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    args = parse_args(argv)
    manifest = load_manifest(args.manifest)
    metrics = train_plain(manifest, args.threads or manifest.distill.nproc, args.ds_config)
    metrics["wall_s"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, metrics)
    print(f"plain: {metrics['steps']} steps, {metrics['tokens_per_s']:.0f} tokens/s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
