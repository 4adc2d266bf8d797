"""Agent settings: the spool bound and the signing key, from flags or ``HIVE_AGENT_*`` variables."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from agents.config import AgentSettings


def test_spool_and_key_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIVE_AGENT_SPOOL_MAX", "40")
    monkeypatch.setenv("HIVE_AGENT_SIGNING_KEY", "utf8:s3cret-of-16-bytes")
    settings = AgentSettings()
    assert settings.spool_max == 40
    assert settings.signing_key_bytes() == b"s3cret-of-16-bytes"
    assert "s3cret" not in repr(settings)  # a secret stays out of logs


def test_a_key_file_is_read_like_the_hive_reads_one(tmp_path: Path) -> None:
    text, raw = tmp_path / "a.key", tmp_path / "b.key"
    text.write_text("00ff10" * 6 + "\n")
    raw.write_bytes(b"\xff\xfe\x00" * 6)
    assert AgentSettings(signing_key_file=text).signing_key_bytes() == bytes.fromhex("00ff10" * 6)
    assert AgentSettings(signing_key_file=raw).signing_key_bytes() == b"\xff\xfe\x00" * 6
    assert AgentSettings().signing_key_bytes() is None


def test_during_a_rotation_the_agent_signs_with_the_first_key(tmp_path: Path) -> None:
    path = tmp_path / "a.key"
    path.write_text(
        "# the new key first, the old one until every agent has the new one\n" + "11" * 16 + "\n" + "22" * 16
    )
    assert AgentSettings(signing_key_file=path).signing_key_bytes() == b"\x11" * 16


@pytest.mark.parametrize("key", ["utf8:short", "00ff", "hex:" + "ab" * 15])
def test_a_key_shorter_than_16_bytes_is_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        AgentSettings(signing_key=key).signing_key_bytes()
    path = tmp_path / "short.key"
    path.write_text(key + "\n")
    with pytest.raises(ValueError, match=f"{path}.*at least 16 bytes"):
        AgentSettings(signing_key_file=path).signing_key_bytes()
    path.write_bytes(b"\xff" * 15)  # raw bytes too
    with pytest.raises(ValueError, match="at least 16 bytes"):
        AgentSettings(signing_key_file=path).signing_key_bytes()


def test_bad_key_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="not both"):
        AgentSettings(signing_key="abcd", signing_key_file=tmp_path / "k")
    with pytest.raises(ValueError, match="empty"):
        AgentSettings(signing_key="hex:").signing_key_bytes()
    with pytest.raises(ValidationError):
        AgentSettings(spool_max=0)


def test_an_agent_learns_on_every_core_and_meets_later_skills_in_order() -> None:
    settings = AgentSettings(skill="capital", learn_steps=300, later_skills=["next", "swap"])
    assert [settings.steps_on_core(k) for k in range(3)] == [300, 300, 300]  # relearn_steps unset: learn_steps
    assert [settings.skill_on_core(k) for k in range(5)] == ["capital", "next", "swap", "swap", "swap"]
    only_serves = AgentSettings(learn_steps=300, relearn_steps=0)
    assert [only_serves.steps_on_core(k) for k in range(3)] == [300, 0, 0]
    assert [AgentSettings(skill="add").skill_on_core(k) for k in range(3)] == ["add"] * 3
    with pytest.raises(ValidationError):
        AgentSettings(relearn_steps=-1)
