"""The fleet view: the latest heartbeat of every agent, read from ``hive.fleet``."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kafka import TopicPartition
from kafka import errors as kafka_errors

from streams import topics
from streams.codec import DecodeError, decode
from streams.config import KafkaSettings
from streams.events import Heartbeat
from streams.follow import TopicFollower
from streams.kafka import make_consumer

log = logging.getLogger(__name__)


def _utc(moment: datetime) -> datetime:
    # A client in another language may send a time without a zone; read it as UTC, so that it compares
    # with the others instead of raising TypeError.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass
class FleetView:
    """What the hive knows of each agent: its newest heartbeat and its self-evaluation per core version."""

    latest: dict[str, Heartbeat] = field(default_factory=dict)
    # (agent id, core version) -> the newest non-empty evaluation the agent reported on that core.
    evaluations: dict[tuple[str, int], dict[str, float]] = field(default_factory=dict)
    rejected: int = 0

    def offer(self, beat: Heartbeat) -> None:
        current = self.latest.get(beat.agent_id)
        if current is None or _utc(beat.sent_at) >= _utc(current.sent_at):
            self.latest[beat.agent_id] = beat
        if beat.evaluation:
            self.evaluations[(beat.agent_id, beat.core_version)] = dict(beat.evaluation)

    def offer_raw(self, raw: bytes, max_message_bytes: int) -> None:
        """Offers a record's value; one that is not a valid heartbeat is logged and counted in ``rejected``."""
        try:
            beat = decode(raw, Heartbeat, max_message_bytes)
        except DecodeError as err:
            log.warning("ignoring an invalid heartbeat: %s", err)
            self.rejected += 1
            return
        self.offer(beat)

    def heartbeat_times(self) -> dict[str, datetime]:
        """Each agent's newest heartbeat time: what the schedule's per-agent trigger reads as activity."""
        return {agent: beat.sent_at for agent, beat in self.latest.items()}


class FleetTracker:
    """Follows ``hive.fleet`` in the background; every hive process sees every heartbeat."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self._kafka = kafka
        self._view = FleetView()
        self._lock = threading.Lock()
        self._follower = TopicFollower(kafka, topics.FLEET, self._offer)

    def start(self) -> None:
        self._follower.start()

    def stop(self) -> None:
        self._follower.stop()

    @property
    def error(self) -> BaseException | None:
        """What stopped the follower's thread, if anything did."""
        return self._follower.error

    def snapshot(self) -> FleetView:
        with self._lock:
            return FleetView(dict(self._view.latest), dict(self._view.evaluations), self._view.rejected)

    def _offer(self, raw: bytes) -> None:
        with self._lock:
            self._view.offer_raw(raw, self._kafka.max_message_bytes)


class FleetReadError(kafka_errors.KafkaError):
    """``hive.fleet`` could not be read: the broker is unreachable, or the read did not catch up in time.

    A KafkaError, so that a caller that handles the broker's errors handles this one too.
    """


# An empty poll this long means the reader has caught up.
_QUIET_POLL_MS = 400


def read_fleet(kafka: KafkaSettings, timeout_s: float = 10.0) -> FleetView:
    """Reads ``hive.fleet`` partition 0 once, from its beginning and with no consumer group, until caught up.

    Tansu 0.6's ListOffsets(latest) can undercount after batched produces (measured), so the end offset is
    only a lower bound: past it, the read stops at the first empty poll, or at the first heartbeat
    produced after the read began (live agents keep a poll from ever coming back empty). The whole read
    is bounded by ``timeout_s``; raises FleetReadError when the broker cannot be reached or the lower
    bound is not reached in time. A topic that does not exist yet is an empty fleet.
    """
    deadline = time.monotonic() + timeout_s
    started_ms = int(time.time() * 1000)
    view = FleetView()
    try:
        consumer = make_consumer(
            kafka,
            topics=None,
            group_id=None,
            bootstrap_timeout_ms=max(1, int(timeout_s * 1000)),
            request_timeout_ms=min(kafka.request_timeout_ms, max(1000, int(timeout_s * 1000))),
        )
    except kafka_errors.KafkaError as err:
        raise FleetReadError(f"cannot reach the broker at {kafka.bootstrap}: {err}") from err
    try:
        partitions = consumer.partitions_for_topic(topics.FLEET)
        if not partitions:
            return view
        partition = TopicPartition(topics.FLEET, 0)
        consumer.assign([partition])
        consumer.seek_to_beginning(partition)
        end = consumer.end_offsets([partition]).get(partition, 0)
        while True:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0:
                position = consumer.position(partition)
                if position < end:
                    raise FleetReadError(
                        f"read {topics.FLEET} up to offset {position} of at least {end} within {timeout_s:g} s"
                    )
                log.warning("%s kept growing for %g s; showing what was read", topics.FLEET, timeout_s)
                return view
            batches = consumer.poll(timeout_ms=min(_QUIET_POLL_MS, left_ms))
            records = [record for batch in batches.values() for record in batch]
            for record in records:
                view.offer_raw(record.value, kafka.max_message_bytes)
            if consumer.position(partition) < end:
                continue
            if not records or records[-1].timestamp >= started_ms:
                return view
    except FleetReadError:
        raise
    except kafka_errors.KafkaError as err:
        raise FleetReadError(f"cannot read {topics.FLEET} from {kafka.bootstrap}: {err}") from err
    finally:
        consumer.close()


# An agent whose last heartbeat is older than this counts as gone: listed, but not in the fleet summary.
ACTIVE_S = 60.0


def fleet_json(
    view: FleetView, champion: int | None, now: datetime | None = None, active_s: float = ACTIVE_S
) -> dict[str, Any]:
    """What ``hive fleet --json`` prints: each agent's core, heartbeat, lag and skew, and a fleet summary.

    ``lag`` is the agent's ``spool_size`` counter (learnings waiting for the broker; None if it sent
    none), and ``skew`` its running version minus the champion (None without a champion). An agent is
    ``active`` when its last heartbeat is at most ``active_s`` old and it is not stopping; ``versions``
    (version -> agents) and ``max_skew`` (the largest absolute skew, 0 when none) count active agents only.
    """
    now = now or datetime.now(UTC)
    agents: list[dict[str, Any]] = []
    for agent_id in sorted(view.latest):
        beat = view.latest[agent_id]
        sent_at = _utc(beat.sent_at)
        age = (now - sent_at).total_seconds()
        agents.append(
            {
                "agent_id": agent_id,
                "skill": beat.skill,
                "core_version": beat.core_version,
                "state": beat.state,
                "last_heartbeat": sent_at.isoformat(),
                "heartbeat_age_s": round(age, 3),
                "lag": beat.counters.get("spool_size"),
                "skew": None if champion is None else beat.core_version - champion,
                "active": age <= active_s and beat.state != "stopping",
            }
        )
    active = [a for a in agents if a["active"]]
    versions = Counter(a["core_version"] for a in active)
    return {
        "champion": champion,
        "agents": agents,
        "versions": {str(v): versions[v] for v in sorted(versions)},
        "max_skew": max((abs(a["skew"]) for a in active if a["skew"] is not None), default=0),
    }
