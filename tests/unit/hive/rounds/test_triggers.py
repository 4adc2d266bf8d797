"""The schedule's triggers: each fires on its own condition, any one opens a round, manual opens none."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from hive.cli.schedule import parse_duration
from hive.config import ScheduleSettings
from hive.rounds.triggers import Backlog, active_agents, evaluate

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def only(**triggers: float) -> ScheduleSettings:
    """A schedule with every trigger off but the ones named."""
    return ScheduleSettings(min_new=0).model_copy(update=triggers)


def fired(schedule: ScheduleSettings, backlog: Backlog, active: list[str] | None = None) -> dict[str, bool]:
    return {t.name: t.fired for t in evaluate(schedule, backlog, active, NOW).triggers}


def test_min_new_fires_at_the_threshold_not_below() -> None:
    schedule = only(min_new=100)
    assert not evaluate(schedule, Backlog(99), None, NOW).due
    decision = evaluate(schedule, Backlog(100), None, NOW)
    assert decision.due and decision.reason == "fired: min_new"
    assert decision.triggers[0].detail == "100 new learnings >= 100"


def test_every_counts_from_the_last_round_or_else_the_oldest_new_learning() -> None:
    schedule = only(every_s=600)
    recent = Backlog(5, last_round_at=NOW - timedelta(seconds=599), oldest_new_at=NOW - timedelta(hours=5))
    assert fired(schedule, recent) == {"every": False}
    assert fired(schedule, Backlog(5, last_round_at=NOW - timedelta(seconds=600))) == {"every": True}
    assert fired(schedule, Backlog(5, oldest_new_at=NOW - timedelta(seconds=601))) == {"every": True}
    assert fired(schedule, Backlog(0)) == {"every": False}


def test_min_per_agent_needs_every_active_agent_to_have_enough() -> None:
    schedule = only(min_per_agent=10)
    backlog = Backlog(25, per_agent={"a": 15, "b": 10, "c": 0})
    assert fired(schedule, backlog, ["a", "b"]) == {"min_per_agent": True}
    decision = evaluate(schedule, backlog, ["a", "b", "c"], NOW)
    assert not decision.due
    assert "c 0" in decision.triggers[0].detail
    # No fleet read, or nobody active: nothing to wait for, so it does not fire.
    assert fired(schedule, backlog, None) == {"min_per_agent": False}
    assert fired(schedule, backlog, []) == {"min_per_agent": False}


def test_max_staleness_fires_once_the_oldest_new_learning_is_older_than_the_limit() -> None:
    schedule = only(max_staleness_s=3600)
    assert fired(schedule, Backlog(1, oldest_new_at=NOW - timedelta(seconds=3600))) == {"max_staleness": False}
    assert fired(schedule, Backlog(1, oldest_new_at=NOW - timedelta(seconds=3601))) == {"max_staleness": True}


def test_any_trigger_opens_a_round_but_never_an_empty_one() -> None:
    schedule = ScheduleSettings(min_new=1000, max_staleness_s=60)
    stale = Backlog(3, oldest_new_at=NOW - timedelta(minutes=5))
    decision = evaluate(schedule, stale, None, NOW)
    assert decision.due and decision.reason == "fired: max_staleness"
    assert [t.name for t in decision.triggers] == ["min_new", "max_staleness"]
    assert not evaluate(only(every_s=1), Backlog(0, last_round_at=NOW - timedelta(days=1)), None, NOW).due


def test_manual_and_all_off_never_fire() -> None:
    big = Backlog(10**6, oldest_new_at=NOW - timedelta(days=9))
    manual = evaluate(ScheduleSettings(manual=True, max_staleness_s=1), big, None, NOW)
    assert not manual.due and "manual" in manual.reason
    off = evaluate(only(), big, None, NOW)
    assert not off.due and "every trigger is off" in off.reason


def test_active_agents_are_those_with_a_recent_heartbeat() -> None:
    beats = {"a": NOW - timedelta(seconds=10), "b": NOW - timedelta(seconds=400), "c": NOW}
    assert active_agents(beats, NOW, 300) == ["a", "c"]


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("10m", 600), ("1.5h", 5400), ("1d", 86400)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "ten", "10x", "-5m"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)
