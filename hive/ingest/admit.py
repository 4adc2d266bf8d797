"""The door of hive ingest: whether one record's value may be stored, and why not (the dead-letter reasons)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from typing import Any

from agents.skills.splits import held_out_split
from hive.ingest import auth
from hive.ingest.auth import REVOKED, SIGNATURE, UNKNOWN_AGENT, UNSIGNED, Rejection, SenderPolicy
from hive.store.interface import PAYLOAD_HEAD_BYTES, DeadLetter
from streams import codec
from streams.codec import DecodeError, decode
from streams.events import Learning
from streams.signing import KeyRingError

log = logging.getLogger(__name__)

# Why ingest refuses a learning that decodes; with codec.REASONS these are every dead-letter ``reason``.
UNKNOWN_SKILL = "unknown_skill"
HELD_OUT_PROMPT = "held_out_prompt"
UNPROCESSABLE = "unprocessable"
REASONS = (
    *codec.REASONS,
    UNKNOWN_AGENT,
    REVOKED,
    UNSIGNED,
    SIGNATURE,
    UNKNOWN_SKILL,
    HELD_OUT_PROMPT,
    UNPROCESSABLE,
)
DESCRIPTIONS = {
    **codec.DESCRIPTIONS,
    **auth.DESCRIPTIONS,
    UNKNOWN_SKILL: "the skill is neither a built-in nor a plugin the hive loads (HIVE_SKILLS)",
    HELD_OUT_PROMPT: "the prompt is in its skill's validation or test split, which the hive evaluates on",
    UNPROCESSABLE: "checking the record failed in a way the hive did not foresee (a bug: see the hive's log)",
}


def check_skill(learning: Learning, skills: Mapping[str, object]) -> Rejection | None:
    """Refuses a learning of a skill the hive does not know: no round could load it to evaluate the core."""
    if learning.skill in skills:
        return None
    return Rejection(UNKNOWN_SKILL, f"skill {learning.skill[:128]!r} is not a built-in nor in HIVE_SKILLS")


def check_held_out(learning: Learning, skills: Mapping[str, object]) -> Rejection | None:
    """Refuses a learning on a prompt that evaluation holds out: the core would be tested on what it was taught.

    Agents draw their tasks from the train split; this catches an agent (an SDK one, say) that worked a held-out
    prompt anyway. A recall skill's table is both what is taught and what is tested, so it passes.
    """
    split = held_out_split(skills[learning.skill], learning.prompt)
    if split is None:
        return None
    return Rejection(
        HELD_OUT_PROMPT, f"the prompt is in skill {learning.skill!r}'s {split} split: only train prompts are learned"
    )


def admit(
    value: bytes | None, max_bytes: int, policy: SenderPolicy, skills: Mapping[str, object]
) -> tuple[Learning | None, Rejection | None]:
    """Checks one record's value at the door: (the learning, None) when it may be stored, else (the learning
    if it decoded, why it is refused). Raises only KeyRingError (a key file the operator must fix; the batch
    is retried).

    No value may stop ingest: a check that fails in a way nobody foresaw refuses that record alone, as
    ``unprocessable`` with the error, logged with its traceback, and the batch goes on.
    """
    learning: Learning | None = None
    try:
        learning = decode(value, Learning, max_bytes)
        return learning, (policy.check(learning) or check_skill(learning, skills) or check_held_out(learning, skills))
    except DecodeError as err:
        return None, Rejection(err.reason, err.detail)
    except KeyRingError:
        raise
    except Exception as err:  # one record's unforeseen failure must not stop the service (issue #9)
        log.exception("a record could not be checked; dead-lettering it as %s", UNPROCESSABLE)
        return learning, Rejection(UNPROCESSABLE, f"the hive could not check this record: {err!r}"[:1000])


def dead_letter_entry(rec: Any, rejection: Rejection, learning: Learning | None) -> DeadLetter:
    """What the store keeps of a refused record: the reason, its source, and the head of its payload."""
    value = bytes(rec.value) if rec.value is not None else b""
    key = bytes(rec.key).decode("utf-8", errors="replace")[:256] if rec.key is not None else None
    return DeadLetter(
        reason=rejection.reason,
        detail=rejection.detail,
        source_topic=rec.topic,
        source_partition=rec.partition,
        source_offset=rec.offset,
        size=len(value) if rec.value is not None else -1,
        payload_sha256=hashlib.sha256(value).hexdigest(),
        payload_head=value[:PAYLOAD_HEAD_BYTES],
        key=key,
        agent_id=learning.agent_id if learning is not None else None,
    )
