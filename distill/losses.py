"""Knowledge-distillation losses as plain functions: top-k forward KL, full KL, and the round's combination."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# A teacher residual below this is float32 rounding of a top-k that already holds all the mass, not
# mass of its own: tempering would blow 1e-7 of noise up to a visible bucket (1e-7 ** 0.5 = 3e-4).
RESIDUAL_FLOOR = 1e-6
# Smallest student residual; keeps its log finite where the teacher still puts mass on the rest.
STUDENT_RESIDUAL_MIN = 1e-30


def _log_residual(topk_logprobs: torch.Tensor) -> torch.Tensor:
    """log(1 - sum(exp(topk))) per row, (N, k) -> (N, 1), computed without cancellation near zero."""
    mass = torch.logsumexp(topk_logprobs, dim=-1, keepdim=True).clamp(max=0.0)
    return torch.log((-torch.expm1(mass)).clamp(min=STUDENT_RESIDUAL_MIN))


def _bucketed(topk_logprobs: torch.Tensor, log_residual: torch.Tensor, temperature: float) -> torch.Tensor:
    """Log-probabilities over k+1 buckets (the top-k ids and the rest) at a temperature: (N, k+1).

    Tempering a bucket as if it were one token (``p ** (1/T)``, renormalised) is exact for the top-k
    ids and approximate only for the residual; it is exact everywhere when k equals the vocabulary.
    """
    return torch.log_softmax(torch.cat([topk_logprobs, log_residual], dim=-1) / temperature, dim=-1)


def topk_forward_kl(
    student_logits: torch.Tensor,
    teacher_ids: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    temperature: float = 1.0,
    residual: bool = True,
) -> torch.Tensor:
    """Forward KL(teacher || student) over the teacher's top-k plus one bucket for the rest of the mass.

    With ``residual=False`` there is no bucket: both sides are renormalised over the teacher's top-k ids alone,
    so the student is taught only how to rank those k tokens, not how much mass to leave outside them.

    Args:
        student_logits: (N, V) student logits at the N positions that have a teacher signal.
        teacher_ids: (N, k) long, the teacher's top-k token ids per position; ids within a row are distinct.
        teacher_logprobs: (N, k) the teacher's log-probabilities of those ids at temperature 1. An entry of
            ``-inf`` is padding (a teacher that sent a smaller k) and holds no mass on either side.
        temperature: both sides are tempered the same way; the result is scaled by T**2 so that gradient
            magnitudes do not shrink as T grows.

    Returns:
        A scalar: the mean over the N positions. It is >= 0, zero when the student matches the teacher,
        and equal to ``full_kl`` when k equals the vocabulary size (with or without the bucket).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if student_logits.size(0) == 0:
        raise ValueError("topk_forward_kl needs at least one position")
    # float64: the residual is 1 minus a sum close to 1, and float32 leaves ~1e-7 of rounding there.
    student_lp = torch.log_softmax(student_logits.double(), dim=-1)
    teacher_lp = teacher_logprobs.double()
    valid = torch.isfinite(teacher_lp)
    student_top = student_lp.gather(-1, teacher_ids.clamp(min=0)).masked_fill(~valid, float("-inf"))

    if residual:
        teacher_res = -torch.expm1(torch.logsumexp(teacher_lp, dim=-1, keepdim=True).clamp(max=0.0))
        teacher_log_res = torch.where(
            teacher_res > RESIDUAL_FLOOR, torch.log(teacher_res.clamp(min=RESIDUAL_FLOOR)), float("-inf")
        )
        log_q_t = _bucketed(teacher_lp, teacher_log_res, temperature)
        log_q_s = _bucketed(student_top, _log_residual(student_top), temperature)
    else:
        # Padding (-inf) stays at probability 0 on both sides; a row has at least its top-1 id.
        log_q_t = torch.log_softmax(teacher_lp / temperature, dim=-1)
        log_q_s = torch.log_softmax(student_top / temperature, dim=-1)

    q_t = log_q_t.exp()
    # Buckets the teacher gives no mass (padding, an empty residual) add nothing; where() avoids 0 * -inf.
    terms = torch.where(q_t > 0, q_t * (log_q_t - log_q_s), torch.zeros_like(q_t))
    kl = terms.sum(-1).mean() * temperature**2
    return kl.to(student_logits.dtype)


def full_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Forward KL(teacher || student) over the whole vocabulary, scaled by T**2.

    Args:
        student_logits: (N, V).
        teacher_logits: (N, V), for example the frozen previous core on a replay batch.

    Returns:
        A scalar: the mean over the N positions.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} != teacher {tuple(teacher_logits.shape)}")
    if student_logits.size(0) == 0:
        raise ValueError("full_kl needs at least one position")
    log_s = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    log_t = torch.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = F.kl_div(log_s, log_t, log_target=True, reduction="sum") / student_logits.size(0)
    return (kl * temperature**2).to(student_logits.dtype)


def distill_loss(
    *,
    kd_logits: torch.Tensor | None = None,
    teacher_ids: torch.Tensor | None = None,
    teacher_logprobs: torch.Tensor | None = None,
    ce_logits: torch.Tensor | None = None,
    ce_targets: torch.Tensor | None = None,
    replay_logits: torch.Tensor | None = None,
    previous_logits: torch.Tensor | None = None,
    temperature: float = 1.0,
    kd_weight: float = 1.0,
    ce_weight: float = 1.0,
    retention_weight: float = 0.0,
    kd_residual: bool = True,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The round's loss: KD to the teachers + cross-entropy on verified answers + retention on replay.

    ``temperature`` applies to the KD part only; retention compares untempered distributions. ``kd_residual``
    selects ``topk_forward_kl``'s bucket for the mass outside the top-k (the default) or renormalisation.

    Args:
        kd_logits: (N, V) student logits at positions with a teacher signal; with teacher_ids and
            teacher_logprobs (N, k). Skipped when None or N == 0.
        ce_logits: (M, V) student logits at positions of verified answers; ce_targets (M,) their token ids.
            Skipped when None or M == 0.
        replay_logits: (R, V) student logits on a replay batch; previous_logits (R, V) the frozen previous
            core's logits there. Skipped when None, R == 0 or retention_weight == 0.

    Returns:
        ``(total, parts)``: total = kd_weight * kd + ce_weight * ce + retention_weight * retention, and
        parts maps "kd", "ce", "retention" and "total" to floats (0.0 for a skipped part).
    """
    parts: dict[str, float] = {"kd": 0.0, "ce": 0.0, "retention": 0.0}
    terms: list[torch.Tensor] = []
    if kd_logits is not None and kd_logits.size(0) > 0 and kd_weight != 0:
        if teacher_ids is None or teacher_logprobs is None:
            raise ValueError("kd_logits needs teacher_ids and teacher_logprobs")
        kd = topk_forward_kl(kd_logits, teacher_ids, teacher_logprobs, temperature, kd_residual)
        parts["kd"] = float(kd.detach())
        terms.append(kd_weight * kd)
    if ce_logits is not None and ce_logits.size(0) > 0 and ce_weight != 0:
        if ce_targets is None:
            raise ValueError("ce_logits needs ce_targets")
        ce = F.cross_entropy(ce_logits.float(), ce_targets)
        parts["ce"] = float(ce.detach())
        terms.append(ce_weight * ce)
    if replay_logits is not None and replay_logits.size(0) > 0 and retention_weight != 0:
        if previous_logits is None:
            raise ValueError("replay_logits needs previous_logits")
        # Retention keeps the previous core's own distribution, so it is not tempered.
        retention = full_kl(replay_logits, previous_logits.detach())
        parts["retention"] = float(retention.detach())
        terms.append(retention_weight * retention)
    if not terms:
        raise ValueError("distill_loss got no positions for any part: nothing to learn from")
    total = torch.stack(terms).sum()
    parts["total"] = float(total.detach())
    return total, parts
