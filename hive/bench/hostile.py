"""Hostile messages, one class each: arbitrary bytes and JSON, near-valid learnings, and heartbeats valid or not."""

from __future__ import annotations

import json
import random
import string
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from hive.bench.synthetic import learning_id
from streams import topics
from streams.codec import encode
from streams.events import MAX_TEXT, Heartbeat, Learning
from streams.signing import signed

# What the hive must do with a message: store it, dead-letter it, either (a mutation that may still be a
# valid, correctly signed learning), or only stay up (heartbeats, which have no dead-letter topic).
Expect = Literal["stored", "dead", "either", "survive"]
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
    data["id"] = str(learning_id(rng))
    table[name](rng, data)
    expect: Expect = "either" if table is MAYBE_VALID or name in EXTREME_BUT_ZONED else "dead"
    resigned = _resign(data, key)
    if resigned is not None:
        data = resigned
    stored_as = data.get("id") if isinstance(data.get("id"), str) else None
    return Message(topics.LEARNINGS, good.agent_id.encode(), json.dumps(data).encode(), name, expect, stored_as)


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
    data = json.loads(encode(good)) | {"id": str(learning_id(rng))}
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
