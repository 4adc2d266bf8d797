"""``hive ui`` on the command line: its options, and a clear exit when it cannot listen."""

from __future__ import annotations

import socket
from pathlib import Path

from typer.testing import CliRunner

from hive.cli.app import app


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
