"""Round policies: when enough new learnings have arrived, a round opens."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ThresholdPolicy:
    """Fires once at least ``min_learnings`` learnings arrived since the last round took its share."""

    min_learnings: int

    def should_open(self, new_learnings: int) -> bool:
        return new_learnings >= max(1, self.min_learnings)
