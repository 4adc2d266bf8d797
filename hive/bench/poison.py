"""Hostile traffic for the hive: good signed learnings among arbitrary bytes, arbitrary JSON and near-valid events."""

from __future__ import annotations

import json
import random
import string
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from agents.model import WEIGHTS_FILE, file_sha256
from agents.skills import BUILTIN_SKILLS
from streams import topics
from streams.codec import encode
from streams.events import MAX_TEXT, ClaimCheck, Feedback, Heartbeat, Learning
from streams.signing import signed

# What the hive must do with a message: store it, dead-letter it, either (a mutation that may still be a
# valid, correctly signed learning), or only stay up (heartbeats, which have no dead-letter topic).
Expect = Literal["stored", "dead", "either", "survive"]
SKILLS = ("add", "capital", "morse")
# Characters that break naive code: controls, NUL, bidi overrides, zero-width joiners, combining marks,
# astral-plane emoji, a BOM, and U+FFFF (a noncharacter). Lone surrogates are made by a JSON escape below.
ODD_UNICODE = "\x00\x01\x1f\x7f\u0085\u200b\u200d\u202e\u2066\ufeff\uffff\u0301\U0001f41d\U0010fffd"


@dataclass(frozen=True)
class Message:
    """One record to produce: where, its key and value, its class, and what the hive must do with it."""

    topic: str
    key: bytes | None
    value: bytes | None
    kind: str
    expect: Expect
    learning_id: str | None = None  # the id the hive stores it under, when it is a learning that may be stored


def good_learning(rng: random.Random, agent_id: str, key: bytes, now: datetime) -> Learning:
    """A valid learning of a built-in skill, signed with ``key``: what a healthy agent sends."""
    skill = rng.choice(SKILLS)
    prompt, answer = BUILTIN_SKILLS[skill].sample(rng)  # type: ignore[attr-defined]
    learning = Learning(
        id=uuid.UUID(int=rng.getrandbits(128)),
        agent_id=agent_id,
        skill=skill,
        core_version=0,
        created_at=now - timedelta(seconds=rng.randint(0, 600)),
        prompt=prompt,
        completion=answer if rng.random() < 0.5 else "?",
        feedback=Feedback(reward=1.0) if rng.random() < 0.3 else Feedback(reward=0.0, correction=answer),
    )
    return signed(learning, key)


def _text(rng: random.Random, low: int, high: int) -> str:
    alphabet = string.printable + ODD_UNICODE
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(low, high)))


def arbitrary_json(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON value: scalars of every type (huge and tiny numbers, odd text), lists and objects."""
    choice = rng.randrange(9 if depth < 4 else 6)
    if choice == 0:
        return None
    if choice == 1:
        return rng.random() < 0.5
    if choice == 2:
        return rng.choice([0, -1, 2**63, -(2**64), 10**30, rng.randint(-1000, 1000)])
    if choice == 3:
        return rng.choice([0.0, -0.0, 1e308, 5e-324, rng.uniform(-1e6, 1e6)])
    if choice in (4, 5):
        return _text(rng, 0, 40)
    if choice == 6:
        return [arbitrary_json(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    fields = ["id", "agent_id", "skill", "prompt", "feedback", "schema_version", "created_at", _text(rng, 1, 8)]
    return {rng.choice(fields): arbitrary_json(rng, depth + 1) for _ in range(rng.randint(0, 6))}


# Each near-valid mutation: a name, and a change to a good learning's JSON object. Some changes leave a valid
# learning (extra fields are ignored, odd Unicode is text); those are re-signed and may be stored.
Mutation = Callable[[random.Random, dict[str, Any]], None]


def _set(field: str, value: Any) -> Mutation:
    def change(rng: random.Random, data: dict[str, Any]) -> None:
        data[field] = value

    return change


def _drop(field: str) -> Mutation:
    def change(rng: random.Random, data: dict[str, Any]) -> None:
        data.pop(field, None)

    return change


def _feedback(value: Any) -> Mutation:
    def change(rng: random.Random, data: dict[str, Any]) -> None:
        data["feedback"] = value

    return change


def _odd_text(rng: random.Random, data: dict[str, Any]) -> None:
    data["prompt"] = _text(rng, 1, 60)


def _huge_text(rng: random.Random, data: dict[str, Any]) -> None:
    data["completion"] = "x" * (MAX_TEXT + rng.randint(1, 5000))


WRONG_TYPES: dict[str, Mutation] = {
    "id_int": _set("id", 12345),
    "id_not_uuid": _set("id", "not-a-uuid"),
    "agent_list": _set("agent_id", ["agent"]),
    "agent_path": _set("agent_id", "../../etc/passwd"),
    "core_version_text": _set("core_version", "one"),
    "core_version_negative": _set("core_version", -1),
    "core_version_huge": _set("core_version", 10**400),
    "feedback_text": _feedback("good"),
    "feedback_empty": _feedback({}),
    "reward_out_of_range": _feedback({"reward": 7}),
    "reward_nan_text": _feedback({"reward": "NaN"}),
    "prompt_number": _set("prompt", 42),
    "skill_empty": _set("skill", ""),
    "no_id": _drop("id"),
    "no_feedback": _drop("feedback"),
    "teacher_garbage": _set("teacher", {"k": 2, "token_ids": [[1]], "logprobs": [[0.5, "x"]]}),
    "adapter_bad_sha": _set("adapter", {"uri": "file:///etc/passwd", "sha256": "zz"}),
    "schema_version_2": _set("schema_version", "2.0"),
    "schema_version_number": _set("schema_version", 1),
}
TIMESTAMPS: dict[str, Mutation] = {
    "created_at_zoneless": _set("created_at", "2026-11-30T12:00:00"),
    "created_at_year_9999": _set("created_at", "9999-12-31T23:59:59+00:00"),
    "created_at_year_1_offset": _set("created_at", "0001-01-01T00:00:00+14:00"),
    "created_at_max_offset": _set("created_at", "9999-12-31T23:59:59-23:59"),
    "created_at_not_a_date": _set("created_at", "2026-02-30T25:61:00Z"),
    "created_at_epoch_number": _set("created_at", 1e20),
    "created_at_empty": _set("created_at", ""),
}
# Aware timestamps at the edges of what a datetime holds: refusing them is right, and so is storing them, as
# long as nothing downstream (UTC conversion, age arithmetic) raises on them.
EXTREME_BUT_ZONED = frozenset({"created_at_year_9999"})
MAYBE_VALID: dict[str, Mutation] = {
    "odd_unicode_prompt": _odd_text,
    "extra_field": _set("unexpected_field", {"nested": [1, 2, 3]}),
}


def near_valid(rng: random.Random, good: Learning, key: bytes) -> Message:
    """A good learning with one thing wrong, re-signed where the change still parses, so that it is the
    change itself (not a stale signature) that the hive must refuse."""
    tables: list[dict[str, Mutation]] = [WRONG_TYPES, TIMESTAMPS, MAYBE_VALID, {"huge_text": _huge_text}]
    table = rng.choice(tables)
    name = rng.choice(sorted(table))
    data = json.loads(encode(good))
    data.pop("signature", None)
    data["id"] = str(uuid.UUID(int=rng.getrandbits(128)))
    table[name](rng, data)
    expect: Expect = "either" if table is MAYBE_VALID or name in EXTREME_BUT_ZONED else "dead"
    resigned = _resign(data, key)
    if resigned is not None:
        data = resigned
    learning_id = data.get("id") if isinstance(data.get("id"), str) else None
    return Message(topics.LEARNINGS, good.agent_id.encode(), json.dumps(data).encode(), name, expect, learning_id)


def _resign(data: dict[str, Any], key: bytes) -> dict[str, Any] | None:
    """``data`` signed with ``key`` when it parses as a learning; None when it does not (nothing to sign)."""
    from pydantic import ValidationError

    try:
        learning = Learning.model_validate(data)
    except (ValidationError, ValueError, OverflowError):
        return None
    return data | {"signature": signed(learning, key).signature}


def lone_surrogate(rng: random.Random, good: Learning) -> Message:
    """A learning whose prompt holds a lone UTF-16 surrogate, written as a JSON escape (valid JSON, not
    valid Unicode text)."""
    data = json.loads(encode(good)) | {"id": str(uuid.UUID(int=rng.getrandbits(128)))}
    data["prompt"] = "\ud800" + data["prompt"]
    # ensure_ascii (the default) writes the surrogate as the escape \ud800, as a buggy client would.
    return Message(topics.LEARNINGS, good.agent_id.encode(), json.dumps(data).encode(), "lone_surrogate", "dead")


def arbitrary_bytes(rng: random.Random) -> Message:
    value = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300)))
    return Message(topics.LEARNINGS, None, value, "arbitrary_bytes", "dead")


def arbitrary_json_message(rng: random.Random) -> Message:
    value = json.dumps(arbitrary_json(rng), ensure_ascii=rng.random() < 0.5).encode("utf-8", errors="surrogatepass")
    return Message(topics.LEARNINGS, b"fuzz", value, "arbitrary_json", "dead")


def heartbeat(rng: random.Random, agent_id: str, key: bytes, now: datetime) -> Message:
    """A heartbeat, valid or not: signed, unsigned, zone-less, from the future, of the wrong shape, or garbage."""
    beat = json.loads(encode(signed(Heartbeat(agent_id=agent_id, skill="add", core_version=0, sent_at=now), key)))
    kind = rng.choice(["zoneless", "year_9999", "garbage", "wrong_types", "unsigned", "valid"])
    if kind == "zoneless":
        beat["sent_at"] = now.replace(tzinfo=None).isoformat()
    elif kind == "year_9999":
        # Re-signed: the agent's key vouches for it, so that only the clock-skew limit can refuse it.
        future = Heartbeat(agent_id=agent_id, skill="add", core_version=0, sent_at=datetime(9999, 12, 31, tzinfo=UTC))
        beat = json.loads(encode(signed(future, key)))
    elif kind == "wrong_types":
        beat["counters"] = {"spool_size": "many"}
    elif kind == "unsigned":
        del beat["signature"]
    value = bytes(rng.getrandbits(8) for _ in range(40)) if kind == "garbage" else json.dumps(beat).encode()
    return Message(topics.FLEET, agent_id.encode(), value, f"heartbeat_{kind}", "survive")


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
        messages.append(Message(topics.LEARNINGS, agent.encode(), encode(learning), "good", "stored", str(learning.id)))

    def variant(good: Learning, kind: str, expect: Expect, key: bytes | None, **changes: Any) -> Message:
        learning = good.model_copy(update={"id": uuid.UUID(int=rng.getrandbits(128)), "signature": None, **changes})
        if key is not None:
            learning = signed(learning, key)
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
        data = json.loads(encode(good)) | {"id": str(uuid.UUID(int=rng.getrandbits(128)))}
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
    return Message(
        topics.LEARNINGS, learning.agent_id.encode(), encode(learning), "duplicate", "stored", str(learning.id)
    )


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
