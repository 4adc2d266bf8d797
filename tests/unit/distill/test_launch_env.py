"""The launcher's environment: what every DeepSpeed job gets, whoever starts it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from distill.launch import PROJECT_ROOT, launch_env


def test_the_comm_op_builds_in_this_environment_of_python(monkeypatch: pytest.MonkeyPatch) -> None:
    # A build lock left by a killed build in another environment's directory must not hang this one.
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)
    env = launch_env()
    assert env["TORCH_EXTENSIONS_DIR"] == str(Path(sys.prefix) / "torch_extensions")
    assert env["DS_ACCELERATOR"] == "cpu"
    assert env["PYTHONPATH"].split(":")[0] == str(PROJECT_ROOT)


def test_an_operator_s_extensions_directory_is_kept(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    assert launch_env()["TORCH_EXTENSIONS_DIR"] == str(tmp_path)
