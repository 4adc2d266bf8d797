"""Ingest's sender checks: the allow-list, required signatures for agents with keys, unsigned agents."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from hive.config import HiveSettings, IngestSettings
from hive.ingest import DESCRIPTIONS, REASONS, SIGNATURE, UNKNOWN_AGENT, check_sender, keyring
from streams import codec
from streams.events import Feedback, Learning
from streams.signing import KeyRing, KeyRingError, signed


def learning(agent: str) -> Learning:
    return Learning(
        id=uuid.uuid4(),
        agent_id=agent,
        skill="s",
        core_version=0,
        prompt="p",
        completion="c",
        feedback=Feedback(reward=1),
    )


KEYS = KeyRing({"keyed": b"secret"})


def test_signed_and_keyless_learnings_pass() -> None:
    assert check_sender(signed(learning("keyed"), b"secret"), KEYS, None) is None
    assert check_sender(learning("keyless"), KEYS, None) is None
    assert check_sender(signed(learning("keyless"), b"whatever"), KEYS, None) is None  # nothing to check it with


@pytest.mark.parametrize(
    ("item", "match"),
    [
        (learning("keyed"), "not signed"),
        (signed(learning("keyed"), b"wrong"), "does not match"),
        (signed(learning("keyed"), b"secret").model_copy(update={"prompt": "tampered"}), "does not match"),
    ],
)
def test_agents_with_keys_must_sign(item: Learning, match: str) -> None:
    rejection = check_sender(item, KEYS, None)
    assert rejection is not None and rejection.reason == SIGNATURE
    assert match in rejection.detail


def test_allow_list_comes_first() -> None:
    allowed = {"keyed"}
    assert check_sender(signed(learning("keyed"), b"secret"), KEYS, allowed) is None
    rejection = check_sender(learning("stranger"), KEYS, allowed)
    assert rejection is not None and rejection.reason == UNKNOWN_AGENT
    rejection = check_sender(learning("keyed"), KEYS, set())  # an empty list admits nobody
    assert rejection is not None and rejection.reason == UNKNOWN_AGENT


def test_reasons_extend_the_codec_and_each_has_a_description() -> None:
    assert set(codec.REASONS) < set(REASONS)
    assert set(DESCRIPTIONS) == set(REASONS)


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "filed.key").write_text("0a0b\n")
    monkeypatch.setenv("HIVE_INGEST__AGENT_KEYS", '{"inline": "utf8:s3cret"}')
    monkeypatch.setenv("HIVE_INGEST__AGENT_KEY_DIR", str(tmp_path))
    monkeypatch.setenv("HIVE_INGEST__ALLOWED_AGENTS", '["inline", "filed"]')
    settings = HiveSettings()
    assert settings.ingest.allowed_agents == ["inline", "filed"]
    assert "s3cret" not in repr(settings)  # keys stay out of logs and tracebacks
    ring = keyring(settings.ingest)
    assert ring.get("inline") == b"s3cret"
    assert ring.get("filed") == b"\x0a\x0b"


def test_a_bad_key_is_refused_by_name() -> None:
    with pytest.raises(KeyRingError, match="'a1'"):
        keyring(IngestSettings(agent_keys={"a1": "hex:nothex"}))
