"""The ``hive`` command as a user runs it: version, help, schema export, and an agent with no broker."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from hive import __version__
from hive.cli.app import app
from hive.schemas import EXAMPLE_FILE, SCHEMA_FILES

runner = CliRunner()


def test_version_prints_the_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"hive-mind {__version__}"


def test_no_arguments_shows_help() -> None:
    result = runner.invoke(app, [])
    # Click exits 2 after printing help for a bare group (no_args_is_help), as for any usage error.
    assert result.exit_code == 2, result.output
    assert "Usage:" in result.output
    for group in ("agent", "demo", "schemas"):
        assert group in result.output


def test_schemas_export_writes_the_four_files(tmp_path: Path) -> None:
    out = tmp_path / "schemas"
    result = runner.invoke(app, ["schemas", "export", "--out", str(out)])
    assert result.exit_code == 0, result.output
    names = {*SCHEMA_FILES, EXAMPLE_FILE}
    assert {p.name for p in out.iterdir()} == names
    assert sorted(Path(line).name for line in result.stdout.splitlines()) == sorted(names)


def test_schemas_export_reports_an_unwritable_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    result = runner.invoke(app, ["schemas", "export", "--out", str(blocker / "schemas")])
    assert result.exit_code == 1
    assert "cannot write the schemas" in result.stderr


def test_agent_run_without_a_broker_exits_2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HIVE_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["agent", "run", "--id", "agent-1", "--skill", "capital"])
    assert result.exit_code == 2, result.output
    assert "HIVE_KAFKA_BOOTSTRAP is not set" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("command", [["serve"], ["demo", "--json"]])
def test_a_model_that_cannot_become_core_v0_is_a_usage_error(tmp_path: Path, command: list[str]) -> None:
    """A new hive builds core v0 from HIVE_MODEL__PATH: refused before any broker or agent starts."""
    bad = tmp_path / "model"
    bad.mkdir()
    (bad / "config.json").write_text('{"model_type": "llama", "vocab_size": 10}')
    (bad / "pytorch_model.bin").write_bytes(b"pickle")
    env = {"HIVE_HOME": str(tmp_path / "home"), "HIVE_KAFKA_BOOTSTRAP": "127.0.0.1:1"}
    for path, says in ((str(bad), "pytorch_model.bin"), (str(tmp_path / "nowhere"), "neither a built-in model")):
        result = CliRunner().invoke(app, command, env={**env, "HIVE_MODEL__PATH": path})
        assert result.exit_code == 2, result.output
        assert "invalid HIVE_MODEL__PATH" in result.output and says in result.output


def test_core_key_prints_the_public_key_agents_pin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from streams.release_signing import fingerprint, parse_public_keys

    monkeypatch.setenv("HIVE_HOME", str(tmp_path / "hive"))
    monkeypatch.delenv("HIVE_RELEASE_KEY_FILE", raising=False)
    result = runner.invoke(app, ["core", "key"])
    assert result.exit_code == 0, result.output
    [key] = parse_public_keys(result.stdout)
    assert (tmp_path / "hive" / "release-key" / "release.pub").read_text() == result.stdout
    assert (tmp_path / "hive" / "release-key" / "release.pem").stat().st_mode & 0o077 == 0
    again = runner.invoke(app, ["core", "key", "--fingerprint"])  # the same key: made once
    assert again.exit_code == 0 and again.stdout.strip() == fingerprint(key)
    assert fingerprint(key) in result.stderr


def test_core_key_refuses_a_configured_key_that_is_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HIVE_HOME", str(tmp_path / "hive"))
    monkeypatch.setenv("HIVE_RELEASE_KEY_FILE", str(tmp_path / "secrets" / "release.pem"))
    result = runner.invoke(app, ["core", "key"])
    assert result.exit_code == 1
    assert "release.pem cannot be read" in result.stderr and result.stdout == ""
    assert not (tmp_path / "hive" / "keys").exists()
