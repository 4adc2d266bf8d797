"""``hive model list|prepare`` as a user runs them, with a model cache of the test's own (nothing is downloaded)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hive.cli.app import app
from hive.cores.pretrained import SMOLLM2, SOURCE_FILE, expected_source

from factories import make_core_dir

runner = CliRunner()


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("HIVE_MODEL_CACHE", str(tmp_path / "models"))
    monkeypatch.delenv("HIVE_MODEL__PATH", raising=False)
    return tmp_path / "models"


def test_list_shows_the_built_in_models_and_which_one_is_selected(cache: Path) -> None:
    result = runner.invoke(app, ["model", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [row["name"] for row in rows] == ["tiny", "smollm2-135m"]
    assert [row["selected"] for row in rows] == [True, False]
    assert rows[1]["directory"] == str(cache / "smollm2-135m")
    assert rows[1]["status"].startswith("not prepared")


def test_list_marks_a_prepared_model_and_a_local_directory(
    monkeypatch: pytest.MonkeyPatch, cache: Path, tmp_path: Path
) -> None:
    cached = make_core_dir(cache / "smollm2-135m")
    (cached / SOURCE_FILE).write_text(json.dumps(expected_source(SMOLLM2, "5.0")))
    monkeypatch.setenv("HIVE_MODEL__PATH", str(tmp_path / "mine"))
    missing = json.loads(runner.invoke(app, ["model", "list", "--json"]).stdout)
    assert missing[-1]["status"] == "not found: no such directory"
    make_core_dir(tmp_path / "mine")
    rows = json.loads(runner.invoke(app, ["model", "list", "--json"]).stdout)
    assert [(row["name"], row["status"], row["selected"]) for row in rows] == [
        ("tiny", "ready", False),
        ("smollm2-135m", "prepared", False),
        (str(tmp_path / "mine"), "local directory", True),
    ]
    table = runner.invoke(app, ["model", "list"])
    assert table.exit_code == 0, table.output
    assert "smollm2-135m" in table.stdout
    assert "prepared" in table.stdout


def test_prepare_of_an_unknown_name_exits_2(cache: Path) -> None:
    result = runner.invoke(app, ["model", "prepare", "gpt-5"])
    assert result.exit_code == 2, result.output
    assert "unknown model 'gpt-5'" in result.stderr
    assert "tiny, smollm2-135m" in result.stderr
    assert not cache.exists()


def test_prepare_of_tiny_has_nothing_to_do(cache: Path) -> None:
    result = runner.invoke(app, ["model", "prepare", "tiny"])
    assert result.exit_code == 0, result.output
    assert "nothing to prepare" in result.stderr


def test_prepare_refuses_a_source_whose_sha256_is_not_the_pinned_one(cache: Path, tmp_path: Path) -> None:
    fake = tmp_path / SMOLLM2.file_name
    fake.write_bytes(b"GGUF but not the pinned file")
    result = runner.invoke(app, ["model", "prepare", "smollm2-135m", "--gguf", str(fake)])
    assert result.exit_code == 1, result.output
    assert f"{fake}: sha256 {hashlib.sha256(fake.read_bytes()).hexdigest()}" in result.stderr
    assert f"pinned to {SMOLLM2.sha256}" in result.stderr
    assert result.stdout == ""
    assert not (cache / "smollm2-135m").exists()


def test_prepare_of_a_missing_file_exits_1(cache: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["model", "prepare", "smollm2-135m", "--gguf", str(tmp_path / "nope.gguf")])
    assert result.exit_code == 1, result.output
    assert "no such file" in result.stderr
