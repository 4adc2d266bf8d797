"""``hive bench distill --model``: a model that cannot be benched exits 2, saying why, before anything trains."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from hive.cli.app import app

runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HIVE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HIVE_MODEL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "home"


@pytest.mark.parametrize(
    ("model", "said"),
    [
        ("smollm2-135m", "hive model prepare smollm2-135m"),
        ("/no/such/core", "neither a built-in model"),
    ],
)
def test_a_model_that_is_not_there_exits_2(home: Path, tmp_path: Path, model: str, said: str) -> None:
    report = tmp_path / "report.json"
    result = runner.invoke(app, ["bench", "distill", "--json", str(report), "--model", model])
    assert result.exit_code == 2, result.output
    assert "invalid --model" in result.stderr and said in result.stderr
    assert not report.exists()
    assert not (home / "bench").exists(), "nothing is built for a model that cannot be found"


def test_a_learning_rate_that_is_not_positive_exits_2(home: Path, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    result = runner.invoke(app, ["bench", "distill", "--json", str(report), "--lr", "0"])
    assert result.exit_code == 2, result.output
    assert "--lr must be positive" in result.stderr
    assert not report.exists()


def test_the_help_names_the_models_and_their_defaults() -> None:
    result = runner.invoke(app, ["bench", "distill", "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "--model" in result.stdout and "smollm2-135m" in result.stdout
    assert "--lr" in result.stdout


@pytest.mark.parametrize("tuning", ["full", "lora"])
def test_tuning_reaches_the_rounds_distill_params(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tuning: str
) -> None:
    import hive.bench.distill_bench as bench

    plans = []

    def fake_run(directory: Path, plan: bench.DistillBenchPlan, say: object, cache: Path) -> dict:
        plans.append(plan)
        raise bench.BenchError("stopped by the test")

    monkeypatch.setattr(bench, "run_distill_bench", fake_run)
    result = runner.invoke(app, ["bench", "distill", "--json", str(tmp_path / "r.json"), "--tuning", tuning])
    assert result.exit_code == 1, result.output
    assert [dict(p.distill_params) for p in plans] == [{"tuning": tuning}]


def test_an_unknown_tuning_exits_2(home: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["bench", "distill", "--json", str(tmp_path / "r.json"), "--tuning", "qlora"])
    assert result.exit_code == 2
