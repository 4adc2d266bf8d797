"""The codec: every DecodeError reason, and encode/decode as inverses."""

from __future__ import annotations

import json
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note_event
from hypothesis import strategies as st

from streams import codec
from streams.codec import DecodeError, decode, encode
from streams.events import CoreRelease, Feedback, Heartbeat, Learning, TeacherSignal

MAX = 10_000


def valid() -> dict:
    return {
        "id": "0b6f3a52-5d0e-4f7e-9d55-3c1f2a9e8b10",
        "agent_id": "agent-1",
        "skill": "reverse",
        "core_version": 0,
        "prompt": "abc",
        "completion": "cba",
        "feedback": {"reward": 1.0},
    }


def raw(data: object) -> bytes:
    return json.dumps(data).encode()


def reason_of(payload: bytes | None, max_bytes: int = MAX) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        decode(payload, Learning, max_bytes)
    return info.value


def test_valid_message_decodes() -> None:
    event = decode(raw(valid()), Learning, MAX)
    assert event.agent_id == "agent-1"


def test_oversize_is_checked_before_anything_else() -> None:
    err = reason_of(b"\xff" * 101, max_bytes=100)  # also not UTF-8, but size wins
    assert err.reason == codec.OVERSIZE
    assert "101 bytes > limit of 100" in str(err)


def test_exactly_at_the_limit_is_not_oversize() -> None:
    payload = raw(valid())
    assert decode(payload, Learning, len(payload)).skill == "reverse"


@pytest.mark.parametrize("payload", [b"\xff\xfe{}", b'{"a": "\xc3\x28"}', None])
def test_undecodable(payload: bytes | None) -> None:
    assert reason_of(payload).reason == codec.UNDECODABLE


@pytest.mark.parametrize("payload", [b"", b"{", b"not json", b'{"a": 1,}', b"[" * 200_000])
def test_invalid_json(payload: bytes) -> None:
    err = reason_of(payload, max_bytes=1_000_000)
    assert err.reason == codec.INVALID_JSON
    assert str(err).startswith("message is not valid JSON")


@pytest.mark.parametrize("version", ["2.0", "0.1", "v1", 1])
def test_unknown_version_beats_other_schema_errors(version: object) -> None:
    data = valid() | {"schema_version": version, "agent_id": "bad id"}
    assert reason_of(raw(data)).reason == codec.UNKNOWN_VERSION


def test_teacher_signal() -> None:
    data = valid() | {"teacher": {"k": 2, "token_ids": [[1, 2]], "logprobs": [[-0.1, float("nan")]]}}
    err = reason_of(json.dumps(data, allow_nan=True).encode())
    assert err.reason == codec.TEACHER_SIGNAL
    assert "teacher" in err.detail


@pytest.mark.parametrize(
    "data",
    [
        valid() | {"agent_id": "bad id"},
        {k: v for k, v in valid().items() if k != "feedback"},
        valid() | {"feedback": {}},
        valid() | {"core_version": -1},
        [valid()],
        "a string",
    ],
)
def test_schema(data: object) -> None:
    err = reason_of(raw(data))
    assert err.reason == codec.SCHEMA
    assert err.detail


@pytest.mark.parametrize(
    "moment",
    [
        "2026-11-22T12:00:00",  # no zone: a reader could not compare it with the others
        "2026-11-22 12:00:00.123",
        "0001-01-01T00:00:00+01:00",  # zoned, but before year 1 in UTC: converting it would overflow
        "9999-12-31T23:59:59-01:00",  # after year 9999 in UTC
        "not a time",
        1e300,
        None,
    ],
)
@pytest.mark.parametrize(
    ("cls", "field", "base"),
    [
        (Learning, "created_at", valid()),
        (Heartbeat, "sent_at", {"agent_id": "a1", "skill": "add", "core_version": 0}),
        (CoreRelease, "released_at", {"version": 1, "model_uri": "file:///x", "sha256": "0" * 64}),
    ],
)
def test_a_zone_less_or_out_of_range_time_is_refused_as_timestamp(
    moment: object, cls: type, field: str, base: dict
) -> None:
    with pytest.raises(DecodeError) as info:
        decode(raw(base | {field: moment}), cls, MAX)
    assert info.value.reason == codec.TIMESTAMP and field in info.value.detail
    assert "zone" in codec.DESCRIPTIONS[codec.TIMESTAMP]


@pytest.mark.parametrize(
    "moment", ["2026-11-22T12:00:00Z", "2026-11-22T13:00:00+01:00", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"]
)
def test_zoned_times_in_range_decode_and_keep_their_offset(moment: str) -> None:
    event = decode(raw(valid() | {"created_at": moment}), Learning, MAX)
    assert event.created_at.tzinfo is not None
    # Kept as sent: the signature covers the JSON form, so the hive must not rewrite it.
    assert json.loads(encode(event))["created_at"].replace("+00:00", "Z") == moment


def test_decode_error_refuses_unknown_reasons() -> None:
    with pytest.raises(ValueError, match="unknown decode reason"):
        DecodeError("nope", "x")


def test_detail_is_bounded() -> None:
    assert len(DecodeError(codec.SCHEMA, "x" * 10_000).detail) == codec.MAX_DETAIL


texts = st.text(max_size=64)
teachers = st.integers(min_value=1, max_value=4).flatmap(
    lambda k: st.integers(min_value=1, max_value=4).flatmap(
        lambda n: st.builds(
            TeacherSignal,
            k=st.just(k),
            token_ids=st.lists(
                st.lists(st.integers(0, 300), min_size=k, max_size=k, unique=True), min_size=n, max_size=n
            ),
            logprobs=st.lists(
                st.lists(st.floats(min_value=-50.0, max_value=0.0), min_size=k, max_size=k), min_size=n, max_size=n
            ),
        )
    )
)
learnings = st.builds(
    Learning,
    id=st.uuids(),
    agent_id=st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,20}\Z"),
    skill=st.text(min_size=1, max_size=20),
    core_version=st.integers(0, 10**6),
    prompt=texts,
    completion=texts,
    feedback=st.builds(Feedback, reward=st.floats(0.0, 1.0), correction=st.none() | texts),
    teacher=st.none() | teachers,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(learnings)
def test_round_trip(event: Learning) -> None:
    payload = encode(event)
    assert decode(payload, Learning, len(payload)) == event


def test_encode_is_compact_json() -> None:
    event = Learning.model_validate(valid() | {"id": str(uuid.UUID(int=1))})
    assert json.loads(encode(event))["id"] == "00000000-0000-0000-0000-000000000001"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        # More than 4300 digits: Python's int-conversion limit raises ValueError inside json.loads.
        (b'{"core_version": ' + b"1" * 5000 + b"}", codec.INVALID_JSON),
        (raw(valid() | {"schema_version": "9" * 5000 + ".0"}), codec.UNKNOWN_VERSION),
        # "²".isdigit() is True, but int("²") raises.
        (raw(valid() | {"schema_version": "².0"}), codec.UNKNOWN_VERSION),
        (raw(valid() | {"schema_version": "١.0"}), codec.UNKNOWN_VERSION),
    ],
)
def test_hostile_numbers_are_refused_not_raised(payload: bytes, reason: str) -> None:
    assert reason_of(payload, max_bytes=1_000_000).reason == reason


def _flip(data: bytearray, at: int, value: int) -> None:
    if data:
        data[at % len(data)] = value


def _truncate(data: bytearray, at: int, value: int) -> None:
    del data[at % (len(data) + 1) :]


def _delete(data: bytearray, at: int, value: int) -> None:
    if data:
        start = at % len(data)
        del data[start : start + 1 + value % 8]


def _insert(data: bytearray, at: int, value: int) -> None:
    data[at % (len(data) + 1) : at % (len(data) + 1)] = bytes([value])


MUTATIONS = [_flip, _truncate, _delete, _insert]
mutations = st.lists(
    st.tuples(st.sampled_from(MUTATIONS), st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=5
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(learnings, mutations)
def test_mutated_payloads_are_refused_or_valid(event: Learning, edits: list) -> None:
    data = bytearray(encode(event))
    for mutate, at, value in edits:
        mutate(data, at, value)
    try:
        decoded = decode(bytes(data), Learning, 1_000_000)
    except DecodeError as err:
        assert err.reason in codec.REASONS
        assert str(err)  # the message a person reads renders for every reason
        note_event(f"refused: {err.reason}")
        return
    note_event("still a valid learning")
    # What survives the mutations is a whole, valid learning: it encodes and decodes to itself.
    assert isinstance(decoded, Learning)
    assert decode(encode(decoded), Learning, 1_000_000) == decoded


@pytest.mark.parametrize("value", [2**63, 10**400])
def test_integers_beyond_int64_are_refused(value: int) -> None:
    # Found by `hive bench fuzz`: the store keeps core versions in an int64 column.
    assert reason_of(raw(valid() | {"core_version": value})).reason == codec.SCHEMA
    assert decode(raw(valid() | {"core_version": 2**63 - 1}), Learning, MAX).core_version == 2**63 - 1
