"""Event schemas: what a valid Learning is, and each way one is refused."""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from streams.events import SCHEMA_VERSION, STORED, CoreRelease, Feedback, Heartbeat, Learning, TeacherSignal


def learning_dict(**over: object) -> dict:
    data: dict = {
        "id": str(uuid.uuid4()),
        "agent_id": "agent-1",
        "skill": "reverse",
        "core_version": 3,
        "prompt": "abc",
        "completion": "cba",
        "feedback": {"reward": 1.0},
    }
    data.update(over)
    return data


def teacher_dict(**over: object) -> dict:
    data: dict = {"k": 2, "token_ids": [[1, 2], [3, 4]], "logprobs": [[-0.1, -2.0], [-0.5, -1.0]]}
    data.update(over)
    return data


def test_valid_learning_round_trips_through_json() -> None:
    event = Learning.model_validate(learning_dict(teacher=teacher_dict()))
    again = Learning.model_validate_json(event.model_dump_json())
    assert again == event
    assert again.schema_version == SCHEMA_VERSION
    assert isinstance(again.id, uuid.UUID)
    assert again.teacher is not None and again.teacher.token_ids == [[1, 2], [3, 4]]


def test_learned_answer_prefers_the_correction() -> None:
    event = Learning.model_validate(learning_dict(feedback={"reward": 0.0, "correction": "xyz"}))
    assert event.learned_answer() == "xyz"


def test_missing_id_is_refused() -> None:
    # A defaulted id would differ on every decode of a re-sent learning, and dedupe would miss it.
    data = learning_dict()
    del data["id"]
    with pytest.raises(ValidationError, match="id"):
        Learning.model_validate(data)


def test_missing_feedback_is_refused() -> None:
    data = learning_dict()
    del data["feedback"]
    with pytest.raises(ValidationError, match="feedback"):
        Learning.model_validate(data)


def test_empty_feedback_is_refused() -> None:
    with pytest.raises(ValidationError, match="reward, a correction, or both"):
        Feedback()


@pytest.mark.parametrize("agent_id", ["", "-starts-with-dash", "has space", "x" * 65, "slash/name"])
def test_bad_agent_id_is_refused(agent_id: str) -> None:
    with pytest.raises(ValidationError) as info:
        Learning.model_validate(learning_dict(agent_id=agent_id))
    assert info.value.errors()[0]["loc"] == ("agent_id",)


@pytest.mark.parametrize(
    ("teacher", "message"),
    [
        (teacher_dict(logprobs=[[-0.1, -2.0]]), "2 token rows but 1 logprob rows"),
        (teacher_dict(token_ids=[[1, 2], [3]]), "position 1 has 1 ids"),
        (teacher_dict(logprobs=[[math.nan, -2.0], [-0.5, -1.0]]), "not finite"),
        (teacher_dict(logprobs=[[-math.inf, -2.0], [-0.5, -1.0]]), "not finite"),
        (teacher_dict(logprobs=[[0.5, -2.0], [-0.5, -1.0]]), "not finite and <= 0"),
        (teacher_dict(k=0), "greater than or equal to 1"),
        (teacher_dict(k=513), "less than or equal to 512"),
        (teacher_dict(token_ids=[[1, 1], [3, 4]]), "repeats a token id"),
        (teacher_dict(token_ids=[], logprobs=[]), "no positions"),
        (teacher_dict(token_ids=[[-1, 2], [3, 4]]), "greater than or equal to 0"),
    ],
)
def test_bad_teacher_signal_is_refused(teacher: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as info:
        Learning.model_validate(learning_dict(teacher=teacher))
    assert all(err["loc"][0] == "teacher" for err in info.value.errors())


def test_teacher_over_correction_needs_a_correction() -> None:
    with pytest.raises(ValidationError, match="follows the correction"):
        Learning.model_validate(learning_dict(teacher=teacher_dict(over="correction")))


@pytest.mark.parametrize("version", ["2.0", "0.9", "x.1", ""])
def test_unknown_major_version_is_refused(version: str) -> None:
    with pytest.raises(ValidationError, match="unknown major schema version"):
        Learning.model_validate(learning_dict(schema_version=version))


def test_newer_minor_version_is_accepted() -> None:
    assert Learning.model_validate(learning_dict(schema_version="1.7")).schema_version == "1.7"


def test_extra_fields_are_ignored() -> None:
    event = Learning.model_validate(learning_dict(future_field={"a": 1}, feedback={"reward": 0.5, "extra": True}))
    assert "future_field" not in event.model_dump()
    assert event.feedback == Feedback(reward=0.5)


def test_events_are_frozen() -> None:
    event = Learning.model_validate(learning_dict())
    with pytest.raises(ValidationError):
        event.skill = "other"  # type: ignore[misc]


def test_other_events_validate() -> None:
    beat = Heartbeat(agent_id="a1", skill="s", core_version=0, counters={"learned": 3})
    assert Heartbeat.model_validate_json(beat.model_dump_json()) == beat
    release = CoreRelease(version=2, model_uri="file:///x", sha256="0" * 64)
    assert CoreRelease.model_validate_json(release.model_dump_json()) == release
    with pytest.raises(ValidationError):
        CoreRelease(version=2, model_uri="file:///x", sha256="not-a-hash")
    assert TeacherSignal.model_validate(teacher_dict()).k == 2


def test_a_zone_less_time_is_refused_except_when_read_back_from_the_store() -> None:
    naive = learning_dict() | {"created_at": "2026-11-22T12:00:00"}
    with pytest.raises(ValidationError, match="timezone"):
        Learning.model_validate(naive)
    with pytest.raises(ValidationError, match="timezone"):
        Heartbeat(agent_id="a1", skill="s", core_version=0, sent_at=datetime(2026, 11, 22))
    # A store written by a hive that accepted zone-less times stays readable: they are read as UTC.
    stored = Learning.model_validate_json(json.dumps(naive), context=STORED)
    assert stored.created_at == datetime(2026, 11, 22, 12, tzinfo=UTC)
    zoned = learning_dict() | {"created_at": "2026-11-22T13:00:00+01:00"}
    assert Learning.model_validate(zoned, context=STORED).created_at.utcoffset() == timedelta(hours=1)
