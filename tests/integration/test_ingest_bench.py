"""``hive bench ingest`` end to end on the embedded broker: both arms move every learning, and the report says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hive.cli.app import app

runner = CliRunner()
COUNT = 300


def test_the_bench_moves_every_learning_through_both_arms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HIVE_KAFKA_BOOTSTRAP", raising=False)  # the command starts its own embedded broker
    report_path = tmp_path / "ingest.json"
    args = ["bench", "ingest", "--json", str(report_path), "--count", str(COUNT), "--repeats", "3"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "started the embedded broker" in result.stderr
    assert "ingest: hive" in result.stderr
    report = json.loads(report_path.read_text())
    assert {"hive", "raw", "ratio", "count", "payload_bytes", "machine", "date"} <= set(report)
    assert {"learnings_per_s", "wall_s"} <= set(report["hive"])
    assert {"records_per_s", "wall_s"} <= set(report["raw"])
    assert report["count"] == COUNT
    assert report["hive"]["stored"] == COUNT
    assert report["hive"]["polled"] == COUNT
    assert report["hive"]["dead_lettered"] == 0
    assert report["raw"]["consumed"] == COUNT
    assert report["ratio"] > 0
    assert report["ratio"] == pytest.approx(report["hive"]["learnings_per_s"] / report["raw"]["records_per_s"], 1e-2)
    # Three repeats of raw then hive, alternated: the ratio is their median, with its spread.
    ratios = [r["ratio"] for r in report["repeats"]]
    assert len(ratios) == 3 and result.stderr.count("repeat ") == 3
    assert report["ratio"] == sorted(ratios)[1] and (report["ratio_min"], report["ratio_max"]) == (
        min(ratios),
        max(ratios),
    )
    assert all(
        r["ratio"] == pytest.approx(r["hive_learnings_per_s"] / r["raw_records_per_s"], 1e-2) for r in report["repeats"]
    )
    assert report["payload_bytes"] > COUNT * 4000
    assert report["machine"]["cpu_count"] >= 1


def test_the_profile_names_the_ingest_functions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HIVE_KAFKA_BOOTSTRAP", raising=False)
    report_path = tmp_path / "ingest.json"
    args = ["bench", "ingest", "--json", str(report_path), "--count", "100", "--repeats", "1", "--profile"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    profile = (tmp_path / "ingest.json.profile.txt").read_text()
    assert "cumulative" in profile and "poll_once" in profile
    assert json.loads(report_path.read_text())["hive"]["profiled"] is True


def test_an_unreachable_broker_fails_with_exit_1(tmp_path: Path) -> None:
    # Port 1 on loopback: nothing listens there, so the topic creation fails fast.
    result = runner.invoke(
        app, ["bench", "ingest", "--json", str(tmp_path / "r.json"), "--count", "10", "--bootstrap", "127.0.0.1:1"]
    )
    assert result.exit_code == 1, result.output
    assert "bench failed" in result.stderr
    assert not (tmp_path / "r.json").exists()
