"""The hive's release key: made once, kept private, its public half published for agents; never replaced."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from hive.config import HiveSettings
from hive.cores.release_key import _create, release_key
from streams.release_signing import fingerprint, read_public_keys


def test_the_key_is_made_once_and_its_public_half_written(tmp_path: Path) -> None:
    settings = HiveSettings(home=tmp_path / "home")
    first = release_key(settings)
    assert settings.release_key_path == tmp_path / "home" / "release-key" / "release.pem"
    assert settings.release_key_path.stat().st_mode & 0o777 == 0o600
    assert [fingerprint(k) for k in read_public_keys(settings.release_public_key_path)] == [
        fingerprint(first.public_key())
    ]
    assert fingerprint(release_key(settings).public_key()) == fingerprint(first.public_key())
    # A public file someone overwrote is put back from the private key.
    settings.release_public_key_path.write_text("tampered\n")
    release_key(settings)
    assert fingerprint(read_public_keys(settings.release_public_key_path)[0]) == fingerprint(first.public_key())


def test_two_processes_making_the_key_at_once_end_with_one(tmp_path: Path) -> None:
    path = tmp_path / "release-key" / "release.pem"
    _create(path)
    made = path.read_bytes()
    _create(path)  # the second loses the race to link(): it keeps the first key
    assert path.read_bytes() == made
    assert sorted(p.name for p in path.parent.iterdir()) == ["release.pem"]  # no temp file left behind


def test_a_key_others_can_read_is_used_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = HiveSettings(home=tmp_path)
    release_key(settings)
    os.chmod(settings.release_key_path, 0o644)  # as a Kubernetes secret is mounted by default
    with caplog.at_level(logging.WARNING, logger="hive.cores.release_key"):
        release_key(settings)
    assert "readable by other users" in caplog.text
