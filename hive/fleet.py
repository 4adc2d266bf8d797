"""The fleet view: the latest heartbeat of every agent, read from ``hive.fleet``."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from streams import topics
from streams.codec import DecodeError, decode
from streams.config import KafkaSettings
from streams.events import Heartbeat
from streams.follow import TopicFollower

log = logging.getLogger(__name__)


@dataclass
class FleetView:
    """What the hive knows of each agent: its newest heartbeat and its self-evaluation per core version."""

    latest: dict[str, Heartbeat] = field(default_factory=dict)
    # (agent id, core version) -> the newest non-empty evaluation the agent reported on that core.
    evaluations: dict[tuple[str, int], dict[str, float]] = field(default_factory=dict)
    rejected: int = 0

    def offer(self, beat: Heartbeat) -> None:
        current = self.latest.get(beat.agent_id)
        if current is None or beat.sent_at >= current.sent_at:
            self.latest[beat.agent_id] = beat
        if beat.evaluation:
            self.evaluations[(beat.agent_id, beat.core_version)] = dict(beat.evaluation)


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
        try:
            beat = decode(raw, Heartbeat, self._kafka.max_message_bytes)
        except DecodeError as err:
            log.warning("ignoring an invalid heartbeat: %s", err)
            with self._lock:
                self._view.rejected += 1
            return
        with self._lock:
            self._view.offer(beat)
