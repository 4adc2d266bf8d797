"""The fleet view: heartbeats count only when verified and not from the future; the newest received wins."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hive.config import ScheduleSettings
from hive.fleet import FUTURE, KEY_FILE, FleetView
from hive.ingest.auth import REVOKED, SIGNATURE, UNSIGNED, SenderPolicy
from hive.rounds.triggers import Backlog, active_agents, evaluate
from hive.views import fleet_json
from streams import codec
from streams.codec import encode
from streams.events import Heartbeat
from streams.signing import KeyRing, signed

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
KEY = b"k" * 32
POLICY = SenderPolicy(KeyRing({"agent-1": (KEY,), "agent-2": (KEY,)}), revoked={"agent-2"})
SKEW_S = 300.0


def beat(sent_at: datetime, agent: str = "agent-1", key: bytes | None = KEY, **kw: object) -> bytes:
    event = Heartbeat(agent_id=agent, skill="add", core_version=1, sent_at=sent_at, **kw)  # type: ignore[arg-type]
    return encode(signed(event, key) if key is not None else event)


def offer(view: FleetView, raw: bytes) -> None:
    view.offer_raw(raw, 100_000, POLICY, SKEW_S, now=NOW)


def test_a_heartbeat_from_year_9999_does_not_pin_the_fleet_view() -> None:
    view = FleetView()
    offer(view, beat(NOW - timedelta(seconds=5), state="learning"))
    offer(view, beat(datetime(9999, 12, 31, 23, 59, tzinfo=UTC), state="serving"))
    assert view.latest["agent-1"].state == "learning"  # refused: too far in the future
    assert view.rejected_by_reason == {FUTURE: 1}
    # Within the allowed skew it counts, and a later heartbeat with an earlier sent_at still replaces it:
    # the newest is the one received last (hive.fleet partition 0 is ordered), not the largest sent_at.
    offer(view, beat(NOW + timedelta(seconds=SKEW_S - 1), state="serving"))
    assert view.latest["agent-1"].state == "serving"
    offer(view, beat(NOW, state="stopping"))
    assert view.latest["agent-1"].state == "stopping"
    assert view.rejected == 1


def test_a_heartbeat_counts_only_once_verified() -> None:
    view = FleetView()
    offer(view, beat(NOW, key=None))  # agent-1 has a key: must sign
    offer(view, beat(NOW, key=b"w" * 32))  # the wrong key
    offer(view, beat(NOW, agent="agent-2"))  # correctly signed, but revoked
    offer(view, beat(NOW, agent="agent-3", key=None))  # no key: refused, signatures are required
    offer(view, b'{"agent_id": "agent-1", "skill": "add", "core_version": 1, "sent_at": "2026-11-22T12:00:00"}')
    assert view.latest == {}
    assert view.rejected_by_reason == {SIGNATURE: 2, REVOKED: 1, UNSIGNED: 1, codec.TIMESTAMP: 1}
    offer(view, beat(NOW))
    assert list(view.latest) == ["agent-1"] and view.rejected == 5


def test_an_unusable_key_file_does_not_count_the_heartbeat_nor_stop_the_reader(tmp_path: Path) -> None:
    (tmp_path / "agent-9.key").write_text("utf8:short\n")
    policy = SenderPolicy(KeyRing.from_config({}, tmp_path))
    view = FleetView()
    view.offer_raw(beat(NOW, agent="agent-9"), 100_000, policy, SKEW_S, now=NOW)
    assert view.latest == {} and view.rejected_by_reason == {KEY_FILE: 1}


def test_ages_never_go_negative_and_a_zone_less_time_is_read_as_utc() -> None:
    view = FleetView()
    ahead = Heartbeat(agent_id="agent-1", skill="add", core_version=1, sent_at=NOW + timedelta(seconds=100))
    view.offer(ahead)
    (agent,) = fleet_json(view, champion=1, now=NOW)["agents"]
    assert agent["heartbeat_age_s"] == 0.0 and agent["active"]
    # A reader given a zone-less time (from Python, not the wire) compares it as UTC instead of raising.
    naive = ahead.model_copy(update={"sent_at": datetime(2026, 11, 22, 11, 0)})
    view.offer(naive)
    (agent,) = fleet_json(view, champion=1, now=NOW, active_s=60)["agents"]
    assert agent["heartbeat_age_s"] == 3600.0 and not agent["active"]
    assert json.dumps(view.heartbeat_times(), default=str)


def test_the_scheduler_reads_zone_less_times_as_utc_and_future_ones_as_now() -> None:
    naive_now = datetime(2026, 11, 22, 12, 0)
    beats = {"a": datetime(2026, 11, 22, 11, 59), "b": NOW - timedelta(hours=1), "c": NOW + timedelta(seconds=200)}
    assert active_agents(beats, naive_now, active_s=300) == ["a", "c"]
    # "c" sent 200 s ahead: active until 200 + 300 s from now, not forever.
    assert active_agents(beats, NOW + timedelta(seconds=501), active_s=300) == []
    schedule = ScheduleSettings(min_new=0, every_s=600, max_staleness_s=600)
    backlog = Backlog(5, oldest_new_at=datetime(2026, 11, 22, 11, 0), last_round_at=datetime(2026, 11, 22, 11, 0))
    decision = evaluate(schedule, backlog, None, NOW)
    assert decision.due and {t.name for t in decision.triggers if t.fired} == {"every", "max_staleness"}
    future = Backlog(5, oldest_new_at=NOW + timedelta(days=1))
    assert not evaluate(schedule, future, None, naive_now).due


def test_the_timeline_keeps_each_agents_runs_of_a_core_in_arrival_order() -> None:
    from hive.fleet import MAX_RUNS

    t0 = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    view = FleetView()
    for minute, version in [(0, 0), (1, 0), (2, 1), (3, 1), (4, 0)]:  # a rollback to v0 at the end
        view.offer(Heartbeat(agent_id="a1", skill="add", core_version=version, sent_at=t0 + timedelta(minutes=minute)))
    # A late heartbeat of the current run, sent earlier than the run's first: the run widens, nothing reorders.
    view.offer(Heartbeat(agent_id="a1", skill="add", core_version=0, sent_at=t0 + timedelta(minutes=3, seconds=30)))
    runs = [(r.core_version, r.first.minute, r.last.minute) for r in view.runs["a1"]]
    assert runs == [(0, 0, 1), (1, 2, 3), (0, 3, 4)]
    for i in range(MAX_RUNS + 5):
        view.offer(Heartbeat(agent_id="a2", skill="add", core_version=i % 2, sent_at=t0 + timedelta(seconds=i)))
    assert len(view.runs["a2"]) == MAX_RUNS  # the newest runs only
    assert view.runs["a2"][-1].last == t0 + timedelta(seconds=MAX_RUNS + 4)
