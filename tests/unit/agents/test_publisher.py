"""The publisher against a fake broker: spool first, replay in order, backpressure at the bound, never a drop."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kafka.errors import KafkaTimeoutError, UnknownProducerIdError

from agents.publisher import Publisher, PublisherClosed
from agents.spool import Spool
from streams import topics
from streams.events import Learning
from streams.signing import verify

from factories import make_learning

AGENT = "agent-a"


@dataclass
class Meta:
    offset: int


class Future:
    """Already resolved, like a kafka-python future after its batch came back."""

    def __init__(self, offset: int | None, error: Exception | None = None) -> None:
        self.offset, self.error = offset, error

    def get(self, timeout: float | None = None) -> Meta:
        if self.error is not None:
            raise self.error
        assert self.offset is not None
        return Meta(self.offset)

    def add_callback(self, fn: Callable[[Meta], None]) -> None:
        if self.error is None:
            fn(self.get())

    def add_errback(self, fn: Callable[[Exception], None]) -> None:
        if self.error is not None:
            fn(self.error)


@dataclass
class FakeBroker:
    """A broker that can be down, and that wedges the producers made before a restart (as Tansu does)."""

    up: bool = True
    epoch: int = 0
    log: dict[str, list[bytes]] = field(default_factory=dict)
    attempts: list[bytes] = field(default_factory=list)
    producers: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def producer(self) -> FakeProducer:
        if not self.up:
            raise KafkaTimeoutError("Unable to bootstrap")
        self.producers += 1
        return FakeProducer(self, self.epoch)

    def restart(self) -> None:
        self.up, self.epoch = True, self.epoch + 1

    def values(self, topic: str) -> list[bytes]:
        with self.lock:
            return list(self.log.get(topic, []))


class FakeProducer:
    def __init__(self, broker: FakeBroker, epoch: int) -> None:
        self.broker, self.epoch = broker, epoch

    def send(
        self, topic: str, value: bytes | None = None, key: bytes | None = None, partition: int | None = None
    ) -> Future:
        assert value is not None and key == AGENT.encode()
        # Heartbeats go to partition 0, which the hive's fleet readers follow, whatever the partition count.
        assert partition == (0 if topic == topics.FLEET else None)
        with self.broker.lock:
            if topic == topics.LEARNINGS:
                self.broker.attempts.append(value)
            if not self.broker.up:
                return Future(None, KafkaTimeoutError("Expiring 1 record(s): 1000 ms has passed"))
            if self.epoch != self.broker.epoch:
                return Future(None, UnknownProducerIdError())
            records = self.broker.log.setdefault(topic, [])
            records.append(value)
            return Future(len(records) - 1)

    def flush(self, timeout: float | None = None) -> None:
        return None

    def close(self, timeout: float | None = None) -> None:
        return None


def make_publisher(tmp_path: Path, broker: FakeBroker, spool_max: int = 100, key: bytes | None = None) -> Publisher:
    publisher = Publisher(
        Spool(tmp_path / "spool.sqlite", spool_max),
        broker.producer,
        AGENT,
        max_message_bytes=100_000,
        signing_key=key,
        send_timeout_s=1.0,
        retry_backoff_max_s=0.2,
    )
    publisher.start()
    return publisher


def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def ids(values: list[bytes]) -> list[str]:
    return [json.loads(v)["id"] for v in values]


def test_learnings_wait_in_the_spool_while_the_broker_is_down_and_replay_in_order(tmp_path: Path) -> None:
    broker = FakeBroker()
    publisher = make_publisher(tmp_path, broker)
    sent = [make_learning(AGENT, n=i) for i in range(3)]
    publisher.publish(sent)
    until(lambda: len(broker.values(topics.LEARNINGS)) == 3)

    broker.up = False
    later = [make_learning(AGENT, n=i) for i in range(3, 10)]
    publisher.publish(later[:4])
    until(lambda: publisher.counters()["send_errors"] >= 2)
    publisher.publish(later[4:])  # the agent keeps working: publish does not wait for the broker
    assert publisher.counters()["spool_size"] == 7

    broker.restart()  # a fresh broker: the old producer is wedged and must be replaced
    until(lambda: publisher.counters()["spool_size"] == 0)
    assert publisher.close(drain_timeout_s=1.0) == 0
    delivered = broker.values(topics.LEARNINGS)
    assert ids(delivered) == [str(lr.id) for lr in sent + later]
    # A re-send reuses the spooled bytes: every attempt for an id carried the same bytes.
    by_id: dict[str, set[bytes]] = {}
    for value in broker.attempts:
        by_id.setdefault(json.loads(value)["id"], set()).add(value)
    assert all(len(values) == 1 for values in by_id.values())
    counts = publisher.counters()
    assert (counts["spooled"], counts["published"]) == (10, 10)
    assert broker.producers >= 2


def test_a_full_spool_blocks_publish_with_a_counted_warning_and_drops_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = FakeBroker(up=False)
    publisher = make_publisher(tmp_path, broker, spool_max=3)
    batch = [make_learning(AGENT, n=i) for i in range(5)]
    done = threading.Event()

    def work() -> None:
        publisher.publish(batch)
        done.set()

    worker = threading.Thread(target=work)
    worker.start()
    until(lambda: publisher.counters()["spool_full_waits"] == 1)
    time.sleep(0.3)
    assert not done.is_set(), "publish must block at the bound, not drop"
    assert publisher.counters()["spool_size"] == 3
    assert "spool" in caplog.text and "full" in caplog.text

    broker.up = True
    worker.join(timeout=10)
    assert done.is_set()
    until(lambda: publisher.counters()["spool_size"] == 0)
    publisher.close(drain_timeout_s=1.0)
    assert ids(broker.values(topics.LEARNINGS)) == [str(lr.id) for lr in batch]
    assert publisher.counters()["spool_full_waits"] == 1


def test_a_shutdown_while_full_spools_past_the_bound_and_close_leaves_the_rest_for_next_time(tmp_path: Path) -> None:
    broker = FakeBroker(up=False)
    publisher = make_publisher(tmp_path, broker, spool_max=2)
    stop = threading.Event()
    stop.set()
    publisher.publish([make_learning(AGENT, n=i) for i in range(5)], stop)
    assert publisher.close(drain_timeout_s=0.3) == 5
    with pytest.raises(PublisherClosed):
        publisher.publish([make_learning(AGENT, n=9)])
    publisher.spool.close()

    broker.up = True
    again = make_publisher(tmp_path, broker, spool_max=2)
    until(lambda: again.counters()["spool_size"] == 0)
    assert again.close(drain_timeout_s=1.0) == 0
    assert len(set(ids(broker.values(topics.LEARNINGS)))) == 5


def test_signed_learnings_verify_and_heartbeats_are_best_effort(tmp_path: Path) -> None:
    broker = FakeBroker(up=False)
    publisher = make_publisher(tmp_path, broker, key=b"secret")
    publisher.beat(b'{"beat": 1}')
    publisher.beat(b'{"beat": 2}')  # the first never left: counted, not queued
    publisher.publish([make_learning(AGENT, n=0)])
    assert publisher.counters()["heartbeat_errors"] == 1

    broker.up = True
    until(lambda: publisher.counters()["spool_size"] == 0 and publisher.counters()["heartbeats_sent"] == 1)
    publisher.close(drain_timeout_s=1.0)
    assert broker.values(topics.FLEET) == [b'{"beat": 2}']
    [value] = broker.values(topics.LEARNINGS)
    stored = Learning.model_validate_json(value)
    assert verify(stored, b"secret") and not verify(stored, b"other")


def test_an_oversize_learning_is_refused_before_anything_is_spooled(tmp_path: Path) -> None:
    publisher = make_publisher(tmp_path, FakeBroker())
    big = make_learning(AGENT, n=1, completion="x" * 4000)
    small = Publisher(publisher.spool, FakeBroker().producer, AGENT, max_message_bytes=1000)
    with pytest.raises(ValueError, match="message limit"):
        small.publish([make_learning(AGENT, n=0), big])
    assert len(publisher.spool) == 0
    publisher.close(drain_timeout_s=0.5)
