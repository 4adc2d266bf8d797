"""``hive bench`` as a user runs it: the group lists its commands, and bad input fails before any training."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from hive.cli.app import app

runner = CliRunner()


def test_bench_help_lists_distill() -> None:
    result = runner.invoke(app, ["bench", "--help"])
    assert result.exit_code == 0, result.output
    assert "distill" in result.stdout


def test_the_root_help_lists_bench() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    assert "bench" in result.stdout


def test_distill_needs_a_json_path() -> None:
    result = runner.invoke(app, ["bench", "distill"])
    assert result.exit_code == 2
    assert "--json" in result.output


def test_a_batch_that_does_not_split_over_the_ranks_exits_2(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    result = runner.invoke(app, ["bench", "distill", "--json", str(report), "--nproc", "2", "--batch-size", "63"])
    assert result.exit_code == 2, result.output
    assert "does not split" in result.stderr
    assert not report.exists()
