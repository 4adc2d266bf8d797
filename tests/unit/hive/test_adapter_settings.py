"""Which claim checks a round may follow: HIVE_ADAPTERS__* reach the distill job through the manifest."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.manifest import load_manifest
from hive.config import HiveSettings
from hive.cores.files import CoreFiles
from hive.rounds.book import RoundBook
from hive.rounds.open import open_round
from hive.store.parquet import ParquetLearningStore

from factories import make_learning


def test_the_default_root_is_where_the_hives_agents_save_their_specialists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HIVE_ADAPTERS__ROOTS", raising=False)
    monkeypatch.setenv("HIVE_HOME", "hive-home")
    settings = HiveSettings()
    home = tmp_path / "hive-home"
    # Beside the demo's agents, the specialists agents on other hosts upload (hive.cores.uploads).
    assert settings.adapter_roots == [(home / "agents").resolve(), (home / "uploads" / "adapters").resolve()]
    assert settings.adapters_manifest() == {
        "roots": [str(home / "agents"), str(home / "uploads" / "adapters")],
        "max_bytes": None,
    }


def test_roots_and_cap_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIVE_ADAPTERS__ROOTS", f'["{tmp_path / "a"}", "{tmp_path / "b"}"]')
    monkeypatch.setenv("HIVE_ADAPTERS__MAX_BYTES", "1048576")
    settings = HiveSettings(home=tmp_path)
    assert settings.adapter_roots == [tmp_path / "a", tmp_path / "b", tmp_path / "uploads" / "adapters"]
    assert settings.adapters.max_bytes == 1 << 20
    monkeypatch.setenv("HIVE_ADAPTERS__MAX_BYTES", "0")
    with pytest.raises(ValueError, match="greater than 0"):
        HiveSettings(home=tmp_path)


def test_a_rounds_manifest_carries_the_adapter_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIVE_ADAPTERS__MAX_BYTES", "4096")
    settings = HiveSettings(home=tmp_path)
    store = ParquetLearningStore(settings.store_dir)
    try:
        store.append([make_learning(prompt="1+1", completion="2")], {})
        book = RoundBook(settings.rounds_dir)
        record = open_round(settings, store, book, CoreFiles(0, tmp_path / "cores" / "v0", "0" * 64), "hive-rounds")
    finally:
        store.close()
    manifest = load_manifest(book.path(record.id) / "manifest.json")
    assert manifest.adapters.roots == [(tmp_path / "agents").resolve(), (tmp_path / "uploads" / "adapters").resolve()]
    assert manifest.adapters.max_bytes == 4096
