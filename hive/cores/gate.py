"""The release gate: a candidate core passes only if no skill regresses beyond the limit."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    deltas: dict[str, float] = field(default_factory=dict)


def decide(candidate: dict[str, float], champion: dict[str, float], max_regression: float) -> GateDecision:
    """Compares per-skill accuracy on the same held-out tasks; every champion skill must be evaluated."""
    reasons: list[str] = []
    deltas: dict[str, float] = {}
    for skill, before in sorted(champion.items()):
        if skill not in candidate:
            reasons.append(f"{skill}: not evaluated on the candidate")
            continue
        # Rounded, so a drop of exactly the limit (0.92 - 0.90 in floats) is not read as more than it.
        deltas[skill] = round(candidate[skill] - before, 9)
        if deltas[skill] < -max_regression:
            reasons.append(
                f"{skill}: accuracy fell {before:.3f} -> {candidate[skill]:.3f}, more than the limit {max_regression}"
            )
    for skill in sorted(set(candidate) - set(champion)):
        deltas[skill] = candidate[skill]
    return GateDecision(passed=not reasons, reasons=reasons, deltas=deltas)
