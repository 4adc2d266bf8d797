"""How much of a round one agent may be: ``HIVE_DISTILL__MAX_AGENT_SHARE`` of its learnings, at most.

An agent's id is the one its key authenticates (ingest refuses a learning signed with another agent's key), so an
agent that sends more learnings than the rest of the fleet cannot buy the round with them: past its share, a
seeded sample of its learnings is kept and the rest are left out of the round (counted in ``round.json``
``capped``). The cap ``c`` is one number for every agent, the largest for which no agent keeps more than the share
of what the round keeps, rounded up. When fewer agents send than the share allows (one agent alone, or two and a
share of 0.25), no cap can hold: every agent then keeps as many as the one that sent fewest.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from typing import Protocol, TypeVar


class FromAgent(Protocol):
    @property
    def agent_id(self) -> str: ...


Item = TypeVar("Item", bound=FromAgent)


def agent_cap(counts: dict[str, int], share: float) -> int | None:
    """The most learnings any one agent keeps, or None when no agent is over ``share`` (nothing to cap)."""
    if not counts or share >= 1.0:
        return None
    if len(counts) * share < 1:
        return min(counts.values()) if max(counts.values()) > min(counts.values()) else None

    def holds(cap: int) -> bool:
        # Rounded up: an agent one learning over an exact share (4 of 7 at 0.5) loses nothing for it.
        return cap <= math.ceil(share * sum(min(n, cap) for n in counts.values()) - 1e-9)

    low, high = 1, max(counts.values())
    if holds(high):
        return None
    # holds() is true up to some cap and false above it: the kept total grows slower than the cap once the
    # largest agents are capped.
    while low < high:
        middle = (low + high + 1) // 2
        if holds(middle):
            low = middle
        else:
            high = middle - 1
    return low


def cap_agents(learnings: Sequence[Item], share: float, seed: str) -> tuple[list[Item], dict[str, int]]:
    """``learnings`` (learnings, or their ``hive.store.interface.Indexed`` entries) with no agent over ``share`` of
    them (a seeded sample of the capped agents' own, in the given order), and how many each capped agent lost."""
    counts = Counter(learning.agent_id for learning in learnings)
    cap = agent_cap(dict(counts), share)
    if cap is None:
        return list(learnings), {}
    rng = random.Random(f"agent-share:{seed}")
    dropped: set[int] = set()
    capped: dict[str, int] = {}
    for agent, count in sorted(counts.items()):
        if count <= cap:
            continue
        indices = [i for i, learning in enumerate(learnings) if learning.agent_id == agent]
        dropped.update(rng.sample(indices, count - cap))
        capped[agent] = count - cap
    return [learning for i, learning in enumerate(learnings) if i not in dropped], capped
