"""Per-agent attribution: what each agent's learnings did to the KD and CE losses, for metrics.json."""

from __future__ import annotations

from typing import Any

import torch

from agents.codec import Codec
from agents.model import position_logits
from distill.dataset import Example, collate
from distill.losses import topk_forward_kl

# Examples per agent scored for metrics.json's per_agent block: enough for a stable mean, cheap on rank 0.
PER_AGENT_EXAMPLES = 256
PER_AGENT_BATCH = 64


def _loss_sums(model, examples: list[Example], temperature: float, codec: Codec) -> tuple[float, int, float, int]:
    """Summed top-k KD over the teacher positions and summed CE over the verified positions of rows that
    ship no teacher signal, with their position counts: ``(kd_sum, kd_n, ce_sum, ce_n)``."""
    kd_sum, kd_n, ce_sum, ce_n = 0.0, 0, 0.0, 0
    for start in range(0, len(examples), PER_AGENT_BATCH):
        tb = collate(examples[start : start + PER_AGENT_BATCH], codec)
        with torch.no_grad():
            logits = position_logits(model, tb.batch, tb.positions)  # (P, V)
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
    examples: list[Example], before, after, temperature: float, codec: Codec, limit: int = PER_AGENT_EXAMPLES
) -> dict[str, dict[str, Any]]:
    """What each agent of the round contributed, for metrics.json's ``per_agent`` block.

    Per agent (the round's new learnings, not the replay): ``learnings``, its examples trained on;
    ``weight``, its expected share of the new-learning rows of every batch (BalancedSampler picks an agent
    uniformly, so 1 / agents); ``kd_before``/``kd_after``, the mean top-k KD loss per teacher position of the
    ``before`` (base) and ``after`` (trained) core over its first ``limit`` examples, None when none of them
    ships a teacher signal; ``ce_before``/``ce_after``, the mean cross-entropy over the verified answers of
    those examples that ship no signal (which train by CE instead), None when there are none; and
    ``kd_positions``/``ce_positions``, the positions each mean is over. Deterministic: the examples are taken
    in file order and both cores run in eval(). ``codec`` is the base core's, which the examples' ids are in.
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
        kd_b, kd_n, ce_b, ce_n = _loss_sums(before, chosen, temperature, codec)
        kd_a, _, ce_a, _ = _loss_sums(after, chosen, temperature, codec)
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
