"""Agent settings: the spool bound and the signing key, from flags or ``HIVE_AGENT_*`` variables."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from agents.config import AgentSettings


def test_spool_and_key_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIVE_AGENT_SPOOL_MAX", "40")
    monkeypatch.setenv("HIVE_AGENT_SIGNING_KEY", "utf8:s3cret")
    settings = AgentSettings()
    assert settings.spool_max == 40
    assert settings.signing_key_bytes() == b"s3cret"
    assert "s3cret" not in repr(settings)  # a secret stays out of logs


def test_a_key_file_is_read_like_the_hive_reads_one(tmp_path: Path) -> None:
    text, raw = tmp_path / "a.key", tmp_path / "b.key"
    text.write_text("00ff10\n")
    raw.write_bytes(b"\xff\xfe\x00")
    assert AgentSettings(signing_key_file=text).signing_key_bytes() == bytes.fromhex("00ff10")
    assert AgentSettings(signing_key_file=raw).signing_key_bytes() == b"\xff\xfe\x00"
    assert AgentSettings().signing_key_bytes() is None


def test_bad_key_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="not both"):
        AgentSettings(signing_key="abcd", signing_key_file=tmp_path / "k")
    with pytest.raises(ValueError, match="empty"):
        AgentSettings(signing_key="hex:").signing_key_bytes()
    with pytest.raises(ValidationError):
        AgentSettings(spool_max=0)
