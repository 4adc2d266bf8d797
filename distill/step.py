"""One optimizer step of the distill job and its loss averaged over ranks."""

from __future__ import annotations

from typing import Any

import torch

from agents.model import Batch, position_logits
from distill.data import Data
from distill.dataset import Example, collate
from distill.losses import distill_loss
from distill.manifest import DistillParams

LOSS_PARTS = ("total", "kd", "ce", "retention")


def train_step(engine, previous, data: Data, params: DistillParams, step: int, micro: int) -> tuple[dict, int]:
    """One optimizer step on this rank's micro batch; returns the loss parts and the tokens it trained on.

    New and replay rows share one forward pass and one KD and one CE mean, per position; the replay rows
    alone also carry the retention KL to ``previous`` (``distill.student.load_previous_core``: a frozen copy
    of the previous core, or the LoRA student itself with its adapter off), or to nothing when it is None.
    """
    examples = [data.examples[i] for i in data.sampler.batch(step, micro)]
    replay: list[Example] = []
    if data.replay_sampler is not None:
        replay = [data.replay[i] for i in data.replay_sampler.batch(step, micro)]
    tb = collate(examples + replay, data.codec)
    logits = position_logits(engine, tb.batch, tb.positions)  # (P, V)
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
            inputs["previous_logits"] = position_logits(previous, replay_batch, tb.positions[rows])
    tokens = tb.tokens
    total, parts = distill_loss(
        **inputs,
        temperature=params.temperature,
        kd_residual=params.kd_residual,
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
