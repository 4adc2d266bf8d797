"""How many rows of each skill a run trains on, over all ranks: the budget a benchmark reports per arm."""

from __future__ import annotations

import copy
from collections import Counter

from distill.data import Data
from distill.dataset import BalancedSampler, Example


def _drawn(examples: list[Example], sampler: BalancedSampler, steps: int, micro: int, ranks: int) -> Counter[str]:
    counts: Counter[str] = Counter()
    for rank in range(ranks):
        # Draws depend only on (seed, rank, step): a copy at another rank replays exactly that rank's batches.
        twin = copy.copy(sampler)
        twin.rank = rank
        for step in range(steps):
            counts.update(examples[i].skill for i in twin.batch(step, micro))
    return counts


def rows_per_skill(data: Data, steps: int, micro: int, ranks: int) -> dict[str, dict[str, int]]:
    """Per skill, the new-learning rows and the replay rows that ``steps`` steps of ``ranks`` ranks (``micro`` rows
    each, and as many replay rows when there is replay) train on: what ``distill.step.train_step`` draws."""
    new = _drawn(data.examples, data.sampler, steps, micro, ranks)
    replay: Counter[str] = Counter()
    if data.replay_sampler is not None:
        replay = _drawn(data.replay, data.replay_sampler, steps, micro, ranks)
    return {skill: {"new": new[skill], "replay": replay[skill]} for skill in sorted(set(new) | set(replay))}
