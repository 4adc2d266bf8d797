"""The embedded broker on S3 storage (a real ``moto_server``): kill -9 it while a producer sends, start it again on
the same bucket, and every record the broker acked is still there, with the consumer group's committed offset.

Tansu's ListOffsets(latest) is wrong on S3 storage (it answers 1), so nothing here asks for end offsets: the
reader polls until it has seen what it waits for.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from kafka import OffsetAndMetadata, TopicPartition
from kafka.errors import KafkaError

from agents.core_fetch import s3_client
from streams.broker import EmbeddedBroker, free_port
from streams.config import KafkaSettings
from streams.kafka import create_topics, make_consumer, make_producer, send_and_wait

BUCKET = "hive-broker"
TOPIC = "hive.learnings"
GROUP = "durable-test"


def _broker_env(endpoint: str) -> dict[str, str]:
    # Tansu reads the AWS_* variables; without AWS_ALLOW_HTTP every request to an http endpoint fails silently.
    return os.environ | {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT": endpoint,
        "AWS_ALLOW_HTTP": "true",
    }


def _read_all(settings: KafkaSettings, wanted: set[bytes], timeout_s: float = 60.0) -> list[bytes]:
    """Every value on the topic's partitions, from the start, polling until ``wanted`` are all seen."""
    consumer = make_consumer(settings, None, group_id=None, consumer_timeout_ms=1000)
    try:
        partitions = [TopicPartition(TOPIC, p) for p in sorted(consumer.partitions_for_topic(TOPIC) or [])]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        seen: list[bytes] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not wanted <= set(seen):
            for records in consumer.poll(timeout_ms=500).values():
                seen.extend(bytes(r.value) for r in records)
        return seen
    finally:
        consumer.close()


def test_a_broker_killed_mid_stream_restarts_on_its_bucket_with_every_acked_record(
    s3_endpoint: str, tmp_path: Path
) -> None:
    s3_client(s3_endpoint).create_bucket(Bucket=BUCKET)
    missing, committed = _kill_and_restart(tmp_path, f"s3://{BUCKET}/", s3_endpoint)
    assert not missing, f"{len(missing)} acked records lost across the restart, e.g. {sorted(missing)[:3]}"
    assert committed == 7


def test_in_memory_the_same_kill_loses_what_was_acked(s3_endpoint: str, tmp_path: Path) -> None:
    """The control: the test above can fail. A broker in memory restarts empty."""
    missing, committed = _kill_and_restart(tmp_path, "memory://tansu/", s3_endpoint)
    assert missing and committed is None


def _kill_and_restart(tmp_path: Path, storage: str, endpoint: str) -> tuple[set[bytes], int | None]:
    """Produces, kills the broker with SIGKILL mid-stream, starts it again on ``storage``, produces more; returns
    the acked records the restarted broker does not have, and the group offset it knows (7 was committed)."""
    port = free_port()
    s3_endpoint = endpoint

    def broker() -> EmbeddedBroker:
        return EmbeddedBroker(port=port, log_path=tmp_path / "tansu.log", storage=storage, env=_broker_env(s3_endpoint))

    first = broker()
    first.start()
    settings = KafkaSettings(bootstrap=first.bootstrap, request_timeout_ms=5000)
    create_topics(settings, {TOPIC: 2})

    committer = make_consumer(settings, None, group_id=GROUP)
    committer.assign([TopicPartition(TOPIC, 0)])

    acked: list[bytes] = []
    stop = threading.Event()

    def produce() -> None:
        # One record at a time, each waited for: a value is in ``acked`` only once the broker said it has it.
        # While the broker is down, sends fail; the same value is tried again, so a value may land twice but an
        # acked one is never replaced by another.
        n = 0
        while not stop.is_set():
            value = f"record-{n:05d}".encode()
            producer = None
            try:
                producer = make_producer(settings, max_block_ms=3000, retries=0, enable_idempotence=False, acks="all")
                while not stop.is_set():
                    send_and_wait(producer, TOPIC, value[-2:], value, timeout_s=5)
                    acked.append(value)
                    n += 1
                    value = f"record-{n:05d}".encode()
            except KafkaError:
                # Expected while the broker is down: the value is not acked, and is sent again once it is back.
                time.sleep(0.2)
            finally:
                if producer is not None:
                    producer.close(timeout=1)

    thread = threading.Thread(target=produce, name="producer")
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while len(acked) < 60 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(acked) >= 60, f"only {len(acked)} records acked before the kill"
        # A consumer group commits its place before the kill: the restarted broker must still know it.
        committer.commit({TopicPartition(TOPIC, 0): OffsetAndMetadata(7, "", -1)})
        pid = first.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)  # mid-stream: the producer is sending
        first.stop()
        before_restart = len(acked)
        time.sleep(1.0)
        second = broker()
        second.start()
        try:
            deadline = time.monotonic() + 60
            while len(acked) < before_restart + 60 and time.monotonic() < deadline:
                time.sleep(0.05)
            stop.set()
            thread.join(timeout=30)
            assert len(acked) >= before_restart + 60, "the producer did not get going again on the restarted broker"
            seen = _read_all(settings, set(acked), timeout_s=20 if storage.startswith("memory") else 60)
            reader = make_consumer(settings, None, group_id=GROUP)
            try:
                return set(acked) - set(seen), reader.committed(TopicPartition(TOPIC, 0))
            finally:
                reader.close()
        finally:
            second.stop()
    finally:
        stop.set()
        thread.join(timeout=30)
        committer.close()
        first.stop()
