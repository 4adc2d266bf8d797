"""The fleet view: the latest heartbeat of every agent, read from ``hive.fleet``."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from kafka import TopicPartition
from kafka import errors as kafka_errors

from hive.config import HiveSettings
from hive.ingest.auth import SenderPolicy
from streams import topics
from streams.codec import DecodeError, decode
from streams.config import KafkaSettings
from streams.events import Heartbeat
from streams.follow import TopicFollower
from streams.kafka import make_consumer
from streams.signing import KeyRingError

log = logging.getLogger(__name__)

# Why a heartbeat is not counted, besides the sender policy's reasons (hive.auth) and the codec's.
FUTURE = "future"
KEY_FILE = "key_file"
UNPROCESSABLE = "unprocessable"
MAX_NOTED = 1000
# Core runs kept per agent for the timeline: the newest ones.
MAX_RUNS = 50


def as_utc(moment: datetime) -> datetime:
    # Heartbeats carry zoned times (the schema refuses others); a zone-less time can still come from a caller
    # in Python, and is read as UTC so that it compares instead of raising TypeError.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class CoreRun:
    """An agent on one core version, from its first heartbeat on it to its last (heartbeats' own ``sent_at``)."""

    core_version: int
    first: datetime
    last: datetime


@dataclass
class FleetView:
    """What the hive knows of each agent: its newest heartbeat and its self-evaluation per core version.

    "Newest" is the one received last: heartbeats are read from ``hive.fleet`` partition 0, in order, so a
    heartbeat whose ``sent_at`` lies in the future cannot pin an agent's entry against later ones.
    """

    latest: dict[str, Heartbeat] = field(default_factory=dict)
    # (agent id, core version) -> the newest non-empty evaluation the agent reported on that core.
    evaluations: dict[tuple[str, int], dict[str, float]] = field(default_factory=dict)
    rejected: int = 0
    # Heartbeats not counted, per reason: the codec's, the sender policy's (hive.auth), ``future``, ``key_file``
    # or ``unprocessable`` (a check that failed unforeseen, logged with its traceback).
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    # Agent id -> the core versions it ran, in the order heartbeats arrived (the newest MAX_RUNS): the timeline.
    runs: dict[str, list[CoreRun]] = field(default_factory=dict)
    # (reason, agent id) pairs already logged at WARNING: an agent heartbeats every few seconds.
    _noted: set[tuple[str, str | None]] = field(default_factory=set, repr=False)

    def offer(self, beat: Heartbeat) -> None:
        """Counts an already checked heartbeat: it replaces the agent's entry, since it arrived last."""
        self.latest[beat.agent_id] = beat
        if beat.evaluation:
            self.evaluations[(beat.agent_id, beat.core_version)] = dict(beat.evaluation)
        sent = as_utc(beat.sent_at)
        runs = self.runs.setdefault(beat.agent_id, [])
        if runs and runs[-1].core_version == beat.core_version:
            last = runs[-1]
            runs[-1] = CoreRun(last.core_version, min(last.first, sent), max(last.last, sent))
        else:
            runs.append(CoreRun(beat.core_version, sent, sent))
            del runs[:-MAX_RUNS]

    def offer_raw(
        self,
        raw: bytes | None,
        max_message_bytes: int,
        policy: SenderPolicy,
        max_skew_s: float,
        now: datetime | None = None,
    ) -> None:
        """Offers a record's value, counted only when it is a valid heartbeat, its sender passes ``policy``
        (signature, revocation, allow-list) and its ``sent_at`` is at most ``max_skew_s`` ahead of ``now``;
        anything else is logged and counted in ``rejected``. A heartbeat whose agent's key file is unusable
        is not counted either (reason ``key_file``): heartbeats are sent every few seconds, so the next one
        is checked again, and the follower must not stop over a file the operator has to fix.
        """
        try:
            self._check_and_offer(raw, max_message_bytes, policy, max_skew_s, now)
        except Exception as err:  # one heartbeat's unforeseen failure must not stop the follower (issue #9)
            log.exception("a heartbeat could not be checked")
            self._reject(UNPROCESSABLE, None, f"ignoring a heartbeat that could not be checked: {err!r}")

    def _check_and_offer(
        self, raw: bytes | None, max_message_bytes: int, policy: SenderPolicy, max_skew_s: float, now: datetime | None
    ) -> None:
        try:
            beat = decode(raw, Heartbeat, max_message_bytes)
        except DecodeError as err:
            self._reject(err.reason, None, f"ignoring an invalid heartbeat: {err}")
            return
        agent = beat.agent_id
        try:
            rejection = policy.check(beat)
        except KeyRingError as err:
            self._reject(KEY_FILE, agent, f"cannot check a heartbeat from {agent!r}: {err}")
            return
        if rejection is not None:
            self._reject(rejection.reason, agent, f"ignoring heartbeats from {agent!r}: {rejection.detail}")
            return
        ahead = (as_utc(beat.sent_at) - as_utc(now or datetime.now(UTC))).total_seconds()
        if ahead > max_skew_s:
            detail = f"sent {ahead:.0f} s in the future (allowed clock skew {max_skew_s:g} s)"
            self._reject(FUTURE, agent, f"ignoring a heartbeat from {agent!r}: {detail}")
            return
        self.offer(beat)

    def _reject(self, reason: str, agent: str | None, message: str) -> None:
        self.rejected += 1
        self.rejected_by_reason[reason] = self.rejected_by_reason.get(reason, 0) + 1
        # At WARNING once per reason and agent (bounded: any sender can make up agent ids), then at DEBUG.
        key = (reason, agent)
        if key in self._noted or len(self._noted) >= MAX_NOTED:
            log.debug("%s", message)
            return
        self._noted.add(key)
        log.warning("%s (further ones like it are logged at DEBUG)", message)

    def heartbeat_times(self) -> dict[str, datetime]:
        """Each agent's newest heartbeat time: what the schedule's per-agent trigger reads as activity."""
        return {agent: as_utc(beat.sent_at) for agent, beat in self.latest.items()}


class FleetTracker:
    """Follows ``hive.fleet`` in the background; every hive process sees every heartbeat.

    ``policy`` is the hive's sender policy (``SenderPolicy.from_settings(settings.ingest)``): a heartbeat
    counts only once its sender passes it, as a learning must.
    """

    def __init__(self, kafka: KafkaSettings, policy: SenderPolicy, max_skew_s: float) -> None:
        self._kafka = kafka
        self._policy = policy
        self._max_skew_s = max_skew_s
        self._view = FleetView()
        self._lock = threading.Lock()
        self._follower = TopicFollower(kafka, topics.FLEET, self._offer)

    @classmethod
    def from_settings(cls, settings: HiveSettings) -> FleetTracker:
        """The tracker the hive's settings describe; raises KeyRingError for bad key settings."""
        return cls(settings.kafka, SenderPolicy.from_settings(settings.ingest), settings.ingest.max_clock_skew_s)

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
            view = self._view
            return FleetView(
                dict(view.latest),
                dict(view.evaluations),
                view.rejected,
                dict(view.rejected_by_reason),
                {agent: list(runs) for agent, runs in view.runs.items()},
            )

    def _offer(self, raw: bytes) -> None:
        with self._lock:
            self._view.offer_raw(raw, self._kafka.max_message_bytes, self._policy, self._max_skew_s)


class FleetReadError(kafka_errors.KafkaError):
    """``hive.fleet`` could not be read: the broker is unreachable, or the read did not catch up in time.

    A KafkaError, so that a caller that handles the broker's errors handles this one too.
    """


# An empty poll this long means the reader has caught up.
_QUIET_POLL_MS = 400


def read_fleet(settings: HiveSettings, timeout_s: float = 10.0) -> FleetView:
    """Reads ``hive.fleet`` partition 0 once, from its beginning and with no consumer group, until caught up.

    Heartbeats count only when they pass the hive's sender policy and clock-skew limit (``settings.ingest``),
    as in the service's own fleet view. Raises KeyRingError for bad key settings (a missing key directory).

    Tansu 0.6's ListOffsets(latest) can undercount after batched produces (measured), so the end offset is
    only a lower bound: past it, the read stops at the first empty poll, or at the first heartbeat
    produced after the read began (live agents keep a poll from ever coming back empty). The whole read
    is bounded by ``timeout_s``; raises FleetReadError when the broker cannot be reached or the lower
    bound is not reached in time. A topic that does not exist yet is an empty fleet.
    """
    kafka = settings.kafka
    policy = SenderPolicy.from_settings(settings.ingest)
    skew = settings.ingest.max_clock_skew_s
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
        while True:
            left_ms = int((deadline - time.monotonic()) * 1000)
            # The end is the high watermark the fetches report, never ListOffsets(latest): Tansu on S3 storage
            # answers that with 1, whatever the partition holds. None until a fetch has answered.
            end = consumer.highwater(partition)
            if left_ms <= 0:
                position = consumer.position(partition)
                if end is None or position < end:
                    raise FleetReadError(
                        f"read {topics.FLEET} up to offset {position} of {'?' if end is None else end} "
                        f"within {timeout_s:g} s"
                    )
                log.warning("%s kept growing for %g s; showing what was read", topics.FLEET, timeout_s)
                return view
            batches = consumer.poll(timeout_ms=min(_QUIET_POLL_MS, left_ms))
            records = [record for batch in batches.values() for record in batch]
            for record in records:
                view.offer_raw(record.value, kafka.max_message_bytes, policy, skew)
            end = consumer.highwater(partition)
            if end is None or consumer.position(partition) < end:
                continue
            if not records or records[-1].timestamp >= started_ms:
                return view
    except FleetReadError:
        raise
    except kafka_errors.KafkaError as err:
        raise FleetReadError(f"cannot read {topics.FLEET} from {kafka.bootstrap}: {err}") from err
    finally:
        consumer.close()
