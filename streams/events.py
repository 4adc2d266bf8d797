"""Event schemas (a versioned contract): Learning, Heartbeat and CoreRelease."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

# Within a major version, fields are only ever added; a reader refuses an unknown major version.
SCHEMA_MAJOR = 1
SCHEMA_VERSION = f"{SCHEMA_MAJOR}.0"

AgentId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
SkillName = Annotated[str, Field(min_length=1, max_length=128)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
MAX_TEXT = 4096
# Integers are bounded where they land in fixed-width columns and tensors: a core version in the store's int64
# column, a token id in an int64 tensor. Python's unbounded ints made 10**400 a valid core version that the
# store could not write (found by `hive bench fuzz`).
MAX_INT64 = 2**63 - 1
Version = Annotated[int, Field(ge=0, le=MAX_INT64)]
TokenId = Annotated[int, Field(ge=0, le=2**31 - 1)]
# Room for full-vocabulary signals of a byte-level core (260 ids), while keeping events bounded.
MAX_TOPK = 512


def is_known_major(version: str) -> bool:
    """True when ``version`` is ``"<major>[.<minor>]"`` with the major version this reader knows."""
    major = version.partition(".")[0]
    # ASCII digits of bounded length only: str.isdigit() also accepts "²", which int() refuses, and int()
    # refuses more than 4300 digits; either would raise ValueError where a clear refusal is due.
    return major.isascii() and major.isdigit() and len(major) <= 9 and int(major) == SCHEMA_MAJOR


def utc_now() -> datetime:
    return datetime.now(UTC)


def _utc_representable(moment: datetime) -> datetime:
    # An aware time whose UTC form falls outside years 1-9999 ("0001-01-01T00:00+01:00", "9999-12-31T23:59-01:00")
    # would raise OverflowError in any reader that compares or converts it; refuse it here instead.
    try:
        moment.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError(f"{moment.isoformat()} is outside the range of UTC times (years 1-9999)") from exc
    return moment


# Validation context for events read back from the hive's own store: a zone-less time there was accepted by a
# hive before zones were required, and is read as UTC rather than making the stored learning unreadable.
STORED = {"naive_as_utc": True}


def _naive_as_utc_if_stored(value: object, info: ValidationInfo) -> object:
    if not (info.context or {}).get("naive_as_utc"):
        return value
    moment = value
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return value  # not ISO 8601 as Python reads it: the schema's own parser decides, and says why
    if isinstance(moment, datetime) and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return value  # zoned, or not a time at all: unchanged


# A point in time with its zone. A zone-less time is refused, not read as UTC: the signature covers the JSON
# form as sent, and every reader compares times, which Python cannot do between zone-less and zoned ones.
# The value is kept as sent (its offset included), so that what is signed is what is stored.
Timestamp = Annotated[AwareDatetime, BeforeValidator(_naive_as_utc_if_stored), AfterValidator(_utc_representable)]
# The fields that hold a Timestamp: the codec tells an error in one of them apart (reason ``timestamp``).
TIMESTAMP_FIELDS = frozenset({"created_at", "sent_at", "released_at"})


class Event(BaseModel):
    """Common base: a schema version whose major part must be one this reader knows."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: str = SCHEMA_VERSION

    @field_validator("schema_version")
    @classmethod
    def _known_major(cls, value: str) -> str:
        if not is_known_major(value):
            raise ValueError(f"unknown major schema version {value!r}; this reader knows {SCHEMA_MAJOR}.x")
        return value


class Feedback(BaseModel):
    """What the job said about a completion: a reward in [0, 1], a verified correction, or both."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    reward: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    correction: Annotated[str, Field(max_length=MAX_TEXT)] | None = None

    @model_validator(mode="after")
    def _something(self) -> Feedback:
        if self.reward is None and self.correction is None:
            raise ValueError("feedback needs a reward, a correction, or both")
        return self


class TeacherSignal(BaseModel):
    """The specialist's top-k next-token log-probabilities at each position of the learned answer.

    ``over`` names the text the positions follow: the ``completion``, or the ``correction`` when
    the completion was wrong. There is one position per answer token plus the end-of-answer token.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    k: Annotated[int, Field(ge=1, le=MAX_TOPK)]
    over: Literal["completion", "correction"] = "completion"
    token_ids: list[list[TokenId]]
    logprobs: list[list[float]]
    # Whose ids these are: the fingerprint of the tokenizer of the core the signal was made on (agents.codec).
    # None means the byte tokenizer of the tiny core, which every signal used before cores had tokenizers of
    # their own. The distill job uses a signal only when this is its base core's tokenizer.
    tokenizer: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._:-]+$")] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> TeacherSignal:
        if len(self.token_ids) != len(self.logprobs):
            raise ValueError(
                f"teacher signal has {len(self.token_ids)} token rows but {len(self.logprobs)} logprob rows"
            )
        if not self.token_ids:
            raise ValueError("teacher signal has no positions")
        for pos, (ids, lps) in enumerate(zip(self.token_ids, self.logprobs, strict=True)):
            if len(ids) != self.k or len(lps) != self.k:
                raise ValueError(f"teacher signal position {pos} has {len(ids)} ids, {len(lps)} logprobs, k={self.k}")
            if len(set(ids)) != len(ids):
                raise ValueError(f"teacher signal position {pos} repeats a token id")
            # C-level loops first (a signal is most of a learning's numbers); the slow one only to name the culprit.
            if not all(map(math.isfinite, lps)) or max(lps) > 1e-4:
                lp = next(x for x in lps if not math.isfinite(x) or x > 1e-4)
                raise ValueError(f"teacher signal position {pos} has log-probability {lp}, not finite and <= 0")
        return self


class ClaimCheck(BaseModel):
    """A big payload kept out of the event: where it is, and the sha256 to verify it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    uri: Annotated[str, Field(min_length=1, max_length=2048)]
    sha256: Sha256


class Learning(Event):
    """One thing an agent learned on the job. ``id`` is the idempotency key."""

    # Required, never defaulted: a default would give a re-sent learning a new id, and dedupe would miss it.
    id: uuid.UUID
    agent_id: AgentId
    skill: SkillName
    core_version: Version
    created_at: Timestamp = Field(default_factory=utc_now)
    prompt: Annotated[str, Field(max_length=MAX_TEXT)]
    completion: Annotated[str, Field(max_length=MAX_TEXT)]
    feedback: Feedback
    teacher: TeacherSignal | None = None
    adapter: ClaimCheck | None = None
    signature: str | None = None

    @model_validator(mode="after")
    def _teacher_text(self) -> Learning:
        if self.teacher is not None and self.teacher.over == "correction" and self.feedback.correction is None:
            raise ValueError("teacher signal follows the correction, but the feedback has none")
        return self

    def learned_answer(self) -> str:
        """The answer the teacher signal follows: the correction when there is one, else the completion."""
        if self.teacher is not None:
            return self.feedback.correction if self.teacher.over == "correction" else self.completion  # type: ignore[return-value]
        return self.feedback.correction if self.feedback.correction is not None else self.completion


class Heartbeat(Event):
    """An agent says it is alive, which core it runs, and how much it has done."""

    agent_id: AgentId
    skill: SkillName
    core_version: Version
    sent_at: Timestamp = Field(default_factory=utc_now)
    counters: dict[str, Annotated[int, Field(ge=-MAX_INT64 - 1, le=MAX_INT64)]] = Field(default_factory=dict)
    state: Literal["starting", "learning", "serving", "stopping"] = "learning"
    # The agent's latest self-evaluation on held-out tasks, per skill: what it can do right now.
    evaluation: dict[str, float] = Field(default_factory=dict)
    # Added in 1.x: HMAC-SHA256 over the heartbeat's canonical JSON, made as a learning's is (streams.signing).
    signature: str | None = None


class CoreRelease(Event):
    """A core for the fleet to run: every agent, or only the agents named in ``targets`` (a canary).

    An agent runs the newest release on ``hive.core`` (in topic order) whose ``targets`` is None or
    names it; a later release of a lower version is a rollback, and agents follow it. The hive signs each
    release with its Ed25519 key (``streams.release_signing``) and numbers it: ``sequence`` only goes up,
    so that an agent refuses an old release sent again. A rollback is a new release, with a new number.
    """

    version: Version
    model_uri: Annotated[str, Field(min_length=1, max_length=2048)]
    sha256: Sha256
    round_id: str | None = None
    gate: dict[str, float] = Field(default_factory=dict)
    released_at: Timestamp = Field(default_factory=utc_now)
    signature: str | None = None
    # Added in 1.x: None is the whole fleet; a list is a canary release for those agents only. A reader that
    # predates the field ignores it and treats a canary as a fleet release.
    targets: list[AgentId] | None = None
    # Added in 1.x: the hive's count of its releases, canaries included, signed with the rest.
    sequence: Annotated[int, Field(ge=1, le=MAX_INT64)] | None = None
    # Added in 1.x: the sha256 of the core's manifest (agents.core_manifest), the list of every file the core
    # holds with its size and sha256. Signed with the rest, so that an agent fetching the core from another host
    # verifies config.json and the tokenizer files too, not only the weights. A release over HTTP or S3 needs it.
    manifest_sha256: Sha256 | None = None
