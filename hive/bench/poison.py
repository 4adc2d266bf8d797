"""Hostile traffic for the hive: good signed learnings among arbitrary bytes, arbitrary JSON and near-valid events."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agents.model import WEIGHTS_FILE, file_sha256
from agents.skills import BUILTIN_SKILLS
from agents.skills.splits import sample_task
from hive.bench.hostile import (
    Expect,
    Message,
    arbitrary_bytes,
    arbitrary_json_message,
    heartbeat,
    lone_surrogate,
    near_valid,
)
from hive.bench.synthetic import learning_id, payload, synthetic_learning
from streams import topics
from streams.codec import encode
from streams.events import ClaimCheck, Feedback, Learning
from streams.signing import signed

SKILLS = ("add", "capital", "morse")


def good_learning(rng: random.Random, agent_id: str, key: bytes, now: datetime) -> Learning:
    """A valid learning of a built-in skill, signed with ``key``: what a healthy agent sends."""
    skill = rng.choice(SKILLS)
    prompt, answer = sample_task(BUILTIN_SKILLS[skill], rng, "train")  # a held-out prompt is dead-lettered
    return synthetic_learning(
        learning_id(rng),
        agent_id,
        skill,
        prompt,
        # Written in the order the rng draws them: argument order is draw order, and a seed fixes every byte.
        created_at=now - timedelta(seconds=rng.randint(0, 600)),
        completion=answer if rng.random() < 0.5 else "?",
        feedback=Feedback(reward=1.0) if rng.random() < 0.3 else Feedback(reward=0.0, correction=answer),
        key=key,
    )


def learning_message(learning: Learning, kind: str, expect: Expect) -> Message:
    """``learning`` as its agent sends it to ``hive.learnings``, stored under its id if the hive takes it."""
    key, value = payload(learning)
    return Message(topics.LEARNINGS, key, value, kind, expect, str(learning.id))


@dataclass(frozen=True)
class PoisonPlan:
    """``good`` signed learnings among ``poison`` hostile messages, shuffled; ``seed`` fixes every byte."""

    good: int = 400
    poison: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        if self.good < 1 or self.poison < 0:
            raise ValueError("--good must be at least 1 and --poison at least 0")


def build_traffic(
    plan: PoisonPlan,
    keys: dict[str, bytes],
    claim_checks: list[ClaimCheck],
    revoked: tuple[str, bytes] | None = None,
    now: datetime | None = None,
) -> list[Message]:
    """The plan's messages, shuffled: good learnings from the agents in ``keys`` (each signed with its key),
    and poison spread evenly over every class (duplicates of good learnings included). ``revoked`` is an
    agent the hive has revoked, with the key it still signs with.

    ``claim_checks`` are hostile adapter claim checks (``poisoned_adapters``): a learning that carries one is
    valid at the door and must be stored, and the round must go on without that teacher.
    """
    now = now or datetime.now(UTC)
    rng = random.Random(plan.seed)
    agents = sorted(keys)
    goods: list[Learning] = []
    messages: list[Message] = []
    for _ in range(plan.good):
        agent = rng.choice(agents)
        learning = good_learning(rng, agent, keys[agent], now)
        goods.append(learning)
        messages.append(learning_message(learning, "good", "stored"))

    def variant(good: Learning, kind: str, expect: Expect, key: bytes | None, **changes: Any) -> Message:
        learning = good.model_copy(update={"id": learning_id(rng), "signature": None, **changes})
        if key is not None:
            learning = signed(learning, key)
        # Keyed by the good learning's agent even when the variant names another (a stranger, a revoked one).
        return Message(topics.LEARNINGS, good.agent_id.encode(), encode(learning), kind, expect, str(learning.id))

    def pick_agent() -> tuple[str, bytes]:
        agent = rng.choice(agents)
        return agent, keys[agent]

    def pick() -> tuple[Learning, bytes]:
        good = rng.choice(goods)
        return good, keys[good.agent_id]

    def unknown_skill() -> Message:
        good, key = pick()
        return variant(good, "unknown_skill", "dead", key, skill="no-such-skill")

    def unsigned() -> Message:
        good, _ = pick()
        return variant(good, "unsigned", "dead", None)

    def stranger() -> Message:
        good, _ = pick()
        return variant(good, "unknown_agent_unsigned", "dead", None, agent_id="stranger-1")

    def wrong_key() -> Message:
        good, _ = pick()
        return variant(good, "wrong_key", "dead", b"not-the-agents-key-at-all")

    def revoked_agent() -> Message:
        assert revoked is not None
        good, _ = pick()
        return variant(good, "revoked", "dead", revoked[1], agent_id=revoked[0])

    def bad_claim_check() -> Message:
        good, key = pick()
        return variant(good, "bad_claim_check", "stored", key, adapter=rng.choice(claim_checks))

    def zoneless_created_at() -> Message:
        # Refused before any signature check, as a client in another language might send it.
        good = rng.choice(goods)
        data = json.loads(encode(good)) | {"id": str(learning_id(rng))}
        data["created_at"] = now.replace(tzinfo=None).isoformat()
        value = json.dumps(data).encode()
        return Message(topics.LEARNINGS, good.agent_id.encode(), value, "zoneless_created_at", "dead")

    makers: dict[str, Callable[[], Message]] = {
        "unknown_skill": unknown_skill,
        "unsigned": unsigned,
        "stranger": stranger,
        "wrong_key": wrong_key,
        "zoneless_created_at": zoneless_created_at,
        "bad_claim_check": bad_claim_check,
        "revoked": revoked_agent,
        "heartbeat": lambda: heartbeat(rng, *pick_agent(), now),
        "arbitrary_bytes": lambda: arbitrary_bytes(rng),
        "arbitrary_json": lambda: arbitrary_json_message(rng),
        "near_valid": lambda: near_valid(rng, *pick()),
        "lone_surrogate": lambda: lone_surrogate(rng, rng.choice(goods)),
        "duplicate": lambda: _duplicate(rng.choice(goods)),
    }
    if not claim_checks:
        del makers["bad_claim_check"]
    if revoked is None:
        del makers["revoked"]
    names = list(makers)
    for i in range(plan.poison):
        messages.append(makers[names[i % len(names)]]())
    rng.shuffle(messages)
    return messages


def _duplicate(learning: Learning) -> Message:
    # A re-sent good learning (an agent retrying after a lost ack): stored once, under its first copy.
    return learning_message(learning, "duplicate", "stored")


def poisoned_adapters(root: Path, outside: Path) -> list[ClaimCheck]:
    """Hostile adapter claim checks, each with the right sha256 of what it names. Under ``root`` (an adapter
    root of the hive): a ``config.json`` of ``[]``, a weights file that is not safetensors, weights of the
    wrong names and shapes. Elsewhere: a whole adapter under ``outside`` (not a root), a ``..`` path out of
    ``root``, and a remote host."""
    import torch
    from safetensors.torch import save_file

    made: list[ClaimCheck] = []

    def adapter(path: Path, config: str, weights: bytes | None = None, tensors: dict | None = None) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(config)
        weights_path = path / WEIGHTS_FILE
        if tensors is not None:
            save_file(tensors, str(weights_path))
        else:
            weights_path.write_bytes(weights or b"")
        made.append(ClaimCheck(uri=path.resolve().as_uri(), sha256=file_sha256(weights_path)))
        return weights_path

    adapter(root / "config-is-a-list", "[]", tensors={"lm_head.weight": torch.zeros(4, 4)})
    adapter(root / "not-safetensors", "{}", weights=b"\x80\x04\x95 a pickle, not safetensors")
    adapter(root / "wrong-shapes", '{"vocab_size": "many"}', tensors={"model.embed_tokens.weight": torch.zeros(3, 5)})
    escaped = adapter(outside / "elsewhere", "{}", tensors={"lm_head.weight": torch.zeros(2, 2)})
    dotted = f"{root.resolve().as_uri()}/../{outside.name}/elsewhere"
    made.append(ClaimCheck(uri=dotted, sha256=file_sha256(escaped)))
    made.append(ClaimCheck(uri="file://elsewhere.example/adapters/a", sha256="0" * 64))
    return made
