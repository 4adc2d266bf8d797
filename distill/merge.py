"""Weight-merging baselines the benchmark compares distillation against: averaging, task arithmetic, TIES."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

StateDict = dict[str, torch.Tensor]

METHODS = ("weight_average", "task_arithmetic", "ties")


def _check_compatible(reference: StateDict, others: Sequence[StateDict]) -> None:
    """Raises ValueError unless every state dict has the reference's keys and shapes."""
    for i, other in enumerate(others):
        if other.keys() != reference.keys():
            missing = sorted(reference.keys() - other.keys())
            extra = sorted(other.keys() - reference.keys())
            raise ValueError(f"state dict {i} does not match: missing {missing[:5]}, unexpected {extra[:5]}")
        for key, tensor in reference.items():
            if other[key].shape != tensor.shape:
                raise ValueError(
                    f"state dict {i}: {key} has shape {tuple(other[key].shape)}, not {tuple(tensor.shape)}"
                )


def _require_finetuned(finetuned: Sequence[StateDict]) -> None:
    if not finetuned:
        raise ValueError("need at least one finetuned state dict")


def _work_dtype(tensor: torch.Tensor) -> torch.dtype:
    # Sums over several models in bf16/fp16 lose the small task-vector entries that merging is about;
    # compute in at least float32 and cast back to the stored dtype at the end.
    return torch.promote_types(tensor.dtype, torch.float32)


def _deltas(base: StateDict, finetuned: Sequence[StateDict], key: str) -> torch.Tensor:
    """The stacked task vectors of one tensor, (n_models, *shape), in the working dtype."""
    dtype = _work_dtype(base[key])
    return torch.stack([ft[key].to(dtype) - base[key].to(dtype) for ft in finetuned])


@torch.no_grad()
def task_vectors(base: StateDict, finetuned: Sequence[StateDict]) -> list[StateDict]:
    """τ_i = θ_i − θ_base for each finetuned model (Ilharco et al. 2023, "Editing Models with Task Arithmetic").

    Non-float tensors hold base's value in every task vector, so that the keys stay the same.
    """
    _require_finetuned(finetuned)
    _check_compatible(base, finetuned)
    out: list[StateDict] = []
    for ft in finetuned:
        tau: StateDict = {}
        for key, tensor in base.items():
            if tensor.is_floating_point():
                tau[key] = (ft[key].to(_work_dtype(tensor)) - tensor.to(_work_dtype(tensor))).to(tensor.dtype)
            else:
                tau[key] = tensor.clone()
        out.append(tau)
    return out


@torch.no_grad()
def weight_average(finetuned: Sequence[StateDict]) -> StateDict:
    """θ = (1/n) Σ θ_i, the element-wise mean: a uniform model soup (Wortsman et al. 2022, "Model soups")
    and FedAvg with equal client weights (McMahan et al. 2017).

    With no base model, non-float tensors are copied from the first finetuned state dict.
    """
    _require_finetuned(finetuned)
    first = finetuned[0]
    _check_compatible(first, finetuned[1:])
    out: StateDict = {}
    for key, tensor in first.items():
        if tensor.is_floating_point():
            dtype = _work_dtype(tensor)
            out[key] = torch.stack([ft[key].to(dtype) for ft in finetuned]).mean(dim=0).to(tensor.dtype)
        else:
            out[key] = tensor.clone()
    return out


@torch.no_grad()
def task_arithmetic(base: StateDict, finetuned: Sequence[StateDict], scale: float) -> StateDict:
    """θ = θ_base + λ · Σ_i τ_i with τ_i = θ_i − θ_base and λ = ``scale``.

    Ilharco et al. 2023, "Editing Models with Task Arithmetic" (ICLR). Non-float tensors come from base.
    """
    _require_finetuned(finetuned)
    _check_compatible(base, finetuned)
    out: StateDict = {}
    for key, tensor in base.items():
        if tensor.is_floating_point():
            merged = tensor.to(_work_dtype(tensor)) + scale * _deltas(base, finetuned, key).sum(dim=0)
            out[key] = merged.to(tensor.dtype)
        else:
            out[key] = tensor.clone()
    return out


def _trim(deltas: torch.Tensor, density: float) -> torch.Tensor:
    """Keeps the round(density · numel) largest-magnitude entries of each task vector, zeroing the rest.

    ``deltas`` is (n_models, *shape); each row is trimmed on its own. Exactly that many entries are
    kept per row (ties in magnitude are broken arbitrarily), so the count never drifts with the data.
    """
    flat = deltas.reshape(deltas.shape[0], -1)
    keep = round(density * flat.shape[1])
    if keep >= flat.shape[1]:
        return deltas.clone()
    mask = torch.zeros_like(flat, dtype=torch.bool)
    if keep > 0:
        mask.scatter_(1, flat.abs().topk(keep, dim=1).indices, True)
    return (flat * mask).reshape(deltas.shape)


@torch.no_grad()
def ties_merge(base: StateDict, finetuned: Sequence[StateDict], density: float = 0.2, scale: float = 1.0) -> StateDict:
    """TIES-Merging (Yadav et al. 2023, "TIES-Merging: Resolving Interference When Merging Models", NeurIPS).

    Per tensor, with τ_i = θ_i − θ_base:
      1. Trim: keep the round(density · numel) largest |τ_i| entries of each τ_i, zero the rest (τ̂_i).
      2. Elect: γ = sign(Σ_i τ̂_i) per parameter, the sign with the larger total mass.
      3. Disjoint merge: τ_m = mean of the τ̂_i entries with sign(τ̂_i) = γ, ignoring the rest; zero where
         none agree.
    Returns θ_base + scale · τ_m. Non-float tensors come from base.
    """
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density must lie in [0, 1], got {density}")
    _require_finetuned(finetuned)
    _check_compatible(base, finetuned)
    out: StateDict = {}
    for key, tensor in base.items():
        if not tensor.is_floating_point():
            out[key] = tensor.clone()
            continue
        trimmed = _trim(_deltas(base, finetuned, key), density)
        elected = torch.sign(trimmed.sum(dim=0))
        # Strictly positive product: the entry is non-zero (survived trimming) and agrees with γ; a zero
        # γ (exact cancellation) selects nothing, so that parameter stays at base.
        agrees = (trimmed * elected) > 0
        count = agrees.sum(dim=0).clamp(min=1)
        merged = (trimmed * agrees).sum(dim=0) / count
        out[key] = (tensor.to(merged.dtype) + scale * merged).to(tensor.dtype)
    return out


def merge(method: str, base: StateDict, finetuned: Sequence[StateDict], **params: float) -> StateDict:
    """Merges with the named method: ``"weight_average"`` (ignores base), ``"task_arithmetic"`` or ``"ties"``.

    ``params`` go to the method unchanged (``scale``; ``density`` for TIES).
    """
    if method == "weight_average":
        if params:
            raise ValueError(f"weight_average takes no parameters, got {sorted(params)}")
        return weight_average(finetuned)
    if method == "task_arithmetic":
        return task_arithmetic(base, finetuned, **params)
    if method == "ties":
        return ties_merge(base, finetuned, **params)
    raise ValueError(f"unknown merge method {method!r}; known: {', '.join(METHODS)}")


def tune_scale(
    method: str,
    base: StateDict,
    finetuned: Sequence[StateDict],
    scales: Sequence[float],
    score: Callable[[StateDict], float],
    **params: float,
) -> tuple[float, StateDict, dict[float, float]]:
    """Merges at each scale and keeps the one that ``score`` rates highest (higher is better).

    The benchmark MUST pass a score computed on a validation split, never on the test split the
    baselines are reported on; otherwise the tuned baseline is fitted to its own test. Returns the best
    scale, its merged state dict and every scale's score. The first scale wins a tie; NaN scores never
    win, and ValueError is raised when every score is NaN. Only the best state dict is kept in memory.
    """
    if method == "weight_average":
        raise ValueError("weight_average has no scale to tune")
    if not scales:
        raise ValueError("need at least one scale to try")
    scores: dict[float, float] = {}
    best_scale: float | None = None
    best_state: StateDict | None = None
    for s in scales:
        state = merge(method, base, finetuned, scale=s, **params)
        value = float(score(state))
        scores[s] = value
        if not math.isnan(value) and (best_scale is None or value > scores[best_scale]):
            best_scale, best_state = s, state
    if best_scale is None or best_state is None:
        raise ValueError(f"every scale scored NaN: {scores}")
    return best_scale, best_state, scores
