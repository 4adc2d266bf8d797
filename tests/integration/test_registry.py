"""The core registry against a real MLflow on SQLite: register, alias, download, verify."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from agents.model import WEIGHTS_FILE, build_core, load_core, save_core
from hive.cores.registry import CoreIntegrityError, CoreRegistry, RegistryError


def _state_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_register_alias_download_verify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Run from an empty folder, so that anything MLflow writes outside the hive's home shows up.
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    home = tmp_path / "home"
    registry = CoreRegistry(f"sqlite:///{home / 'mlflow.db'}", artifact_root=home / "mlartifacts")

    core0, core1 = build_core(seed=1), build_core(seed=2)
    sha0 = save_core(core0, tmp_path / "v0")
    sha1 = save_core(core1, tmp_path / "v1")
    assert sha0 != sha1

    start = time.perf_counter()
    assert registry.champion_version() is None  # the first call creates and migrates the database
    first_call = time.perf_counter() - start

    start = time.perf_counter()
    mv0 = registry.log_core(tmp_path / "v0", 0, sha0, metrics={"acc/reverse": 0.5}, round_id="r0")
    registry.set_alias("champion", 0)
    mv1 = registry.log_core(tmp_path / "v1", 1, sha1, round_id="r1")
    registry.set_alias("champion", 1)
    registry.set_alias("previous", 0)
    register_time = time.perf_counter() - start

    assert (mv0, mv1) == ("1", "2")  # MLflow counts from 1; the tag keeps our numbering
    assert registry.champion_version() == 1
    assert registry.alias_version("previous") == 0
    assert registry.alias_version("canary") is None

    rows = registry.list_versions()
    assert [(r["core_version"], r["mlflow_version"], r["sha256"], r["round_id"]) for r in rows] == [
        (0, "1", sha0, "r0"),
        (1, "2", sha1, "r1"),
    ]
    assert [r["aliases"] for r in rows] == [["previous"], ["champion"]]

    start = time.perf_counter()
    got = registry.download("champion", tmp_path / "dl")
    download_time = time.perf_counter() - start
    assert (got / WEIGHTS_FILE).is_file()
    assert _state_equal(load_core(got), core1)
    assert not _state_equal(load_core(registry.download(0, tmp_path / "dl0")), core1)

    # Everything lives under the hive's home: nothing in the working directory (no ./mlruns, no ./mlflow.db).
    assert list(cwd.iterdir()) == []
    stored = list((home / "mlartifacts").rglob(WEIGHTS_FILE))
    assert len(stored) == 2

    # A second registry on the same database sees the same state (a fresh process would).
    again = CoreRegistry(f"sqlite:///{home / 'mlflow.db'}")
    assert again.champion_version() == 1
    assert again.artifact_root == (home / "mlartifacts").resolve()

    print(
        f"\nregistry timing: first call (create + migrate SQLite) {first_call:.2f}s, "
        f"2x log_core + 3x set_alias {register_time:.2f}s, download {download_time:.2f}s"
    )


def test_tampered_core_fails_verification(tmp_path: Path) -> None:
    home = tmp_path / "home"
    registry = CoreRegistry(f"sqlite:///{home / 'mlflow.db'}", artifact_root=home / "mlartifacts")
    core_dir = tmp_path / "v0"
    sha = save_core(build_core(seed=1), core_dir)
    registry.log_core(core_dir, 0, sha)
    registry.set_alias("champion", 0)

    # Flip one byte of the stored artifact, as a corrupt disk or a malicious edit would.
    (stored,) = (home / "mlartifacts").rglob(WEIGHTS_FILE)
    data = bytearray(stored.read_bytes())
    data[-1] ^= 0xFF
    stored.write_bytes(bytes(data))

    with pytest.raises(CoreIntegrityError, match=f"registered with {sha}.*tampered"):
        registry.download("champion", tmp_path / "dl")

    # Registering a file whose hash is not the one claimed, or a core version twice, is refused up front.
    with pytest.raises(CoreIntegrityError, match="registered with 0000"):
        registry.log_core(core_dir, 1, "0000")
    with pytest.raises(RegistryError, match="core version 0 is already registered"):
        registry.log_core(core_dir, 0, sha)
    with pytest.raises(RegistryError, match="core version 7 is not registered"):
        registry.set_alias("champion", 7)
    with pytest.raises(RegistryError, match="alias 'canary' is not set"):
        registry.download("canary", tmp_path / "dl2")
    assert [r["core_version"] for r in registry.list_versions()] == [0]


def test_log_core_into_an_existing_run(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    home = tmp_path / "home"
    uri = f"sqlite:///{home / 'mlflow.db'}"
    registry = CoreRegistry(uri)
    # Stands in for the distillation run: it owns the run, so the registry must leave it open.
    client = MlflowClient(tracking_uri=uri)
    run_id = client.create_run(registry.experiment_id(), run_name="distill-r3").info.run_id
    core_dir = tmp_path / "v3"
    sha = save_core(build_core(seed=3), core_dir)

    assert registry.log_core(core_dir, 3, sha, metrics={"gate/min_delta": -0.01}, run_id=run_id, round_id="r3") == "1"

    run = client.get_run(run_id)
    assert run.info.status == "RUNNING"
    assert run.data.metrics == {"gate/min_delta": -0.01}
    assert run.data.tags["core_version"] == "3"
    assert {a.path for a in client.list_artifacts(run_id, "core")} >= {"core/model.safetensors", "core/config.json"}
    assert Path(run.info.artifact_uri.removeprefix("file://")).is_relative_to((home / "mlartifacts").resolve())
    assert registry.list_versions()[0]["round_id"] == "r3"
