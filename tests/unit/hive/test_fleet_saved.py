"""The last-known fleet view under HIVE_HOME: saved whole, read back as it was, and shown without a broker."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from hive.cli.app import app
from hive.config import HiveSettings
from hive.fleet import FleetView
from hive.fleet_saved import FleetSaver, SavedViewError, load_view, save_view, saved_view_path
from hive.ui.app import create_app
from streams.events import Heartbeat


def a_view(when: datetime) -> FleetView:
    view = FleetView()
    for n, core in ((1, 2), (2, 1)):
        view.offer(
            Heartbeat(
                agent_id=f"agent-{n}",
                skill="add",
                core_version=core,
                sent_at=when - timedelta(seconds=n),
                state="serving",
                counters={"spool_size": n},
                evaluation={"add": 0.5 * n},
            )
        )
    view.rejected, view.rejected_by_reason = 3, {"signature": 3}
    return view


def test_a_saved_view_reads_back_as_it_was(tmp_path: Path) -> None:
    settings = HiveSettings(home=tmp_path)
    when = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)
    view = a_view(when)
    save_view(saved_view_path(settings), view, now=when)

    saved = load_view(settings)

    assert saved is not None and saved.as_of == when
    assert saved.view.latest == view.latest and saved.view.evaluations == view.evaluations
    assert (saved.view.rejected, saved.view.rejected_by_reason) == (3, {"signature": 3})
    assert saved.view.runs == view.runs and len(saved.view.runs["agent-1"]) == 1  # the timeline too
    assert [p.name for p in tmp_path.iterdir()] == ["fleet-view.json"]  # no temp file left


def test_a_view_saved_before_the_timeline_reads_back_without_one(tmp_path: Path) -> None:
    settings = HiveSettings(home=tmp_path)
    when = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)
    save_view(saved_view_path(settings), a_view(when), now=when)
    document = json.loads(saved_view_path(settings).read_text())
    del document["runs"]
    saved_view_path(settings).write_text(json.dumps(document))
    saved = load_view(settings)
    assert saved is not None and saved.view.runs == {} and len(saved.view.latest) == 2
    document["runs"] = [{"agent_id": "a", "core_version": 1, "first": "2026-12-02T08:00:00", "last": "x"}]
    saved_view_path(settings).write_text(json.dumps(document))
    with pytest.raises(SavedViewError, match="not a fleet view"):
        load_view(settings)


@pytest.mark.parametrize(
    "content",
    [b"{", b"[]", b'{"format": 2}', b'{"format": 1, "as_of": "2026-12-02T08:00:00", "heartbeats": []}', b"\xff"],
)
def test_a_damaged_view_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    settings = HiveSettings(home=tmp_path)
    saved_view_path(settings).write_bytes(content)
    with pytest.raises(SavedViewError, match=r"fleet-view\.json"):
        load_view(settings)


class OneView:
    def __init__(self, view: FleetView) -> None:
        self.view = view

    def snapshot(self) -> FleetView:
        return self.view


def test_the_saver_writes_only_when_the_view_changed_and_survives_a_full_disk(tmp_path: Path) -> None:
    tracker = OneView(FleetView())
    saver = FleetSaver(tracker, tmp_path / "fleet-view.json")  # type: ignore[arg-type]
    saver.save_if_changed()
    assert saver.saves == 0  # nothing heard yet: nothing to keep
    tracker.view = a_view(datetime.now(UTC))
    saver.save_if_changed()
    saver.save_if_changed()
    assert saver.saves == 1
    blocked = FleetSaver(tracker, tmp_path / "a-file" / "fleet-view.json")  # type: ignore[arg-type]
    (tmp_path / "a-file").write_text("not a directory")
    blocked.save_if_changed()  # logged, not raised
    assert blocked.saves == 0


def test_hive_fleet_without_a_broker_shows_the_saved_view_and_says_so(tmp_path: Path) -> None:
    settings = HiveSettings(home=tmp_path)
    env = {"HIVE_HOME": str(tmp_path), "HIVE_KAFKA_BOOTSTRAP": ""}
    result = CliRunner().invoke(app, ["fleet", "--json"], env=env)
    assert result.exit_code == 2 and "saved no fleet view" in result.stderr

    when = datetime.now(UTC) - timedelta(minutes=30)
    save_view(saved_view_path(settings), a_view(when), now=when)
    result = CliRunner().invoke(app, ["fleet", "--json"], env=env)

    assert result.exit_code == 0, result.output
    assert "last-known fleet view, as of" in result.stderr and "30 min ago" in result.stderr
    report = json.loads(result.stdout)
    assert report["source"] == "saved" and report["as_of"] == when.isoformat()
    assert [(a["agent_id"], a["core_version"], a["lag"]) for a in report["agents"]] == [
        ("agent-1", 2, 1),
        ("agent-2", 1, 2),
    ]
    assert all(a["active"] for a in report["agents"])  # as of the snapshot, they were


def test_the_dashboard_falls_back_to_the_saved_view(tmp_path: Path) -> None:
    settings = HiveSettings(home=tmp_path)
    when = datetime.now(UTC) - timedelta(hours=2)
    save_view(saved_view_path(settings), a_view(when), now=when)
    with TestClient(create_app(settings)) as client:
        data = client.get("/api/fleet").json()
        page = client.get("/fleet").text
    assert data["source"] == "saved" and data["as_of"] == when.isoformat()
    assert 'id="fleet-saved"' in page and "last-known fleet view" in page and 'data-agent="agent-2"' in page


def test_an_unreachable_broker_falls_back_too(tmp_path: Path) -> None:
    settings = HiveSettings(home=tmp_path)
    when = datetime.now(UTC)
    save_view(saved_view_path(settings), a_view(when), now=when)
    env = {"HIVE_HOME": str(tmp_path), "HIVE_KAFKA_BOOTSTRAP": "127.0.0.1:1"}
    result = CliRunner().invoke(app, ["fleet", "--json", "--timeout", "1"], env=env)
    assert result.exit_code == 0, result.output
    assert "cannot reach the broker" in result.stderr and json.loads(result.stdout)["source"] == "saved"
