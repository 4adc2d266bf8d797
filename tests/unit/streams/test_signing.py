"""Signatures: canonical bytes, sign/verify under tampering (learnings and heartbeats), and the key ring."""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from streams import signing
from streams.codec import decode, encode
from streams.events import CoreRelease, Feedback, Heartbeat, Learning, TeacherSignal
from streams.signing import KeyRing, KeyRingError, canonical_bytes, parse_key, parse_keys, sign, signed, verify

from factories import make_learning

KEY = b"k" * 32


def learning(**changes: object) -> Learning:
    base = make_learning(
        "agent-1",
        "reverse",
        id=uuid.UUID(int=7),
        core_version=3,
        created_at=datetime(2026, 11, 22, 9, 30, 0, 123456, tzinfo=UTC),
        prompt="abc é",
        completion="cba",
        correction="cba",
        teacher=TeacherSignal(k=2, token_ids=[[99, 1], [258, 2]], logprobs=[[-0.1, -2.5], [-0.01, -5.0]]),
    )
    return base.model_copy(update=changes)


def test_canonical_bytes_are_sorted_compact_utf8_without_signature_or_nulls() -> None:
    raw = canonical_bytes(signed(learning(), KEY))
    data = json.loads(raw)
    assert "signature" not in data and "adapter" not in data
    assert list(data) == sorted(data) and b" " not in raw.replace(b"abc \xc3\xa9", b"")
    assert "abc é".encode() in raw


def test_a_signature_survives_the_wire() -> None:
    sent = signed(learning(), KEY)
    received = decode(encode(sent), Learning, 100_000)
    assert verify(received, KEY)
    assert received.signature == sign(learning(), KEY)


def test_a_newer_minor_version_with_unknown_fields_still_verifies() -> None:
    data = json.loads(encode(signed(learning(), KEY))) | {"schema_version": "1.3", "future_field": None}
    received = decode(json.dumps(data).encode(), Learning, 100_000)
    # schema_version is signed: a writer on 1.3 signs "1.3", which is what the reader sees too.
    assert not verify(received, KEY)
    assert verify(signed(received, KEY), KEY)


@pytest.mark.parametrize(
    "change",
    [
        {"prompt": "abd é"},
        {"agent_id": "agent-2"},
        {"core_version": 4},
        {"feedback": Feedback(reward=0.5, correction="cba")},
        {"teacher": None},
        {"id": uuid.UUID(int=8)},
    ],
)
def test_any_change_breaks_the_signature(change: dict) -> None:
    tampered = signed(learning(), KEY).model_copy(update=change)
    assert not verify(tampered, KEY)


def test_wrong_key_missing_or_garbage_signature_do_not_verify() -> None:
    assert not verify(signed(learning(), KEY), b"other key of 16 bytes")
    assert not verify(learning(), KEY)
    assert not verify(learning(signature="zz"), KEY)
    assert not verify(learning(signature="é" * 64), KEY)  # non-ASCII: refused, not an exception
    assert verify(learning(signature=sign(learning(), KEY).upper()), KEY)


def test_empty_key_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        sign(learning(), b"")
    assert not verify(learning(signature="00"), b"")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("00ff" * 8, b"\x00\xff" * 8),
        ("hex:" + "00FF" * 8, b"\x00\xff" * 8),
        ("utf8:" + "00ff" * 8, b"00ff" * 8),
        ("correct horse battery staple", b"correct horse battery staple"),
        ("abc" * 11, b"abc" * 11),  # odd length: not hex
        ("  " + "00ff" * 8 + "\n", b"\x00\xff" * 8),
    ],
)
def test_parse_key(text: str, key: bytes) -> None:
    assert parse_key(text) == key


@pytest.mark.parametrize("text", ["00ff", "utf8:fifteen-bytes", "hex:" + "ab" * 15, "", "hex:", "hex:zz"])
def test_a_key_shorter_than_16_bytes_or_malformed_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"16 bytes|empty|non-hexadecimal"):
        parse_key(text)


def test_several_keys_one_per_line_for_a_rotation() -> None:
    text = "# new first\n" + "11" * 16 + "\n\n" + "utf8:the-old-key-of-the-agent\n"
    assert parse_keys(text) == (b"\x11" * 16, b"the-old-key-of-the-agent")
    with pytest.raises(ValueError, match=r"line 2: .*16 bytes"):
        parse_keys("11" * 16 + "\nutf8:short")


def test_key_ring_inline_wins_over_files_and_reads_files_lazily(tmp_path: Path) -> None:
    (tmp_path / "agent-1.key").write_text("hex:" + "01" * 16 + "\n")
    (tmp_path / "agent-2.key").write_text("22" * 16 + "\n")
    ring = KeyRing.from_config({"agent-1": "utf8:inline-key-of-agent-1"}, tmp_path)
    assert ring.get("agent-1") == (b"inline-key-of-agent-1",)
    assert ring.get("agent-2") == (b"\x22" * 16,)
    assert ring.get("agent-3") is None
    (tmp_path / "agent-3.key").write_bytes(b"\xff\xfe raw key bytes here")  # not UTF-8: the raw bytes are the key
    assert ring.get("agent-3") == (b"\xff\xfe raw key bytes here",)
    assert ring.get("../agent-1") is None  # not an agent id: never a path
    assert KeyRing.from_config({}, None).get("agent-1") is None


def test_key_ring_picks_up_a_changed_or_deleted_key_file_without_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "agent-1.key"
    path.write_text("11" * 16 + "\n")
    ring = KeyRing.from_config({}, tmp_path)
    assert ring.get("agent-1") == (b"\x11" * 16,)
    # Rewritten in place with a key of the same length, and the same mtime: the change time still differs.
    stat = path.stat()
    path.write_text("22" * 16 + "\n")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert ring.get("agent-1") == (b"\x22" * 16,)
    # Replaced by a new file (a rename, as editors and `mv` do): a new inode.
    (tmp_path / "new").write_text("33" * 16 + "\n" + "22" * 16 + "\n")
    os.replace(tmp_path / "new", path)
    assert ring.get("agent-1") == (b"\x33" * 16, b"\x22" * 16)
    path.unlink()  # deleted: the agent no longer has a key
    assert ring.get("agent-1") is None
    path.write_text("utf8:short\n")  # back, but too short: refused, never used
    with pytest.raises(KeyRingError, match="16 bytes"):
        ring.get("agent-1")


def test_key_ring_refuses_bad_configuration(tmp_path: Path) -> None:
    with pytest.raises(KeyRingError, match="agent 'a'"):
        KeyRing.from_config({"a": "hex:zz"}, None)
    with pytest.raises(KeyRingError, match=r"agent 'a'.*16 bytes"):
        KeyRing.from_config({"a": "utf8:short"}, None)
    with pytest.raises(KeyRingError, match="does not exist"):
        KeyRing.from_config({}, tmp_path / "missing")
    (tmp_path / "empty.key").write_text("\n")
    with pytest.raises(KeyRingError, match="empty"):
        KeyRing.from_config({}, tmp_path).get("empty")
    (tmp_path / "raw.key").write_bytes(b"\xff" * 15)
    with pytest.raises(KeyRingError, match="16 bytes"):
        KeyRing.from_config({}, tmp_path).get("raw")


def test_a_heartbeat_is_signed_and_verified_like_a_learning() -> None:
    beat = Heartbeat(
        agent_id="agent-1",
        skill="add",
        core_version=2,
        sent_at=datetime(2026, 11, 22, 9, 30, tzinfo=UTC),
        counters={"published": 3, "spool_size": 0},
        evaluation={"add": 0.5, "morse": 1.0},
    )
    sent = signed(beat, KEY)
    received = decode(encode(sent), Heartbeat, 100_000)
    assert verify(received, KEY)
    for change in ({"core_version": 3}, {"counters": {"published": 4, "spool_size": 0}}, {"state": "stopping"}):
        assert not verify(received.model_copy(update=change), KEY)
    assert not verify(beat, KEY)  # unsigned
    assert b"signature" not in canonical_bytes(sent) and b'"evaluation":{"add":0.5,"morse":1}' in canonical_bytes(sent)


def test_only_events_with_a_signature_field_can_be_signed() -> None:
    release = CoreRelease(version=1, model_uri="file:///x", sha256="0" * 64)
    assert verify(signed(release, KEY), KEY)
    with pytest.raises(TypeError, match="no signature field"):
        canonical_bytes(Feedback(reward=1.0))  # type: ignore[arg-type]


def test_module_exports_the_agreed_api() -> None:
    for name in ("canonical_bytes", "sign", "verify", "signed", "KeyRing"):
        assert hasattr(signing, name)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        # What Node's String(x) / JSON.stringify writes for each (checked against Node 20).
        (1.0, "1"),
        (-0.0, "0"),
        (0.1, "0.1"),
        (-2.6098, "-2.6098"),
        (-0.0001, "-0.0001"),
        (1e-5, "0.00001"),
        (1e-6, "0.000001"),
        (1e-7, "1e-7"),
        (1.5e-7, "1.5e-7"),
        (123.456, "123.456"),
        (1e20, "100000000000000000000"),
        (1e21, "1e+21"),
        (2.0**60, "1152921504606847000"),
        (5e-324, "5e-324"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
    ],
)
def test_numbers_are_written_as_ecmascript_does(value: float, text: str) -> None:
    assert signing.es_number(value) == text


def test_canonical_form_matches_rfc_8785_by_hand() -> None:
    item = learning(prompt='say "hi"\n\x01é', feedback=Feedback(reward=1.0), teacher=None)
    expected = (
        '{"agent_id":"agent-1","completion":"cba","core_version":3,"created_at":"2026-11-22T09:30:00.123456Z",'
        '"feedback":{"reward":1},"id":"00000000-0000-0000-0000-000000000007",'
        '"prompt":"say \\"hi\\"\\n\\u0001é","schema_version":"1.0","skill":"reverse"}'
    )
    assert canonical_bytes(item) == expected.encode("utf-8")


def test_lists_of_numbers_take_the_fast_path_and_write_exactly_what_es_number_writes() -> None:
    import random

    from streams.signing import _canonical, es_number

    def one_by_one(value: object) -> str:
        if isinstance(value, list):
            return "[" + ",".join(one_by_one(v) for v in value) + "]"
        return es_number(value) if type(value) is float else str(value)

    rng = random.Random(7)
    values = [rng.choice([-1, 1]) * 10 ** rng.uniform(-30, 30) for _ in range(20_000)]
    # Where repr() and ECMAScript part ways: integral floats, the exponent thresholds of both, zeros.
    values += [1.0, -3.0, 1e15, 1e16, 9.999999999999998e15, 1e-4, 9.99e-5, 1e-7, 1e21, 1e20, 0.0, -0.0, 0.5]
    rng.shuffle(values)
    for start in range(0, len(values), 64):
        row = values[start : start + 64]
        assert _canonical(row) == one_by_one(row)
        rows = [row[i : i + 8] for i in range(0, len(row), 8)]
        assert _canonical(rows) == one_by_one(rows)
    assert _canonical([[1, 2], [3]]) == "[[1,2],[3]]"
    assert _canonical([True, 1, 1.0]) == "[true,1,1]"  # a bool is not a number here
    assert _canonical([[1.5, 2], [3.0]]) == "[[1.5,2],[3]]"
    assert _canonical([]) == "[]" and _canonical([[]]) == "[[]]"
    with pytest.raises(ValueError, match="no JSON form"):
        _canonical([1.0, float("nan")])
