"""The hive service: ingest and fleet in the background, rounds and releases on demand."""

from __future__ import annotations

import logging
import math
import threading
from datetime import datetime
from typing import TYPE_CHECKING, cast

from kafka.errors import KafkaError

from hive.config import HiveSettings
from hive.cores.files import CoreFiles, champion_core
from hive.cores.registry import CoreRegistry
from hive.cores.release import ReleasePlan, release_core, round_release
from hive.cores.release_history import last_published, read_history
from hive.fleet import FleetTracker
from hive.fleet_saved import FleetSaver, saved_view_path
from hive.ingest.history import HISTORY_FILE, IngestHistory
from hive.ingest.ingestor import Ingestor
from hive.rounds.book import NoNewLearnings, RoundBook, RoundRecord
from hive.rounds.lock import RoundBusy, round_lock
from hive.rounds.progress import ProgressFn
from hive.rounds.runner import RoundRunner
from hive.rounds.triggers import Backlog, ScheduleDecision
from hive.store.compactor import Compactor
from hive.store.parquet import ParquetLearningStore
from streams import topics
from streams.codec import DecodeError, decode
from streams.events import CoreRelease
from streams.follow import TopicFollower
from streams.kafka import DEFAULT_PARTITIONS, RenewableProducer, create_topics

if TYPE_CHECKING:
    from kafka import KafkaProducer

log = logging.getLogger(__name__)

# How long after a release was recorded a reading of hive.core that lacks it means it was lost, not on its way.
REPUBLISH_GRACE_S = 30.0


def _timestamp(recorded: object) -> float:
    """A history entry's time (ISO 8601, with its zone) as a POSIX timestamp; +inf when it is not one, so that an
    unreadable time never triggers a release."""
    try:
        moment = datetime.fromisoformat(str(recorded))
    except ValueError:
        return math.inf
    return moment.timestamp() if moment.tzinfo is not None else math.inf


class Hive:
    """One hive: its store, rounds, registry and Kafka clients, all under ``settings.home``."""

    def __init__(self, settings: HiveSettings) -> None:
        self.settings = settings
        settings.home.mkdir(parents=True, exist_ok=True)
        create_topics(settings.kafka, DEFAULT_PARTITIONS)
        self.store = ParquetLearningStore(settings.store_dir)
        self.compactor = Compactor(self.store)
        self.book = RoundBook(settings.rounds_dir)
        self.registry = CoreRegistry.from_settings(settings)
        # Renewed when a release fails: after a broker that lost its state, the old one never sends again.
        self._producer = RenewableProducer(settings.kafka)
        self.producer = cast("KafkaProducer", self._producer)
        release = round_release(settings, self.registry, self.producer)
        self.runner = RoundRunner(settings, self.store, self.registry, release)
        # Per minute, for the dashboard's ingest charts (hive.ingest.history).
        history = IngestHistory(settings.home / HISTORY_FILE)
        self.ingestor = Ingestor(settings, self.store, self.producer, history=history)
        self.fleet = FleetTracker.from_settings(settings)  # heartbeats are checked as learnings are
        # What `hive fleet` and the dashboard show when the broker is gone (hive.fleet_saved).
        self.fleet_saver = FleetSaver(self.fleet, saved_view_path(settings))
        # Reads hive.core for the newest release on it: when a broker lost the topic (or the hive's last release
        # never reached it), agents would wait for the next round; ``republish`` releases the champion again.
        self._seen_sequence = 0
        self.core_topic = TopicFollower(settings.kafka, topics.CORE, self._seen_release, on_reset=self._core_reset)
        self._stop = threading.Event()
        self._ingest_error: BaseException | None = None
        self._ingest_thread = threading.Thread(target=self._ingest, name="ingest", daemon=True)

    def _ingest(self) -> None:
        try:
            self.ingestor.run(self._stop)
        except BaseException as err:
            # Kept for failure() to report: a thread's exception would otherwise only reach stderr.
            self._ingest_error = err
            raise

    def start(self) -> None:
        self._ingest_thread.start()
        self.fleet.start()
        self.fleet_saver.start()
        self.core_topic.start()
        self.compactor.start()

    def _seen_release(self, raw: bytes) -> None:
        try:
            release = decode(raw, CoreRelease, self.settings.kafka.max_message_bytes)
        except DecodeError:
            return  # not the hive's: agents refuse and count it; the hive only looks for its own releases
        self._seen_sequence = max(self._seen_sequence, release.sequence or 0)

    def _core_reset(self) -> None:
        self._seen_sequence = 0

    def republish(self) -> ReleasePlan | None:
        """Releases the champion again (a new, higher sequence number, as ``hive core promote`` of the champion
        does) when ``hive.core``, read to its end, lacks the hive's newest published release; returns it, or None.

        That happens when a broker lost its data, or the topic was deleted. The release must be older than
        ``REPUBLISH_GRACE_S`` when the reading reached the end, so that a release still on its way is not sent
        twice. A canary in progress is called off by it, as by any fleet release. Raises what the release raises
        (the broker's errors among them); the next call tries again.
        """
        caught_up_at = self.core_topic.caught_up_at
        last = last_published(self.settings)
        if caught_up_at is None or last is None or self._seen_sequence >= last["sequence"]:
            return None
        if caught_up_at < _timestamp(last.get("time")) + REPUBLISH_GRACE_S:
            return None
        # Said before the release: a send that fails may still reach the broker, and agents then run it.
        log.warning(
            "hive.core lacked release #%d (a broker that lost it?): releasing the champion again", last["sequence"]
        )
        create_topics(self.settings.kafka, DEFAULT_PARTITIONS)  # a broker that lost its data lost its topics
        try:
            plan = self.release(self.champion())
        except KafkaError:
            self._producer.renew()
            raise
        log.info("released core v%d again as release #%s", plan.version, (plan.published or {}).get("offset"))
        return plan

    def failure(self) -> str | None:
        """What stopped a background thread (ingest or the fleet follower) before ``stop()``, or None."""
        if self._stop.is_set():
            return None
        if self._ingest_error is not None:
            return f"ingest stopped: {self._ingest_error!r}"
        if self._ingest_thread.ident is not None and not self._ingest_thread.is_alive():
            return "ingest stopped"
        if self.fleet.error is not None:
            return f"the fleet follower stopped: {self.fleet.error!r}"
        return None

    def stop(self) -> None:
        self._stop.set()
        self.compactor.stop()
        self._ingest_thread.join(timeout=30)
        self.fleet.stop()
        self.fleet_saver.stop()
        self.core_topic.stop()
        self.producer.flush(timeout=10)
        self.producer.close(timeout=10)
        self.store.close()

    def champion(self) -> CoreFiles:
        """The current champion core, building and registering core v0 on a new hive."""
        return champion_core(self.settings, self.registry)

    def release(self, core: CoreFiles) -> ReleasePlan:
        """Makes ``core`` champion and publishes it to the whole fleet (as ``hive core promote`` does)."""
        return release_core(self.settings, self.registry, self.producer, core.version, action="promote")

    def announce(self) -> ReleasePlan | None:
        """On a hive that never released a core, builds core v0 (if needed) and releases the champion, so
        that agents have a core to start from; returns the release, or None when one was made before."""
        if read_history(self.settings):
            return None
        return self.release(self.champion())

    def new_learnings(self) -> int:
        return self.runner.backlog().new_learnings

    def decide(self, backlog: Backlog | None = None) -> ScheduleDecision:
        """The schedule's verdict on ``backlog`` (read now when not given), with the fleet's heartbeats."""
        return self.runner.decide(self.fleet.snapshot().heartbeat_times(), backlog=backlog)

    def due(self) -> bool:
        return self.decide().due

    def round_tick(self, on_progress: ProgressFn | None = None) -> RoundRecord | None:
        """One look at the rounds, under the round lock: resume an interrupted round, else run one if due.

        Returns the round that ran, or None when none was due, when every new learning was quarantined,
        or when another process (``hive round run``) holds the lock. A round that fails, for whatever
        reason, is recorded as failed and raises RoundFailed; anything else it raises came from the check
        around the rounds (the caller records it with ``hive.rounds.last_check``).
        """
        try:
            with round_lock(self.settings.home, wait_s=0.5) as lock:
                resumed = self.runner.resume_unfinished(lock, on_progress)
                if resumed:
                    return resumed[-1]
                backlog = self.runner.backlog()
                decision = self.decide(backlog)
                if not decision.due:
                    return None
                log.info("a round is due (%s): %d new learnings", decision.reason, backlog.new_learnings)
                return self.runner.open_and_run(lock, decision.reason, on_progress)
        except RoundBusy as err:
            log.info("not running rounds now: %s", err)
            return None
        except NoNewLearnings as err:
            # The due learnings were all quarantined as the round opened: nothing is left to retry.
            log.info("no round: %s", err)
            return None

    def open_and_run_now(self, on_progress: ProgressFn | None = None, trigger: str = "manual") -> RoundRecord:
        """Opens a round over the new learnings now, whatever the schedule says, and runs it to its end."""
        with round_lock(self.settings.home) as lock:
            return self.runner.open_and_run(lock, trigger, on_progress)
