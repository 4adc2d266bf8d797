"""Synthetic learnings for the benchmarks: signing keys of the bench agents and top-k teacher signals."""

from __future__ import annotations

import hashlib
import math
import random

from streams.events import TeacherSignal

Payload = tuple[bytes, bytes]  # (key, value), as an agent's publisher sends them
AGENTS = 8
# The tiny core's vocabulary (agents/model.py): the token ids a real teacher signal can hold.
VOCAB = 260


def agent_key(agent_id: str) -> bytes:
    """The bench agent's signing key: the hive verifies every learning, as in service. Derived from the id (for
    benchmarks only), not random, so that the same plan gives the same bytes, run after run."""
    return hashlib.sha256(f"hive bench ingest:{agent_id}".encode()).digest()


def random_signal(rng: random.Random, k: int, positions: int) -> TeacherSignal:
    """Top-k log-probabilities as a real signal has them: distinct ids, descending, from a normalised distribution."""
    ids: list[list[int]] = []
    lps: list[list[float]] = []
    for _ in range(positions):
        logits = sorted((rng.gauss(0.0, 3.0) for _ in range(k)), reverse=True)
        # Leaves probability mass for the tokens outside the top k, so that every log-prob stays below 0.
        log_total = math.log(sum(math.exp(x - logits[0]) for x in logits) * 1.25)
        ids.append(rng.sample(range(VOCAB), k))
        lps.append([x - logits[0] - log_total for x in logits])
    return TeacherSignal(k=k, token_ids=ids, logprobs=lps)
