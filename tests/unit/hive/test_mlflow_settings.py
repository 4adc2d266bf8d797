"""HIVE_MLFLOW__*: a tracking server (or any tracking URI) in place of the SQLite file under HIVE_HOME."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from hive.config import HiveSettings, MlflowSettings
from hive.cores.registry import CoreRegistry

from factories import make_core_dir


def test_unset_the_hive_tracks_in_its_own_home(tmp_path: Path) -> None:
    settings = HiveSettings(home=tmp_path)
    assert settings.local_mlflow and settings.mlflow_uri == f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}"
    assert settings.mlflow_registry_uri == settings.mlflow_uri
    assert not settings.has_registry()  # nothing created yet, and reading must not create it
    registry = CoreRegistry.from_settings(settings)
    assert registry.artifact_root == (tmp_path / "mlartifacts").resolve()


def test_a_tracking_server_replaces_the_home_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIVE_HOME", str(tmp_path))
    monkeypatch.setenv("HIVE_MLFLOW__TRACKING_URI", "http://mlflow.internal:5000")
    monkeypatch.setenv("HIVE_MLFLOW__REGISTRY_URI", "http://registry.internal:5000")
    settings = HiveSettings()
    assert not settings.local_mlflow and settings.has_registry()
    assert settings.mlflow_uri == "http://mlflow.internal:5000"
    registry = CoreRegistry.from_settings(settings)
    # The server decides where artifacts go; the registry may be another server.
    assert registry.artifact_root is None
    assert (registry.tracking_uri, registry.registry_uri) == (
        "http://mlflow.internal:5000",
        "http://registry.internal:5000",
    )


def test_a_registry_without_a_tracking_uri_is_refused() -> None:
    with pytest.raises(ValidationError, match="REGISTRY_URI needs HIVE_MLFLOW__TRACKING_URI"):
        MlflowSettings(registry_uri="http://registry:5000")


def test_cores_register_through_the_configured_uri_and_nothing_lands_in_home(tmp_path: Path) -> None:
    elsewhere = tmp_path / "tracking"
    elsewhere.mkdir()
    uri = f"sqlite:///{elsewhere / 'server.db'}"
    settings = HiveSettings(home=tmp_path / "hive", mlflow=MlflowSettings(tracking_uri=uri))
    registry = CoreRegistry(
        settings.mlflow_uri,
        settings.registered_model,
        artifact_root=elsewhere / "artifacts",  # what a server's --artifacts-destination would be
        registry_uri=settings.mlflow_registry_uri,
    )
    core = make_core_dir(tmp_path / "core")
    from agents.model import WEIGHTS_FILE, file_sha256

    registry.log_core(core, 1, file_sha256(core / WEIGHTS_FILE))
    assert [row["core_version"] for row in registry.list_versions()] == [1]
    assert (elsewhere / "server.db").is_file()
    assert not (tmp_path / "hive" / "mlflow.db").exists()
