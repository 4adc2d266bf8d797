"""Seeds to figures: means, sample standard deviations, and which differences count as wins."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """The mean and the sample standard deviation (0.0 for a single seed, which shows no spread)."""
    if not values:
        raise ValueError("no values to average")
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


def summary(values: Sequence[float]) -> dict[str, float]:
    """``{"mean": ..., "sd": ...}`` of per-seed values."""
    mean, sd = mean_sd(values)
    return {"mean": mean, "sd": sd}


def comparison(differences: Sequence[float]) -> dict[str, Any]:
    """Per-seed differences (A minus B) summarised: a win for A only when the mean exceeds twice their sd.

    One seed has no spread, so it can show no win (``win`` is None): a researcher must not read one run as one.
    """
    mean, sd = mean_sd(differences)
    win = None if len(differences) < 2 else mean > 2 * sd
    return {"mean": mean, "sd": sd, "seeds": len(differences), "win": win, "per_seed": list(differences)}


def per_skill_mean_sd(per_seed: Sequence[dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """Skill -> mean and skill -> sd over seeds, for the skills every seed scored."""
    skills = [s for s in per_seed[0] if all(s in scores for scores in per_seed)]
    pairs = {s: mean_sd([scores[s] for scores in per_seed]) for s in skills}
    return {s: m for s, (m, _) in pairs.items()}, {s: sd for s, (_, sd) in pairs.items()}


def ratios(core: dict[str, float], specialist: dict[str, float], skills: Sequence[str]) -> dict[str, float]:
    """Core ÷ specialist per skill; a skill whose specialist scored 0 has no ratio and is left out."""
    return {s: core[s] / specialist[s] for s in skills if specialist.get(s, 0.0) > 0}
