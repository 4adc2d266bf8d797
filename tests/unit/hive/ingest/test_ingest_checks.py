"""Ingest's checks: the sender policy (allow-list, revocation, required signatures), and known skills."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from pydantic import ValidationError

from agents.skills import BUILTIN_SKILLS
from agents.skills.splits import sample_task
from hive.config import HiveSettings, IngestSettings
from hive.ingest.admit import DESCRIPTIONS, HELD_OUT_PROMPT, REASONS, UNKNOWN_SKILL, check_held_out, check_skill
from hive.ingest.auth import REVOKED, SIGNATURE, UNKNOWN_AGENT, UNSIGNED, SenderPolicy, keyring
from streams import codec
from streams.events import Heartbeat, Learning
from streams.signing import KeyRing, signed

from factories import make_learning

SECRET = b"secret-key-16-bytes!"
OLD, NEW = b"o" * 32, b"n" * 32


KEYS = KeyRing({"keyed": (SECRET,), "rotating": (NEW, OLD)})


def policy(**kw: object) -> SenderPolicy:
    return SenderPolicy(KEYS, **kw)  # type: ignore[arg-type]


def test_signed_learnings_and_heartbeats_pass() -> None:
    assert policy().check(signed(make_learning("keyed"), SECRET)) is None
    beat = Heartbeat(agent_id="keyed", skill="add", core_version=0)
    assert policy().check(signed(beat, SECRET)) is None


def test_during_a_rotation_either_key_verifies() -> None:
    assert policy().check(signed(make_learning("rotating"), OLD)) is None
    assert policy().check(signed(make_learning("rotating"), NEW)) is None
    rejection = policy().check(signed(make_learning("rotating"), SECRET))
    assert rejection is not None and rejection.reason == SIGNATURE


def test_an_agent_without_a_key_is_refused_by_default() -> None:
    rejection = policy().check(make_learning("keyless"))
    assert rejection is not None and rejection.reason == UNSIGNED
    # Signed with some key is no better: the hive has nothing to check it with.
    rejection = policy().check(signed(make_learning("keyless"), SECRET))
    assert rejection is not None and rejection.reason == UNSIGNED
    beat = policy().check(Heartbeat(agent_id="keyless", skill="add", core_version=0))
    assert beat is not None and beat.reason == UNSIGNED
    # Only when signatures are not required is it admitted, unverified.
    open_policy = policy(require_signatures=False)
    assert open_policy.check(make_learning("keyless")) is None and open_policy.is_unsigned("keyless")


@pytest.mark.parametrize(
    ("item", "match"),
    [
        (make_learning("keyed"), "not signed"),
        (signed(make_learning("keyed"), b"wrong-key-of-16-bytes"), "does not match"),
        (signed(make_learning("keyed"), SECRET).model_copy(update={"prompt": "tampered"}), "does not match"),
    ],
)
def test_agents_with_keys_must_sign(item: Learning, match: str) -> None:
    rejection = policy().check(item)
    assert rejection is not None and rejection.reason == SIGNATURE
    assert match in rejection.detail


def test_a_revoked_agent_is_refused_even_when_correctly_signed() -> None:
    rejection = policy(revoked={"keyed"}).check(signed(make_learning("keyed"), SECRET))
    assert rejection is not None and rejection.reason == REVOKED
    beat = signed(Heartbeat(agent_id="keyed", skill="add", core_version=0), SECRET)
    rejection = policy(revoked={"keyed"}).check(beat)
    assert rejection is not None and rejection.reason == REVOKED


def test_allow_list_comes_first() -> None:
    allowed = {"keyed"}
    assert policy(allowed=allowed).check(signed(make_learning("keyed"), SECRET)) is None
    rejection = policy(allowed=allowed).check(make_learning("stranger"))
    assert rejection is not None and rejection.reason == UNKNOWN_AGENT
    rejection = policy(allowed=set()).check(make_learning("keyed"))  # an empty list admits nobody
    assert rejection is not None and rejection.reason == UNKNOWN_AGENT


def test_unknown_skills_are_refused() -> None:
    skills = {name: BUILTIN_SKILLS[name] for name in ("add", "capital")}
    assert check_skill(make_learning("a", "add"), skills) is None
    rejection = check_skill(make_learning("a", "reverse"), skills)
    assert rejection is not None and rejection.reason == UNKNOWN_SKILL and "'reverse'" in rejection.detail


def _zorbish_prompt(split: str) -> str:
    return sample_task(BUILTIN_SKILLS["zorbish"], random.Random(split), split)[0]  # type: ignore[arg-type]


@pytest.mark.parametrize("split", ["test", "validation"])
def test_a_learning_on_a_held_out_prompt_is_refused(split: str) -> None:
    skills = {"zorbish": BUILTIN_SKILLS["zorbish"], "add": BUILTIN_SKILLS["add"]}
    held_out = make_learning("a", "zorbish").model_copy(update={"prompt": _zorbish_prompt(split)})
    rejection = check_held_out(held_out, skills)
    assert rejection is not None and rejection.reason == HELD_OUT_PROMPT and split in rejection.detail
    trained = held_out.model_copy(update={"prompt": _zorbish_prompt("train")})
    assert check_held_out(trained, skills) is None
    # A recall skill's table is taught and tested alike: every prompt of it is admitted.
    assert check_held_out(make_learning("a", "add"), skills) is None


def test_reasons_extend_the_codec_and_each_has_a_description() -> None:
    assert set(codec.REASONS) < set(REASONS)
    assert {UNSIGNED, REVOKED, UNKNOWN_SKILL, codec.TIMESTAMP} <= set(REASONS)
    assert set(DESCRIPTIONS) == set(REASONS)


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "filed.key").write_text("0a0b" * 8 + "\n")
    monkeypatch.setenv("HIVE_INGEST__AGENT_KEYS", '{"inline": "utf8:s3cret-of-16-bytes"}')
    monkeypatch.setenv("HIVE_INGEST__AGENT_KEY_DIR", str(tmp_path))
    monkeypatch.setenv("HIVE_INGEST__ALLOWED_AGENTS", '["inline", "filed"]')
    monkeypatch.setenv("HIVE_INGEST__REVOKED_AGENTS", '["filed"]')
    settings = HiveSettings()
    assert settings.ingest.allowed_agents == ["inline", "filed"]
    assert settings.ingest.revoked_agents == ["filed"]
    assert settings.ingest.require_signatures  # the default: fail closed
    assert "s3cret" not in repr(settings)  # keys stay out of logs and tracebacks
    ring = keyring(settings.ingest)
    assert ring.get("inline") == (b"s3cret-of-16-bytes",)
    assert ring.get("filed") == (b"\x0a\x0b" * 8,)
    policy = SenderPolicy.from_settings(settings.ingest)
    rejection = policy.check(signed(make_learning("filed"), b"\x0a\x0b" * 8))
    assert rejection is not None and rejection.reason == REVOKED


@pytest.mark.parametrize("key", ["hex:nothex", "utf8:tiny-secret", "00ff", ""])
def test_a_bad_or_short_inline_key_is_refused_by_name_when_the_settings_are_read(key: str) -> None:
    with pytest.raises(ValidationError, match="'a1'") as info:
        IngestSettings(agent_keys={"a1": key})  # type: ignore[dict-item]
    assert "tiny-secret" not in str(info.value)  # the message names the agent, never the key
