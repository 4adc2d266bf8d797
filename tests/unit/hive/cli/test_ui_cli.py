"""``hive ui`` on the command line: its options, and a clear exit when it cannot listen."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from typer.testing import CliRunner
from uvicorn.importer import import_from_string

from hive.cli.app import app
from hive.cli.ui import DASHBOARD_APP, dashboard_environment


def test_help_names_the_options() -> None:
    result = CliRunner().invoke(app, ["ui", "--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--allow-actions"):
        assert option in result.output


def test_a_port_in_use_exits_1(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = CliRunner().invoke(
            app, ["ui", "--port", str(port)], env={"HIVE_HOME": str(tmp_path), "HIVE_KAFKA_BOOTSTRAP": ""}
        )
    assert result.exit_code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.output


def test_a_bad_port_is_a_usage_error() -> None:
    assert CliRunner().invoke(app, ["ui", "--port", "70000"]).exit_code == 2


def test_actions_on_a_non_loopback_address_need_a_token(tmp_path: Path) -> None:
    env = {"HIVE_HOME": str(tmp_path), "HIVE_KAFKA_BOOTSTRAP": "", "HIVE_UI_TOKEN": ""}
    for host in ("0.0.0.0", "192.0.2.1", "::", "dashboard.example"):
        result = CliRunner().invoke(app, ["ui", "--host", host, "--allow-actions"], env={**env})
        assert result.exit_code == 2, host
        assert "needs --token" in result.output


def test_a_short_token_is_refused(tmp_path: Path) -> None:
    env = {"HIVE_HOME": str(tmp_path), "HIVE_KAFKA_BOOTSTRAP": ""}
    result = CliRunner().invoke(app, ["ui", "--host", "0.0.0.0", "--allow-actions", "--token", "short"], env=env)
    assert result.exit_code == 2
    assert "at least 16 characters" in result.output


def test_loopback_is_told_by_address() -> None:
    from hive.config import is_loopback

    assert all(is_loopback(h) for h in ("127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "localhost.evil.example", "127.0.0.1.nip.io"))


def test_a_missing_key_directory_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HIVE_UI_HOST", raising=False)
    env = {
        "HIVE_HOME": str(tmp_path),
        "HIVE_KAFKA_BOOTSTRAP": "127.0.0.1:1",  # a broker configured: the fleet page checks heartbeats' keys
        "HIVE_INGEST__AGENT_KEY_DIR": str(tmp_path / "no-such-dir"),
    }
    result = CliRunner().invoke(app, ["ui", "--port", "0"], env=env)
    assert result.exit_code == 2, result.output
    assert "invalid HIVE_INGEST__* settings" in result.output and "no-such-dir" in result.output
    # The options were handed to the dashboard's factory for its build only.
    assert "HIVE_UI_HOST" not in os.environ


def test_the_options_reach_the_dashboard_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``hive ui`` hands over (by import string and HIVE_UI_* variables) is what the app serves."""
    monkeypatch.setenv("HIVE_HOME", str(tmp_path))
    monkeypatch.setenv("HIVE_KAFKA_BOOTSTRAP", "")
    token = "a-token-of-20-chars!"
    for name, value in dashboard_environment("localhost", allow_actions=True, token=token).items():
        monkeypatch.setenv(name, value)
    factory = import_from_string(DASHBOARD_APP)
    with TestClient(factory(), base_url="http://localhost") as c:
        assert "actions enabled" in c.get("/").text
        assert c.post("/api/cores/rollback").status_code == 401
        assert c.post("/api/cores/rollback", headers={"Authorization": f"Bearer {token}"}).status_code == 503
    with TestClient(factory(), base_url="http://evil.example") as c:
        assert c.get("/").status_code == 400
    for name, value in dashboard_environment("127.0.0.1", allow_actions=False, token=None).items():
        monkeypatch.setenv(name, value)
    with TestClient(factory(), base_url="http://127.0.0.1") as c:
        assert "read-only" in c.get("/").text
        assert c.post("/api/cores/rollback").status_code in (404, 405)


def test_the_factory_refuses_unsafe_options_when_uvicorn_is_pointed_at_it_directly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone may run ``uvicorn hive.ui.app:app_from_env --factory`` without ``hive ui``'s checks."""
    monkeypatch.setenv("HIVE_HOME", str(tmp_path))
    monkeypatch.setenv("HIVE_KAFKA_BOOTSTRAP", "")
    factory = import_from_string(DASHBOARD_APP)
    for host, token, says in (("0.0.0.0", "", "needs --token"), ("127.0.0.1", "short", "at least 16 characters")):
        for name, value in dashboard_environment(host, allow_actions=True, token=token or None).items():
            monkeypatch.setenv(name, value)
        with pytest.raises(ValidationError, match=says):
            factory()
