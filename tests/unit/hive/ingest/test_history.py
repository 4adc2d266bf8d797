"""The ingest history: one line per minute that saw a batch, read back for the dashboard's charts."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hive.ingest import history
from hive.ingest.history import IngestHistory, read_history, recent

T0 = datetime(2026, 12, 2, 10, 0, 5, tzinfo=UTC)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_each_minute_becomes_one_line_when_it_is_over(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    h = IngestHistory(path)
    h.record(3, 1, 2, [T0 - timedelta(seconds=s) for s in (1, 2, 9)], now=T0)
    h.record(2, 0, 0, [T0 - timedelta(seconds=4)] * 2, now=T0 + timedelta(seconds=30))
    assert not path.exists()  # the minute is not over yet
    h.record(1, 0, 0, [T0], now=T0 + timedelta(minutes=1))
    [first] = _lines(path)
    assert first["minute"] == "2026-12-02T10:00:00+00:00"
    assert (first["stored"], first["duplicates"], first["dead_lettered"], first["learnings"]) == (5, 1, 2, 5)
    # Lags 1, 2, 9 at 10:00:05 and 34, 34 at 10:00:35: median 9, largest 34.
    assert first["lag_p50_s"] == 9.0 and first["lag_max_s"] == 34.0
    h.flush()  # at stop, the partial minute is written too
    assert [line["minute"] for line in _lines(path)] == ["2026-12-02T10:00:00+00:00", "2026-12-02T10:01:00+00:00"]
    h.flush()  # nothing more to write
    assert len(_lines(path)) == 2


def test_a_future_or_zone_less_time_never_breaks_the_count(tmp_path: Path) -> None:
    h = IngestHistory(tmp_path / "h.jsonl")
    h.record(2, 0, 0, [T0 + timedelta(hours=1), T0.replace(tzinfo=None) - timedelta(seconds=10)], now=T0)
    h.flush()
    [line] = _lines(tmp_path / "h.jsonl")
    assert line["lag_max_s"] == 10.0  # the zone-less time read as UTC; the future one counts as 0
    assert line["lag_p50_s"] == 5.0


def test_a_minute_of_dead_letters_only_has_no_lag(tmp_path: Path) -> None:
    h = IngestHistory(tmp_path / "h.jsonl")
    h.record(0, 0, 4, [], now=T0)
    h.flush()
    [line] = read_history(tmp_path / "h.jsonl")
    assert line["dead_lettered"] == 4 and line["lag_p50_s"] is None and line["lag_max_s"] is None


def test_the_file_keeps_the_newest_minutes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(history, "MAX_MINUTES", 3)
    path = tmp_path / "h.jsonl"
    h = IngestHistory(path)
    for i in range(6):
        h.record(i, 0, 0, [], now=T0 + timedelta(minutes=i))
    h.flush()
    assert [line["stored"] for line in _lines(path)] == [3, 4, 5]
    # A new process counts what the file holds.
    assert IngestHistory(path)._lines == 3


def test_a_disk_that_refuses_the_line_does_not_stop_ingest(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "h.jsonl"
    path.mkdir()  # cannot be appended to
    h = IngestHistory(path)
    with caplog.at_level(logging.ERROR):
        h.record(1, 0, 0, [T0], now=T0)
        h.flush()
    assert "cannot write the ingest history" in caplog.text


def test_reading_skips_what_is_not_a_minute_and_keeps_the_window(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    good = {"minute": "2026-12-02T10:00:00+00:00", "stored": 1, "duplicates": 0, "dead_lettered": 0}
    newer = good | {"minute": "2026-12-02T11:30:00+00:00", "stored": 2, "lag_p50_s": 0.5, "lag_max_s": 1.0}
    path.write_text(
        "\n".join(
            [
                json.dumps(good),
                json.dumps(good | {"minute": "2026-12-02T10:01:00"}),  # no zone
                json.dumps(["not", "a", "minute"]),
                json.dumps(good | {"stored": "many"}),
                json.dumps(newer),
                '{"minute": "2026-12-02T11:31',  # torn
            ]
        )
    )
    assert [m["stored"] for m in read_history(path)] == [1, 2]
    assert [m["stored"] for m in recent(path, 1.0, now=datetime(2026, 12, 2, 12, 0, tzinfo=UTC))] == [2]
    assert read_history(tmp_path / "absent.jsonl") == []
