"""Embedded broker + Kafka wrappers + ingest: every valid learning stored once, every bad one dead-lettered."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, TopicPartition

from hive.config import HiveSettings
from hive.ingest.ingestor import Ingestor
from hive.store.parquet import ParquetLearningStore
from streams import codec, topics
from streams.codec import encode
from streams.config import KafkaSettings
from streams.events import Learning
from streams.kafka import create_topics, make_consumer, make_producer, send_and_wait

from factories import make_learning

AGENTS = ("agent-a", "agent-b", "agent-c")
N_VALID = 300
DEADLINE_S = 90.0


def kafka_settings(bootstrap: str) -> KafkaSettings:
    return KafkaSettings(bootstrap=bootstrap, session_timeout_ms=6000, heartbeat_interval_ms=2000)


def random_learning(rng: random.Random, agent: str, n: int) -> Learning:
    """A learning drawn from ``rng``, id included, so that a seed gives the same ones; every third is wrong and
    carries its correction."""
    word = "".join(rng.choice("abcdefgh") for _ in range(rng.randint(3, 6)))
    right = n % 3 != 0
    return make_learning(
        agent,
        id=uuid.UUID(int=rng.getrandbits(128)),
        prompt=word,
        completion=word[::-1] if right else word,
        reward=1.0 if right else 0.0,
        correction=None if right else word[::-1],
    )


def malformed(max_bytes: int) -> list[tuple[str, bytes]]:
    """One message per DecodeError reason, with the reason the ingest must give it."""
    good = json.loads(encode(random_learning(random.Random(7), "agent-a", 1)))
    short_teacher = {"k": 2, "token_ids": [[1]], "logprobs": [[-1]]}  # one id where k says two
    return [
        (codec.INVALID_JSON, b'{"agent_id": "agent-a", '),
        (codec.SCHEMA, json.dumps(good | {"agent_id": "no spaces allowed"}).encode()),
        (codec.UNKNOWN_VERSION, json.dumps(good | {"schema_version": "2.0"}).encode()),
        (codec.TEACHER_SIGNAL, json.dumps(good | {"teacher": short_teacher}).encode()),
        (codec.UNDECODABLE, b"\xff\xfe not utf-8"),
        (codec.OVERSIZE, json.dumps(good | {"prompt": "x" * (max_bytes + 10)}).encode()),
    ]


def produce(settings: KafkaSettings, records: list[tuple[bytes, bytes]], ends: dict[tuple[str, int], int]) -> None:
    """Sends and checks every record, and raises ``ends`` to each partition's next offset.

    The acks give the log ends: Tansu 0.6 answers ListOffsets(latest) with the last batch's base
    offset + 1, so ``end_offsets`` undercounts after a batched produce.
    """
    # Room for the oversize record: the broker does not enforce a size limit (Tansu 0.6 ignores
    # max.message.bytes); the hive does.
    producer = make_producer(settings, max_request_size=4 * settings.max_message_bytes)
    try:
        futures = [producer.send(topics.LEARNINGS, key=k, value=v) for k, v in records]
        producer.flush(timeout=60)
        for future in futures:
            meta = future.get(timeout=30)
            key = (meta.topic, meta.partition)
            ends[key] = max(ends.get(key, 0), meta.offset + 1)
    finally:
        producer.close()


def ingest_until(ingestor: Ingestor, polled: int) -> float:
    """Polls until ``polled`` records in total have been handled; returns the seconds it took."""
    start = time.monotonic()
    while ingestor.totals.polled < polled:
        assert time.monotonic() - start < DEADLINE_S, f"ingest stalled at {ingestor.totals} (want {polled} polled)"
        ingestor.poll_once(timeout_ms=500)
    return time.monotonic() - start


class NoCommitIngestor(Ingestor):
    """Dies, in effect, between the store commit and the Kafka commit of every batch."""

    def _commit(self, next_offsets: dict[tuple[str, int], int]) -> None:
        return None


def read_dlq(settings: KafkaSettings, expected: int) -> list:
    consumer = make_consumer(settings, None, None)
    tp = TopicPartition(topics.LEARNINGS_DLQ, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    records: list = []
    deadline = time.monotonic() + 30
    try:
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
    finally:
        consumer.close(autocommit=False)
    return records


def test_ingest_stores_each_learning_once_and_dead_letters_the_rest(
    fresh_broker: str, tmp_path: Path, agent_keys: Any
) -> None:
    kafka = kafka_settings(fresh_broker)
    settings = HiveSettings(home=tmp_path / "hive", kafka=kafka, ingest=agent_keys.ingest())
    create_topics(kafka)
    rng = random.Random(0)
    valid = [agent_keys.sign(random_learning(rng, AGENTS[i % len(AGENTS)], i)) for i in range(N_VALID)]
    first, second = valid[: N_VALID // 2], valid[N_VALID // 2 :]
    bad = malformed(kafka.max_message_bytes)

    def keyed(items: list[Learning]) -> list[tuple[bytes, bytes]]:
        return [(x.agent_id.encode(), encode(x)) for x in items]

    # Phase 1: half the learnings, some sent twice (an agent retrying after a lost ack), and the bad ones,
    # keyed by agent ids so that they land on the same partitions as the good ones.
    phase1 = keyed(first) + keyed(first[:10]) + [(AGENTS[i % 3].encode(), raw) for i, (_, raw) in enumerate(bad)]
    ends: dict[tuple[str, int], int] = {}
    produce(kafka, phase1, ends)
    store = ParquetLearningStore(settings.store_dir)
    ingestor = Ingestor(settings, store)
    stop = threading.Event()
    runner = threading.Thread(target=ingestor.run, args=(stop,), kwargs={"timeout_ms": 200})
    runner.start()
    try:
        start = time.monotonic()
        while ingestor.totals.polled < len(phase1) and time.monotonic() - start < DEADLINE_S:
            time.sleep(0.1)
    finally:
        stop.set()
        runner.join(timeout=30)
    assert not runner.is_alive(), "Ingestor.run did not return after stop was set"
    assert ingestor.totals.polled == len(phase1)
    assert ingestor.totals.stored == len(first)
    assert ingestor.totals.duplicates == 10
    assert ingestor.totals.dead_lettered == len(bad)
    assert store.count() == store.unique_ids() == len(first)

    # Phase 2: the rest, plus repeats of phase-1 learnings, ingested by a process that stores each batch
    # but "crashes" before every Kafka commit.
    phase2 = keyed(second) + keyed(first[-5:])
    produce(kafka, phase2, ends)
    crashy = NoCommitIngestor(settings, store)
    try:
        ingest_until(crashy, len(phase2))
    finally:
        crashy.close()
    assert (crashy.totals.stored, crashy.totals.duplicates, crashy.totals.dead_lettered) == (len(second), 5, 0)

    # Phase 3: a restart. Kafka's committed offsets are behind the store's, so the new ingestor seeks to
    # the store's offsets and polls nothing; without the seek it would re-read phase 2 (and dedupe it).
    restarted = Ingestor(settings, store)
    try:
        start = time.monotonic()
        while not restarted.ready or time.monotonic() - start < 2:
            assert time.monotonic() - start < DEADLINE_S, "the restarted ingestor never got its partitions"
            restarted.poll_once(timeout_ms=300)
        for _ in range(3):
            restarted.poll_once(timeout_ms=300)
    finally:
        restarted.close()
    assert restarted.totals.polled == 0
    assert restarted.totals.stored == 0

    # The store holds each valid learning exactly once, in order per partition, with every offset recorded.
    assert store.count() == store.unique_ids() == N_VALID
    assert {str(x.id) for x in store.read()} == {str(x.id) for x in valid}
    assert store.per_agent_counts() == {agent: N_VALID // 3 for agent in AGENTS}
    assert store.offsets() == ends
    assert sum(store.offsets().values()) == len(phase1) + len(phase2)
    store.close()

    # Every malformed message is in the dead-letter topic with its reason and where it came from.
    dead = read_dlq(kafka, len(bad))
    by_reason = {dict(r.headers)["reason"].decode(): r for r in dead}
    assert len(dead) == len(bad)
    assert set(by_reason) == {reason for reason, _ in bad}
    for reason, raw in bad:
        record = by_reason[reason]
        headers = dict(record.headers)
        assert headers["source_topic"] == topics.LEARNINGS.encode()
        assert int(headers["source_offset"]) >= 0 and int(headers["source_partition"]) >= 0
        assert headers["detail"]
        if reason == codec.OVERSIZE:
            assert int(headers["truncated_from"]) == len(raw)
            assert raw.startswith(record.value)
        else:
            assert record.value == raw


def test_wrappers_on_the_shared_broker(broker: str) -> None:
    kafka = kafka_settings(broker)
    name = f"it.wrappers.{uuid.uuid4().hex[:8]}"
    create_topics(kafka, {name: 3}, configs={name: {"cleanup.policy": "compact"}})
    create_topics(kafka, {name: 3})  # already there: fine
    admin = KafkaAdminClient(bootstrap_servers=broker)
    try:
        (described,) = admin.describe_topics([name])
    finally:
        admin.close()
    assert len(described["partitions"]) == 3
    producer = make_producer(kafka)
    try:
        meta = send_and_wait(producer, name, b"k", b"\x00raw bytes", headers=[("h", b"1")])
    finally:
        producer.close()
    assert meta.offset == 0
    consumer = make_consumer(kafka, None, None)
    try:
        consumer.assign([TopicPartition(name, meta.partition)])
        records: list = []
        deadline = time.monotonic() + 20
        while not records and time.monotonic() < deadline:
            records = [r for batch in consumer.poll(timeout_ms=500).values() for r in batch]
    finally:
        consumer.close(autocommit=False)
    assert [(r.key, r.value, r.headers) for r in records] == [(b"k", b"\x00raw bytes", [("h", b"1")])]


def test_empty_bootstrap_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="bootstrap is empty"):
        make_producer(KafkaSettings(bootstrap=""))


class PickyStore(ParquetLearningStore):
    """A store with a bug for one learning: a batch holding it fails with an error nobody foresaw."""

    def __init__(self, directory: Path, bad_id: uuid.UUID) -> None:
        super().__init__(directory)
        self.bad_id = bad_id

    def append(self, learnings: Any, offsets: Any, dead_letters: Any = ()) -> int:
        if any(x.id == self.bad_id for x in learnings):
            raise OverflowError("Python int too large to convert to C long")
        return super().append(learnings, offsets, dead_letters)


def test_a_learning_the_store_cannot_take_is_dead_lettered_alone(
    fresh_broker: str, tmp_path: Path, agent_keys: Any
) -> None:
    # Found by `hive bench fuzz`: a core_version of 10**400 passed the schema, the store's int64 column refused
    # it, and the ingest thread died on every restart. The schema now bounds it; ingest isolates any such case.
    kafka = kafka_settings(fresh_broker)
    settings = HiveSettings(home=tmp_path / "hive", kafka=kafka, ingest=agent_keys.ingest())
    create_topics(kafka)
    rng = random.Random(5)
    batch = [agent_keys.sign(random_learning(rng, "agent-a", i)) for i in range(20)]
    ends: dict[tuple[str, int], int] = {}
    produce(kafka, [(x.agent_id.encode(), encode(x)) for x in batch], ends)
    store = PickyStore(settings.store_dir, batch[7].id)
    ingestor = Ingestor(settings, store)
    try:
        ingest_until(ingestor, len(batch))
    finally:
        ingestor.close()
    assert ingestor.totals.stored == len(batch) - 1
    assert ingestor.totals.dead_lettered == 1
    assert {x.id for x in store.read()} == {x.id for x in batch} - {batch[7].id}
    assert store.offsets() == ends  # the batch was committed: nothing is polled again
    [letter] = store.dead_letters()
    assert letter.reason == "unprocessable" and "OverflowError" in letter.detail
    [(_, partition)] = ends  # one agent's learnings share a partition
    assert (letter.source_partition, letter.source_offset) == (partition, 7)
    store.close()
    [record] = read_dlq(kafka, 1)
    assert dict(record.headers)["reason"] == b"unprocessable"
