"""Ingest's consumer group on the embedded broker: a quick first join, and two ingestors sharing the partitions."""

from __future__ import annotations

import random
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from kafka import TopicPartition

from hive.config import HiveSettings
from hive.ingest.ingestor import Ingestor
from hive.store.parquet import ParquetLearningStore
from streams import topics
from streams.codec import encode
from streams.config import KafkaSettings
from streams.kafka import DEFAULT_PARTITIONS, create_topics, make_producer

from factories import make_learning

PARTITIONS = {TopicPartition(topics.LEARNINGS, p) for p in range(DEFAULT_PARTITIONS[topics.LEARNINGS])}
N = 200
DEADLINE_S = 45.0


def test_an_ingestor_joins_with_settings_that_bound_the_join_to_5_s(fresh_broker: str, tmp_path: Path) -> None:
    kafka = KafkaSettings(bootstrap=fresh_broker)
    # The embedded broker holds a join for about half the session timeout, so these defaults bound a join
    # to ~3 s (measured 3.1 s on an idle machine); kafka-python's own 45 s would make it ~22 s. Tests
    # assert no wall-clock time: a loaded machine stretches any join, so the bound is checked on the
    # settings, and the deadline below only guards against a hang.
    assert (kafka.session_timeout_ms, kafka.heartbeat_interval_ms) == (6000, 2000)
    assert kafka.session_timeout_ms / 2 <= 5000
    create_topics(kafka)
    settings = HiveSettings(home=tmp_path / "hive", kafka=kafka)
    with ParquetLearningStore(settings.store_dir) as store:
        started = time.monotonic()
        ingestor = Ingestor(settings, store)
        try:
            while not ingestor.ready and time.monotonic() - started < DEADLINE_S:
                ingestor.poll_once(timeout_ms=100)
            assert ingestor.ready, f"no assignment within {DEADLINE_S} s"
            assert ingestor.assignment() == PARTITIONS
        finally:
            ingestor.close()


def test_two_ingestors_in_one_group_share_the_partitions(fresh_broker: str, tmp_path: Path, agent_keys: Any) -> None:
    kafka = KafkaSettings(bootstrap=fresh_broker)
    create_topics(kafka)
    settings = HiveSettings(home=tmp_path / "hive", kafka=kafka, ingest=agent_keys.ingest())
    rng = random.Random(1)
    with ParquetLearningStore(settings.store_dir) as store:
        first, second = Ingestor(settings, store), Ingestor(settings, store)
        stop = threading.Event()
        threads = [threading.Thread(target=x.run, args=(stop,), kwargs={"timeout_ms": 200}) for x in (first, second)]
        for thread in threads:
            thread.start()
        try:
            started = time.monotonic()
            while time.monotonic() - started < DEADLINE_S:
                a, b = first.assignment(), second.assignment()
                if a and b and a | b == PARTITIONS:
                    break
                time.sleep(0.1)
            assert a and b, f"one ingestor got nothing: {a} / {b}"
            assert not a & b and a | b == PARTITIONS
            # Records on every partition: each ingestor stores those of its own partitions.
            producer = make_producer(kafka)
            try:
                for i in range(N):
                    item = agent_keys.sign(make_learning(f"agent-{i % 8}", id=uuid.UUID(int=rng.getrandbits(128))))
                    producer.send(topics.LEARNINGS, key=item.agent_id.encode(), value=encode(item), partition=i % 4)
                producer.flush(timeout=30)
            finally:
                producer.close()
            while store.count() < N and time.monotonic() - started < DEADLINE_S:
                time.sleep(0.1)
            stored = store.count()
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
    assert stored == N
    assert first.totals.stored > 0 and second.totals.stored > 0
    assert first.totals.stored + second.totals.stored == N
