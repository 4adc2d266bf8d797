"""The two arms of ``hive bench ingest``: a real ``Ingestor`` into Parquet, and a plain kafka-python consumer."""

from __future__ import annotations

import cProfile
import threading
import time
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka.errors import KafkaError

from hive.bench.synthetic import AGENTS, Payload, agent_key
from hive.config import HiveSettings, IngestSettings
from hive.ingest.ingestor import RETRYABLE, Ingestor
from hive.store.parquet import ParquetLearningStore
from streams.config import KafkaSettings
from streams.kafka import make_consumer, make_producer

POLL_MS = 500


def bench_ingest_settings() -> IngestSettings:
    """The hive's default rules (signatures required) with every bench agent's key."""
    keys = {f"agent-{n + 1}": "hex:" + agent_key(f"agent-{n + 1}").hex() for n in range(AGENTS)}
    return IngestSettings(agent_keys=keys)  # type: ignore[arg-type]


class BenchError(RuntimeError):
    """An arm of the benchmark failed or did not finish in time."""


class _Arm(threading.Thread):
    """The consuming side of one arm: joins its group, says when it is ready, and notes when all arrived."""

    def __init__(self, name: str, count: int) -> None:
        super().__init__(name=name, daemon=True)
        self.count = count
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.done_at: float | None = None
        self.seen = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.work()
        except (*RETRYABLE, BenchError) as err:  # handed to the main thread, which reports it
            self.error = err
        finally:
            self.ready.set()  # never leave the producer waiting on an arm that died while joining

    def work(self) -> None:
        raise NotImplementedError


class _HiveArm(_Arm):
    """A real ``Ingestor`` into a fresh Parquet store; done when the store holds every learning."""

    def __init__(
        self,
        settings: HiveSettings,
        topic: str,
        group: str,
        store: ParquetLearningStore,
        count: int,
        profiler: cProfile.Profile | None = None,
    ):
        super().__init__("bench-ingest-hive", count)
        self.ingestor = Ingestor(settings, store, topic=topic, group_id=group)
        self.store = store
        self.batches = 0
        self.profiler = profiler

    def work(self) -> None:
        try:
            while not self.ingestor.ready:
                if self.stop.is_set():
                    return
                self.ingestor.poll_once(100)
            self.ready.set()
            # cProfile sees only the thread that enables it: this one, where ingest does its work.
            if self.profiler is not None:
                self.profiler.enable()
            while not self.stop.is_set():
                if self.ingestor.poll_once(POLL_MS).polled:
                    self.batches += 1
                    self.seen = self.store.count()
                    if self.seen >= self.count:
                        self.done_at = time.perf_counter()
                        return
        finally:
            if self.profiler is not None:
                self.profiler.disable()
            self.ingestor.close()


class _RawArm(_Arm):
    """A plain manual-commit consumer: counts records and commits after each poll batch; no decode, no store."""

    def __init__(self, consumer: KafkaConsumer, count: int):
        super().__init__("bench-ingest-raw", count)
        self.consumer = consumer
        self.batches = 0

    def work(self) -> None:
        try:
            while not self.consumer.assignment():
                if self.stop.is_set():
                    return
                self._handle(self.consumer.poll(timeout_ms=100))
            self.ready.set()
            while not self.stop.is_set() and self.seen < self.count:
                self._handle(self.consumer.poll(timeout_ms=POLL_MS))
            if self.seen >= self.count:
                self.done_at = time.perf_counter()
        finally:
            self.consumer.close(autocommit=False)

    def _handle(self, batch: dict[TopicPartition, list[Any]]) -> None:
        next_offsets: dict[TopicPartition, int] = {}
        for tp, records in batch.items():
            if records:
                self.seen += len(records)
                next_offsets[tp] = max(r.offset for r in records) + 1
        if next_offsets:
            self.batches += 1
            self.consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in next_offsets.items()})


def _produce_while(arm: _Arm, kafka: KafkaSettings, topic: str, payloads: list[Payload], timeout_s: float) -> float:
    """Starts ``arm``, waits for its group join, sends every payload and waits for the arm; returns when sending began.

    The producer's metadata and the group join come before the clock starts: a hive pays them once, not per
    learning.
    """
    producer: KafkaProducer = make_producer(kafka)
    arm.start()
    try:
        producer.partitions_for(topic)
        if not arm.ready.wait(timeout_s) or arm.error is not None:
            raise BenchError(f"{arm.name}: not ready within {timeout_s:.0f} s: {arm.error!r}")
        started = time.perf_counter()
        futures = [producer.send(topic, key=key, value=value) for key, value in payloads]
        producer.flush(timeout=timeout_s)
        for future in futures:
            future.get(timeout=timeout_s)
        arm.join(max(0.0, timeout_s - (time.perf_counter() - started)))
    except KafkaError as err:
        raise BenchError(f"{arm.name}: producing failed: {err!r}") from err
    finally:
        arm.stop.set()
        arm.join(timeout_s)
        producer.close()
    if arm.error is not None:
        raise BenchError(f"{arm.name} failed: {arm.error!r}") from arm.error
    if arm.done_at is None:
        raise BenchError(f"{arm.name}: saw {arm.seen} of {arm.count} within {timeout_s:.0f} s")
    return started


def run_hive_arm(
    kafka: KafkaSettings,
    topic: str,
    group: str,
    payloads: list[Payload],
    timeout_s: float,
    store_dir: Path,
    profiler: cProfile.Profile | None = None,
) -> dict[str, Any]:
    """Learnings/s from the first send until ``store.count()`` reaches the count: decode, checks, Parquet, commit.

    The ingest settings are the hive's defaults plus the bench agents' keys: every learning's signature is
    verified, as in service.
    """
    settings = HiveSettings(home=store_dir, kafka=kafka, ingest=bench_ingest_settings())
    store = ParquetLearningStore(store_dir / "store")
    arm = _HiveArm(settings, topic, group, store, len(payloads), profiler)
    started = _produce_while(arm, kafka, topic, payloads, timeout_s)
    assert arm.done_at is not None  # _produce_while raised otherwise
    wall = arm.done_at - started
    totals = arm.ingestor.totals
    return {
        "learnings_per_s": round(len(payloads) / wall, 1),
        "wall_s": round(wall, 3),
        "stored": store.count(),
        "polled": totals.polled,
        "dead_lettered": totals.dead_lettered,
        "batches": arm.batches,
    }


def run_raw_arm(
    kafka: KafkaSettings, topic: str, group: str, payloads: list[Payload], timeout_s: float
) -> dict[str, Any]:
    """Records/s from the first send until a plain consumer has seen them all, committing after each batch."""
    arm = _RawArm(make_consumer(kafka, [topic], group), len(payloads))
    started = _produce_while(arm, kafka, topic, payloads, timeout_s)
    assert arm.done_at is not None  # _produce_while raised otherwise
    wall = arm.done_at - started
    return {
        "records_per_s": round(len(payloads) / wall, 1),
        "wall_s": round(wall, 3),
        "consumed": arm.seen,
        "batches": arm.batches,
    }
