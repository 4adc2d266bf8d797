"""SIGKILL ``hive serve`` again and again while agents stream: every learning is stored exactly once."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kafka import TopicPartition

from hive.store.interface import StoreError
from hive.store.parquet import ParquetLearningStore
from streams import topics
from streams.codec import encode
from streams.config import KafkaSettings
from streams.events import Learning
from streams.kafka import create_topics, make_consumer, make_producer

from factories import make_learning

TOTAL = 5_000
PRODUCERS = 4
AGENTS_PER_PRODUCER = 2
CHUNK = 25
# Paced so that the stream lasts through the kills (~25 s), rather than landing on the broker at once.
CHUNK_PAUSE_S = 0.5
KILLS = 6
DEADLINE_S = 80.0
# A SIGKILLed member stays in the group until its session times out. With the default 6 s, the next
# join took ~11.5 s on the embedded broker (measured); 3 s brings it to ~2.5 s, so that six restarts fit
# the test's time. test_ingest_group.py checks the default settings.
FAST_GROUP = {"HIVE_KAFKA_SESSION_TIMEOUT_MS": "3000", "HIVE_KAFKA_HEARTBEAT_INTERVAL_MS": "1000"}


def stored_count(store_dir: Path) -> int:
    """What the store holds now, read beside the writer (read-only: it repairs nothing)."""
    try:
        with ParquetLearningStore(store_dir, read_only=True) as store:
            return store.count()
    except StoreError:
        return 0  # not created yet: the first hive serve has not opened it


def stream(
    kafka: KafkaSettings,
    items: list[Learning],
    stop: threading.Event,
    errors: list[BaseException],
    acked: dict[str, tuple[int, int]],
) -> None:
    """One agent process: sends in paced chunks and waits for every ack, as the SDK does.

    Each acked learning's (partition, offset) goes into ``acked``, so that a failure can say where a missing one is.
    """
    producer = make_producer(kafka)
    try:
        for start in range(0, len(items), CHUNK):
            if stop.is_set():
                return
            futures = [
                producer.send(topics.LEARNINGS, key=x.agent_id.encode(), value=encode(x))
                for x in items[start : start + CHUNK]
            ]
            for x, future in zip(items[start : start + CHUNK], futures, strict=True):
                meta = future.get(timeout=30)
                acked[str(x.id)] = (meta.partition, meta.offset)
            stop.wait(CHUNK_PAUSE_S)
    except BaseException as err:
        errors.append(err)  # for the test thread, which asserts there were none
        raise
    finally:
        # Bounded: a failed test stops the broker under this thread, and an unbounded close would wait forever.
        producer.close(timeout=5)


def on_broker(kafka: KafkaSettings, positions: list[tuple[int, int]]) -> dict[tuple[int, int], bool]:
    """Whether the broker still serves a record at each (partition, offset): tells a record the hive skipped
    from one the broker lost."""
    consumer = make_consumer(kafka, consumer_timeout_ms=5000)
    try:
        found: dict[tuple[int, int], bool] = {}
        for partition, offset in positions:
            tp = TopicPartition(topics.LEARNINGS, partition)
            consumer.assign([tp])
            consumer.seek(tp, offset)
            batch = consumer.poll(timeout_ms=5000, max_records=1)
            found[(partition, offset)] = any(r.offset == offset for recs in batch.values() for r in recs)
        return found
    finally:
        consumer.close()


def kill_and_restart(serve: Any, rng: random.Random, store_dir: Path, started: float) -> list[tuple[float, int]]:
    """Starts and SIGKILLs ``hive serve`` KILLS times; returns (seconds, learnings stored) at each kill."""
    kill_log: list[tuple[float, int]] = []
    for kill in range(KILLS):
        serve.start()
        if kill % 2 == 0:
            # Anywhere in the start: imports, opening the store, joining the group, the first batches.
            time.sleep(rng.uniform(0.3, 4.0))
        else:
            # Mid-ingest: once this life has stored something, at a random point between batches or inside one.
            before = stored_count(store_dir)
            while stored_count(store_dir) == before and time.monotonic() - started < DEADLINE_S:
                assert serve.alive, f"hive serve exited by itself:\n{serve.log_tail()}"
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 0.7))
        assert serve.alive, f"hive serve exited by itself:\n{serve.log_tail()}"
        serve.kill()
        kill_log.append((round(time.monotonic() - started, 1), stored_count(store_dir)))
    return kill_log


def test_killed_ingest_stores_every_learning_exactly_once(
    fresh_broker: str, tmp_path: Path, hive_serve: Callable[..., Any], agent_keys: Any
) -> None:
    started = time.monotonic()
    rng = random.Random(4)
    kafka = KafkaSettings(bootstrap=fresh_broker)
    create_topics(kafka)
    home = tmp_path / "hive"
    store_dir = home / "store"
    learnings = [
        agent_keys.sign(
            make_learning(
                f"agent-{i % (PRODUCERS * AGENTS_PER_PRODUCER)}",
                id=uuid.UUID(int=rng.getrandbits(128)),
                prompt=f"prompt {i}",
                completion=f"answer {i}",
            )
        )
        for i in range(TOTAL)
    ]
    errors: list[BaseException] = []
    acked: dict[str, tuple[int, int]] = {}
    stop = threading.Event()
    producers = []
    for p in range(PRODUCERS):
        agents = [f"agent-{p * AGENTS_PER_PRODUCER + a}" for a in range(AGENTS_PER_PRODUCER)]
        mine = [x for x in learnings if x.agent_id in agents]
        args = (kafka, mine, stop, errors, acked)
        producers.append(threading.Thread(target=stream, args=args, name=f"agent-{p}"))
    serve = hive_serve(fresh_broker, home, FAST_GROUP)
    for thread in producers:
        thread.start()
    try:
        kill_log = kill_and_restart(serve, rng, store_dir, started)
        serve.start()
        for thread in producers:
            thread.join(timeout=DEADLINE_S)
        assert not errors, f"a producer failed: {errors[0]!r}"
        assert not any(t.is_alive() for t in producers), f"a producer was still sending after {DEADLINE_S} s"
        while stored_count(store_dir) < TOTAL and time.monotonic() - started < DEADLINE_S:
            assert serve.alive, f"hive serve exited by itself:\n{serve.log_tail()}"
            time.sleep(0.2)
        assert serve.terminate() == 0, serve.log_tail()
    finally:
        stop.set()
        for thread in producers:
            thread.join(timeout=15)

    assert serve.starts == KILLS + 1
    # The kills landed while the store was filling, not all before or after it.
    assert 0 < kill_log[-1][1] < TOTAL, kill_log
    with ParquetLearningStore(store_dir, read_only=True) as store:
        missing = sorted(acked[i] for i in {str(x.id) for x in learnings} - {str(x.id) for x in store.read()})
        if store.count() != TOTAL:
            where = on_broker(kafka, missing[:20])
            pytest.fail(
                f"{TOTAL - store.count()} learnings are not in the store; (partition, offset) -> on the broker: "
                f"{where}; the store's offsets: {store.offsets()}; kills (s, stored): {kill_log}\n"
                f"{serve.log_tail(20000)}"
            )
        assert store.unique_ids() == TOTAL
        assert {str(x.id) for x in store.read()} == {str(x.id) for x in learnings}
        assert store.per_agent_counts() == {f"agent-{a}": TOTAL // 8 for a in range(PRODUCERS * AGENTS_PER_PRODUCER)}
        assert store.dead_letter_counts() == {}
        assert sum(store.offsets().values()) >= TOTAL
    assert time.monotonic() - started < DEADLINE_S + 10
