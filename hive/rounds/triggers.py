"""Round scheduling: which triggers fire for the learnings waiting, and so whether a round is due."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from hive.config import ScheduleSettings


@dataclass(frozen=True)
class Backlog:
    """The learnings no round has taken yet, as the triggers see them."""

    new_learnings: int
    per_agent: dict[str, int] = field(default_factory=dict)
    after_seq: int = 0  # the new learnings are those with after_seq < seq <= upto_seq
    upto_seq: int = 0
    oldest_new_at: datetime | None = None  # created_at of the oldest new learning
    last_round_at: datetime | None = None  # when the newest round opened, if any
    # Why no round may open over these learnings (failed rounds in a row over them); None: nothing blocks.
    blocked: str | None = None


@dataclass(frozen=True)
class Trigger:
    name: str
    fired: bool
    detail: str


@dataclass(frozen=True)
class ScheduleDecision:
    """Whether a round is due, and each trigger's reading, so an operator can see why (or why not)."""

    due: bool
    reason: str
    triggers: list[Trigger]

    def to_json(self) -> dict:
        return asdict(self)


def aware(moment: datetime) -> datetime:
    """``moment`` with a zone: a zone-less time is read as UTC.

    Events refuse zone-less times at the door, but the scheduler runs in the service's loop, where a
    TypeError from comparing a zone-less time with a zoned one would stop the service: it defends itself.
    """
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _age_s(now: datetime, then: datetime) -> float:
    """Seconds from ``then`` to ``now``; a time ahead of ``now`` (another host's clock) is 0 s old, not negative."""
    return max(0.0, (aware(now) - aware(then)).total_seconds())


def active_agents(heartbeats: dict[str, datetime], now: datetime, active_s: float) -> list[str]:
    """Agents whose newest heartbeat is younger than ``active_s`` seconds.

    A heartbeat time ahead of ``now`` counts as now: the fleet view refuses heartbeats further ahead than the
    allowed clock skew, so such an agent stays active at most that skew plus ``active_s``.
    """
    return sorted(agent for agent, sent_at in heartbeats.items() if _age_s(now, sent_at) < active_s)


def evaluate(schedule: ScheduleSettings, backlog: Backlog, active: list[str] | None, now: datetime) -> ScheduleDecision:
    """Reads every enabled trigger against ``backlog``; ``active`` is None when the fleet is unknown.

    Zone-less times (``now`` or the backlog's) are read as UTC (``aware``), never compared as they are.
    """
    now = aware(now)
    if schedule.manual:
        return ScheduleDecision(False, "the schedule is manual: rounds run only through `hive round run`", [])
    triggers: list[Trigger] = []
    if schedule.min_new > 0:
        fired = backlog.new_learnings >= schedule.min_new
        sign = ">=" if fired else "<"
        triggers.append(Trigger("min_new", fired, f"{backlog.new_learnings} new learnings {sign} {schedule.min_new}"))
    if schedule.every_s > 0:
        since = backlog.last_round_at or backlog.oldest_new_at
        if since is None:
            triggers.append(Trigger("every", False, "no round and no new learning yet"))
        else:
            waited = _age_s(now, since)
            what = "since the last round opened" if backlog.last_round_at else "since the oldest new learning"
            fired = waited >= schedule.every_s
            triggers.append(Trigger("every", fired, f"{waited:.0f} s {what}, interval {schedule.every_s:g} s"))
    if schedule.min_per_agent > 0:
        triggers.append(_per_agent(schedule.min_per_agent, backlog.per_agent, active))
    if schedule.max_staleness_s > 0:
        if backlog.oldest_new_at is None:
            triggers.append(Trigger("max_staleness", False, "no new learning waits"))
        else:
            age = _age_s(now, backlog.oldest_new_at)
            fired = age > schedule.max_staleness_s
            detail = f"the oldest new learning is {age:.0f} s old, limit {schedule.max_staleness_s:g} s"
            triggers.append(Trigger("max_staleness", fired, detail))
    if not triggers:
        return ScheduleDecision(False, "every trigger is off (0): set one, or use `hive round run`", [])
    if backlog.new_learnings == 0:
        return ScheduleDecision(False, "no new learnings", triggers)
    if backlog.blocked is not None:
        return ScheduleDecision(False, f"blocked: {backlog.blocked}", triggers)
    fired_names = [t.name for t in triggers if t.fired]
    if fired_names:
        return ScheduleDecision(True, "fired: " + ", ".join(fired_names), triggers)
    return ScheduleDecision(False, "no trigger fired", triggers)


def _per_agent(minimum: int, per_agent: dict[str, int], active: list[str] | None) -> Trigger:
    if active is None:
        return Trigger("min_per_agent", False, "the fleet is unknown (no heartbeats read)")
    if not active:
        return Trigger("min_per_agent", False, "no active agent")
    short = {agent: per_agent.get(agent, 0) for agent in active if per_agent.get(agent, 0) < minimum}
    if short:
        listed = ", ".join(f"{agent} {n}" for agent, n in sorted(short.items()))
        return Trigger("min_per_agent", False, f"{len(short)} of {len(active)} active agents below {minimum}: {listed}")
    return Trigger("min_per_agent", True, f"all {len(active)} active agents have >= {minimum} new learnings")
