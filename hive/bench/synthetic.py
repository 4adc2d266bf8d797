"""Synthetic learnings for the benchmarks: ids and signals from one seeded rng, signed with the bench agents' keys."""

from __future__ import annotations

import hashlib
import math
import random
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from agents.codec import BYTE_CODEC, Codec
from agents.tokenizer import VOCAB_SIZE
from streams.codec import encode
from streams.events import Feedback, Learning, TeacherSignal
from streams.signing import signed

Payload = tuple[bytes, bytes]  # (key, value), as an agent's publisher sends them
AGENTS = 8
# Logit elements one forward pass of ``core_teacher_signals`` may hold (256 MB in fp32, twice that with the
# log-softmax): rows x positions x vocabulary. 128 rows of the tiny core's 260 tokens fit many times over; a
# 49,152-token vocabulary (SmolLM2) allows about 20 rows of 64 positions.
SIGNAL_LOGITS_BUDGET = 2**26
SIGNAL_POSITIONS_PER_ROW = 64
SIGNAL_MAX_CHUNK = 128


def agent_key(agent_id: str) -> bytes:
    """The bench agent's signing key: the hive verifies every learning, as in service. Derived from the id (for
    benchmarks only), not random, so that the same plan gives the same bytes, run after run."""
    return hashlib.sha256(f"hive bench ingest:{agent_id}".encode()).digest()


def learning_id(rng: random.Random) -> uuid.UUID:
    """An id drawn from ``rng``: the same seed gives the same ids, run after run."""
    return uuid.UUID(int=rng.getrandbits(128))


def synthetic_learning(
    id: uuid.UUID,
    agent_id: str,
    skill: str,
    prompt: str,
    completion: str,
    *,
    created_at: datetime | None = None,
    feedback: Feedback | None = None,
    teacher: TeacherSignal | None = None,
    key: bytes | None = None,
) -> Learning:
    """A learning of core v0, rewarded unless ``feedback`` says otherwise, created now unless ``created_at`` is
    given, and signed when ``key`` is."""
    when: dict[str, Any] = {} if created_at is None else {"created_at": created_at}
    learning = Learning(
        id=id,
        agent_id=agent_id,
        skill=skill,
        core_version=0,
        prompt=prompt,
        completion=completion,
        feedback=feedback or Feedback(reward=1.0),
        teacher=teacher,
        **when,
    )
    return learning if key is None else signed(learning, key)


def payload(learning: Learning) -> Payload:
    """The learning encoded once with the codec, keyed by its agent's id."""
    return learning.agent_id.encode(), encode(learning)


def random_signal(rng: random.Random, k: int, positions: int) -> TeacherSignal:
    """Top-k log-probabilities as a real signal has them: distinct ids, descending, from a normalised distribution."""
    ids: list[list[int]] = []
    lps: list[list[float]] = []
    for _ in range(positions):
        logits = sorted((rng.gauss(0.0, 3.0) for _ in range(k)), reverse=True)
        # Leaves probability mass for the tokens outside the top k, so that every log-prob stays below 0.
        log_total = math.log(sum(math.exp(x - logits[0]) for x in logits) * 1.25)
        ids.append(rng.sample(range(VOCAB_SIZE), k))
        lps.append([x - logits[0] - log_total for x in logits])
    return TeacherSignal(k=k, token_ids=ids, logprobs=lps)


def core_signals(
    core: Any, prompts: Sequence[str], answers: Sequence[str], k: int, chunk: int, codec: Codec = BYTE_CODEC
) -> Iterator[tuple[list[list[int]], list[list[float]]]]:
    """A core's top-k ``(token_ids, logprobs)`` along each answer, ``chunk`` examples per forward pass.

    ``codec`` is the core's; the byte default is the tiny core's (``core_teacher_signals`` takes any core's)."""
    # Imported here: agents.model loads torch, which the ingest bench has no use for.
    from agents.model import topk_signal

    for start in range(0, len(prompts), chunk):
        prompt_chunk, answer_chunk = list(prompts[start : start + chunk]), list(answers[start : start + chunk])
        yield from topk_signal(core, prompt_chunk, answer_chunk, k, codec)


def signal_chunk(codec: Codec) -> int:
    """How many examples one forward pass of ``core_teacher_signals`` takes for a core of ``codec``'s vocabulary."""
    fits = SIGNAL_LOGITS_BUDGET // (SIGNAL_POSITIONS_PER_ROW * codec.vocab_size)
    return max(1, min(SIGNAL_MAX_CHUNK, fits))


def signal_tokenizer(codec: Codec) -> str | None:
    """What a teacher signal in ``codec``'s ids names as its tokenizer: None for the byte codec (the events'
    default), its fingerprint for any other, so that the distill job keeps the signal only for a core of the same
    tokenizer."""
    return None if codec.fingerprint == BYTE_CODEC.fingerprint else codec.fingerprint


def core_teacher_signals(
    core: Any, codec: Codec, prompts: Sequence[str], answers: Sequence[str], k: int
) -> Iterator[TeacherSignal]:
    """The core's top-k teacher signal along each answer, in ``codec``'s ids and naming its tokenizer.

    ``codec`` MUST be the core's own (``agents.codec.load_codec`` of its directory)."""
    tokenizer = signal_tokenizer(codec)
    for ids, lps in core_signals(core, prompts, answers, k, chunk=signal_chunk(codec), codec=codec):
        yield TeacherSignal(k=k, token_ids=ids, logprobs=lps, tokenizer=tokenizer)
