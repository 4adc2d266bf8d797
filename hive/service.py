"""The hive service: ingest and fleet in the background, rounds and releases on demand."""

from __future__ import annotations

import logging
import threading

from hive.config import HiveSettings
from hive.cores import CoreFiles, build_core_v0, existing_core
from hive.fleet import FleetTracker
from hive.ingest import Ingestor
from hive.parquet_store import ParquetLearningStore
from hive.registry import CHAMPION, CoreRegistry
from hive.rounds import ProgressFn, RoundBook, RoundRecord, open_round, run_round
from hive.scheduler import ThresholdPolicy
from streams import topics
from streams.codec import encode
from streams.events import CoreRelease
from streams.kafka import DEFAULT_PARTITIONS, create_topics, make_producer, send_and_wait

log = logging.getLogger(__name__)


class Hive:
    """One hive: its store, rounds, registry and Kafka clients, all under ``settings.home``."""

    def __init__(self, settings: HiveSettings) -> None:
        self.settings = settings
        settings.home.mkdir(parents=True, exist_ok=True)
        create_topics(settings.kafka, DEFAULT_PARTITIONS)
        self.store = ParquetLearningStore(settings.store_dir)
        self.book = RoundBook(settings.rounds_dir)
        self.registry = CoreRegistry.from_settings(settings)
        self.policy = ThresholdPolicy(settings.round_min_learnings)
        self.producer = make_producer(settings.kafka)
        self.ingestor = Ingestor(settings, self.store, self.producer)
        self.fleet = FleetTracker(settings.kafka)
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
        self._ingest_thread.join(timeout=30)
        self.fleet.stop()
        self.producer.flush(timeout=10)
        self.producer.close(timeout=10)
        self.store.close()

    def champion(self) -> CoreFiles:
        """The current champion core, building and registering core v0 on a new hive."""
        version = self.registry.champion_version()
        if version is not None:
            return existing_core(self.settings, version)
        core = build_core_v0(self.settings)
        self.registry.log_core(core.directory, core.version, core.sha256)
        self.registry.set_alias(CHAMPION, core.version)
        return core

    def release(
        self, core: CoreFiles, round_id: str | None = None, gate: dict[str, float] | None = None
    ) -> CoreRelease:
        """Publishes the core on ``hive.core`` and waits for the broker's ack."""
        release = CoreRelease(
            version=core.version, model_uri=core.uri, sha256=core.sha256, round_id=round_id, gate=gate or {}
        )
        send_and_wait(self.producer, topics.CORE, b"core", encode(release))
        log.info("released core v%d", core.version)
        return release

    def new_learnings(self) -> int:
        return self.store.max_seq() - self.book.covered_seq()

    def due(self) -> bool:
        return self.policy.should_open(self.new_learnings())

    def run_round(self, on_progress: ProgressFn | None = None) -> RoundRecord:
        """Opens a round over the new learnings, distills it, and releases the core if the gate passes."""
        base = self.champion()
        self.registry.experiment_id()  # creates the experiment, with its artifacts under HIVE_HOME
        record = open_round(self.settings, self.store, self.book, base, self.registry.experiment)
        record = run_round(self.settings, self.book, self.registry, record, on_progress)
        if record.state == "released" and record.candidate_version is not None:
            self.release(existing_core(self.settings, record.candidate_version), record.id, record.eval)
        return record
