"""``hive bench ingest``: end-to-end ingest (produce, decode, store, commit) against raw kafka-python."""

from __future__ import annotations

import contextlib
import cProfile
import hashlib
import io
import math
import os
import pstats
import random
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka.errors import KafkaError

from hive.config import HiveSettings, IngestSettings
from hive.ingest.ingestor import RETRYABLE, Ingestor
from hive.store.parquet import ParquetLearningStore
from streams import topics
from streams.broker import BrokerError, EmbeddedBroker
from streams.codec import encode
from streams.config import KafkaSettings
from streams.events import Feedback, Learning, TeacherSignal
from streams.kafka import DEFAULT_PARTITIONS, create_topics, make_consumer, make_producer
from streams.signing import signed

Say = Callable[[str], None]
Payload = tuple[bytes, bytes]  # (key, value), as an agent's publisher sends them
AGENTS = 8
# The tiny core's vocabulary (agents/model.py): the token ids a real teacher signal can hold.
VOCAB = 260
WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet")
POLL_MS = 500
CREATED_AT = datetime(2026, 11, 22, tzinfo=UTC)
# A built-in: the hive dead-letters a skill it does not know (unknown_skill).
SKILL = "add"


def agent_key(agent_id: str) -> bytes:
    """The bench agent's signing key: the hive verifies every learning, as in service. Derived from the id (for
    benchmarks only), not random, so that the same plan gives the same bytes, run after run."""
    return hashlib.sha256(f"hive bench ingest:{agent_id}".encode()).digest()


def bench_ingest_settings() -> IngestSettings:
    """The hive's default rules (signatures required) with every bench agent's key."""
    keys = {f"agent-{n + 1}": "hex:" + agent_key(f"agent-{n + 1}").hex() for n in range(AGENTS)}
    return IngestSettings(agent_keys=keys)  # type: ignore[arg-type]


class BenchError(RuntimeError):
    """An arm of the benchmark failed or did not finish in time."""


@dataclass(frozen=True)
class IngestBenchPlan:
    """How many learnings both arms move, their teacher signals' shape, and the topics' partition count."""

    count: int = 5000
    k: int = 16
    positions: int = 16
    partitions: int = DEFAULT_PARTITIONS[topics.LEARNINGS]
    seed: int = 0
    # Group joins and the whole timed part of one arm; a healthy run needs a small fraction of it.
    timeout_s: float = 300.0

    def __post_init__(self) -> None:
        if self.count < 1 or self.positions < 1 or self.partitions < 1:
            raise ValueError("--count, positions and partitions must be positive")
        if not 1 <= self.k <= VOCAB:
            raise ValueError(f"k must be between 1 and {VOCAB}")


def _signal(rng: random.Random, k: int, positions: int) -> TeacherSignal:
    """Top-k log-probabilities as a real signal has them: distinct ids, descending, from a normalised distribution."""
    ids: list[list[int]] = []
    lps: list[list[float]] = []
    for _ in range(positions):
        logits = sorted((rng.gauss(0.0, 3.0) for _ in range(k)), reverse=True)
        # Leaves probability mass for the tokens outside the top k, so that every log-prob stays below 0.
        log_total = math.log(sum(math.exp(x - logits[0]) for x in logits) * 1.25)
        ids.append(rng.sample(range(VOCAB), k))
        lps.append([x - logits[0] - log_total for x in logits])
    return TeacherSignal(k=k, token_ids=ids, logprobs=lps)


def build_learnings(plan: IngestBenchPlan) -> list[Learning]:
    """``plan.count`` valid learnings with unique ids, each with a top-k signal of ``plan.positions`` positions,
    signed with their agent's key (``agent_key``)."""
    rng = random.Random(plan.seed)
    learnings = []
    for n in range(plan.count):
        words = rng.sample(WORDS, 3)
        prompt = f"reverse the words: {' '.join(words)}"
        completion = " ".join(reversed(words))
        agent_id = f"agent-{n % AGENTS + 1}"
        learning = Learning(
            id=uuid.UUID(int=rng.getrandbits(128)),
            agent_id=agent_id,
            skill=SKILL,
            core_version=0,
            # Fixed, not "now": the same plan gives the same bytes, run after run.
            created_at=CREATED_AT + timedelta(seconds=n),
            prompt=prompt,
            completion=completion,
            feedback=Feedback(reward=1.0),
            teacher=_signal(rng, plan.k, plan.positions),
        )
        learnings.append(signed(learning, agent_key(agent_id)))
    return learnings


def build_payloads(plan: IngestBenchPlan) -> list[Payload]:
    """The learnings encoded once with the codec, keyed by agent id: both arms send exactly these bytes."""
    return [(learning.agent_id.encode(), encode(learning)) for learning in build_learnings(plan)]


@contextlib.contextmanager
def broker(bootstrap: str, say: Say) -> Iterator[str]:
    """The broker ``bootstrap`` names, or an embedded one for the run when it is empty; yields host:port."""
    if bootstrap:
        yield bootstrap
        return
    try:
        embedded = EmbeddedBroker()
        embedded.start()
    except BrokerError as err:
        raise BenchError(str(err)) from err
    say(f"started the embedded broker on {embedded.bootstrap} (pid {embedded.pid})")
    try:
        yield embedded.bootstrap
    finally:
        embedded.stop()


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


def _load_1m() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def run_ingest_bench(
    plan: IngestBenchPlan, bootstrap: str, say: Say, profile_path: Path | None = None
) -> dict[str, Any]:
    """Runs the raw arm, then the hive arm, each on a fresh topic and group of its own; returns the report.

    ``bootstrap`` empty starts the embedded broker for the run. ``ratio`` is the hive's learnings/s over raw
    kafka-python's records/s for the same bytes. With ``profile_path``, the hive arm's ingest thread runs
    under cProfile (which slows it) and its top entries by cumulative time are written there.
    """
    profiler = cProfile.Profile() if profile_path is not None else None
    payloads = build_payloads(plan)
    size = sum(len(value) for _, value in payloads)
    say(f"{plan.count} learnings, k={plan.k} over {plan.positions} positions: {size / plan.count:,.0f} B each")
    run = uuid.uuid4().hex[:12]
    names = {arm: f"bench.ingest.{run}.{arm}" for arm in ("raw", "hive")}
    load_before = _load_1m()
    with broker(bootstrap, say) as servers:
        kafka = KafkaSettings(bootstrap=servers)
        try:
            create_topics(kafka, {name: plan.partitions for name in names.values()}, configs={})
        except KafkaError as err:
            raise BenchError(f"cannot create the bench topics on {servers}: {err!r}") from err
        raw = run_raw_arm(kafka, names["raw"], f"bench-ingest-{run}-raw", payloads, plan.timeout_s)
        say(f"raw: {raw['records_per_s']:,.0f} records/s ({raw['wall_s']:.2f} s)")
        with tempfile.TemporaryDirectory(prefix="hive-bench-ingest-") as tmp:
            hive = run_hive_arm(
                kafka, names["hive"], f"bench-ingest-{run}-hive", payloads, plan.timeout_s, Path(tmp), profiler
            )
        say(f"hive: {hive['learnings_per_s']:,.0f} learnings/s ({hive['wall_s']:.2f} s)")
    # Imported here: distill_bench pulls in torch, which has no place in the timed part.
    from hive.bench.distill_bench import machine_info

    machine = machine_info() | {"kafka_python": _version("kafka-python"), "pyarrow": _version("pyarrow")}
    if profiler is not None and profile_path is not None:
        write_profile(profiler, profile_path)
        say(f"profile of the hive arm's ingest thread: {profile_path}")
    return {
        "hive": hive | {"profiled": profiler is not None},
        "raw": raw,
        "ratio": round(hive["learnings_per_s"] / raw["records_per_s"], 3),
        "count": plan.count,
        "payload_bytes": size,
        "k": plan.k,
        "positions": plan.positions,
        "partitions": plan.partitions,
        "broker": bootstrap or "embedded (Tansu)",
        "load_1m_before": load_before,
        "load_1m_after": _load_1m(),
        "machine": machine,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def write_profile(profiler: cProfile.Profile, path: Path, top: int = 25) -> None:
    """The ``top`` entries by cumulative time, as pstats prints them."""
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).strip_dirs().sort_stats("cumulative").print_stats(top)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.getvalue())


def summary_line(report: dict[str, Any]) -> str:
    hive, raw = report["hive"], report["raw"]
    return (
        f"ingest: hive {hive['learnings_per_s']:,.0f} learnings/s ({hive['wall_s']:.2f} s), "
        f"raw kafka-python {raw['records_per_s']:,.0f} records/s ({raw['wall_s']:.2f} s), "
        f"ratio {report['ratio']:.2f}, {report['count']} x {report['payload_bytes'] / report['count']:,.0f} B"
    )
