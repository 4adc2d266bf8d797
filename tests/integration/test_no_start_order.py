"""No start order, no restart loses a release: followers outlive the broker, and notice a topic that starts over."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agents.config import AgentSettings
from agents.model import build_core, save_core
from agents.sdk import HiveAgent
from streams import topics
from streams.broker import EmbeddedBroker, free_port
from streams.codec import decode, encode
from streams.config import KafkaSettings
from streams.events import CoreRelease
from streams.follow import TopicFollower
from streams.kafka import create_topics, make_consumer, make_producer, send_and_wait
from streams.release_signing import read_public_keys, verify_release

from factories import ReleaseSigner

TOPIC = "test.follow"


def _until(condition: Callable[[], bool], timeout_s: float, what: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what()}"
        time.sleep(0.1)


@pytest.fixture
def brokers(tmp_path: Path) -> Iterator[Callable[[int], EmbeddedBroker]]:
    """Starts brokers on a port of the test's choosing; each is stopped (by its pid) at the end."""
    started: list[EmbeddedBroker] = []

    def start(port: int) -> EmbeddedBroker:
        broker = EmbeddedBroker(port=port, log_path=tmp_path / f"broker-{len(started)}.log")
        started.append(broker)
        broker.start()
        return broker

    yield start
    for broker in started:
        broker.stop()


def _send(kafka: KafkaSettings, topic: str, values: list[bytes]) -> None:
    producer = make_producer(kafka)
    try:
        for value in values:
            send_and_wait(producer, topic, b"k", value)
    finally:
        producer.close()


@pytest.mark.timeout(90)
def test_a_follower_started_before_the_broker_reads_everything_and_rereads_a_fresh_broker(
    brokers: Callable[[int], EmbeddedBroker],
) -> None:
    port = free_port()
    kafka = KafkaSettings(bootstrap=f"127.0.0.1:{port}", request_timeout_ms=3000)
    seen: list[bytes] = []
    resets: list[int] = []
    on_reset = lambda: resets.append(len(seen))  # noqa: E731
    follower = TopicFollower(kafka, TOPIC, seen.append, on_reset=on_reset, retry_backoff_max_s=1)
    follower.start()
    try:
        # No broker yet: the follower keeps trying instead of dying.
        _until(lambda: follower.retries >= 2, 30, lambda: f"retries; last error {follower.last_error!r}")
        assert follower.error is None and follower._thread.is_alive()

        first = brokers(port)
        create_topics(kafka, {TOPIC: 1})
        _send(kafka, TOPIC, [b"a0", b"a1", b"a2"])
        _until(lambda: seen == [b"a0", b"a1", b"a2"], 30, lambda: f"the first broker's records; saw {seen}")

        # A fresh broker on the same port holds nothing: its offsets start at 0 again, under a new cluster id.
        # Its first records are not missed even though the follower had read up to offset 2 before.
        first.stop()
        brokers(port)
        create_topics(kafka, {TOPIC: 1})
        _send(kafka, TOPIC, [b"b0", b"b1", b"b2", b"b3"])
        _until(lambda: seen[-4:] == [b"b0", b"b1", b"b2", b"b3"], 45, lambda: f"the fresh broker's records; saw {seen}")
        # The reset came after the first broker's records, and perhaps after a few of the fresh broker's, read
        # before its new cluster id was noticed.
        assert follower.resets >= 1 and 3 <= resets[0] <= 7
        assert seen[:3] == [b"a0", b"a1", b"a2"]
        after_reset = seen[3:]
        # Records of the new broker read before the reset was noticed are read again after it, never lost.
        assert after_reset[-4:] == [b"b0", b"b1", b"b2", b"b3"]
        assert set(after_reset) <= {b"b0", b"b1", b"b2", b"b3"}
        assert follower.error is None
    finally:
        follower.stop()
    assert not follower._thread.is_alive()


@pytest.mark.timeout(120)
def test_an_agent_started_before_the_broker_reaches_every_release_across_a_broker_restart(
    tmp_path: Path, brokers: Callable[[int], EmbeddedBroker]
) -> None:
    port = free_port()
    kafka = KafkaSettings(bootstrap=f"127.0.0.1:{port}", request_timeout_ms=3000)
    hive = ReleaseSigner()
    cores = tmp_path / "cores"
    settings = AgentSettings(
        agent_id="agent-early",
        skill="capital",
        home=tmp_path / "agents",
        hive_public_key=hive.public_key,
        retry_backoff_max_s=1,
    )

    def release(version: int) -> CoreRelease:
        directory = cores / f"v{version}"
        signed = hive.sign(
            CoreRelease(
                version=version,
                model_uri=directory.resolve().as_uri(),
                sha256=save_core(build_core(seed=version), directory),
            )
        )
        _send(kafka, topics.CORE, [encode(signed)])
        return signed

    agent = HiveAgent(settings, kafka)  # no broker: it starts all the same
    try:
        got: list[int] = []
        agent.on_new_core(lambda r: got.append(r.version))
        _until(lambda: agent.counters()["core_watch_retries"] >= 1, 30, lambda: f"retries: {agent.counters()}")

        first = brokers(port)
        create_topics(kafka)
        release(0)
        assert agent.wait_for_core(timeout_s=60) is not None and agent.release is not None
        assert agent.release.version == 0

        # The broker restarts with nothing: the agent's watcher had read past offset 0, and must not miss the
        # fresh broker's first release.
        first.stop()
        brokers(port)
        create_topics(kafka)
        release(1)
        _until(lambda: agent.poll_core() is not None, 45, lambda: f"core v1; {agent.counters()}")
        assert agent.release is not None and agent.release.version == 1 and got == [0, 1]
        counts = agent.counters()
        assert counts["core_watch_resets"] >= 1
        assert all(counts[k] == 0 for k in counts if k.startswith("releases_")), counts
    finally:
        agent.close()


def _records(kafka: KafkaSettings, topic: str, at_least: int, timeout_s: float) -> list[bytes]:
    """The values on ``topic``, every partition, once there are ``at_least`` of them (fewer after ``timeout_s``)."""
    consumer = make_consumer(kafka, [topic], None)
    found: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(found) < at_least and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                found.extend(r.value for r in records)
    finally:
        consumer.close(autocommit=False)
    return found


def _releases(kafka: KafkaSettings, at_least: int, timeout_s: float) -> list[CoreRelease]:
    """The releases on hive.core, once there are ``at_least`` of them (fewer after ``timeout_s``)."""
    return [decode(v, CoreRelease, kafka.max_message_bytes) for v in _records(kafka, topics.CORE, at_least, timeout_s)]


# The round check never opens a round: the test is about releases only.
NO_ROUNDS_DUE = ("--round-check-s", "0.5", "--min-new", "1000000", "--every", "10h", "--max-staleness", "10h")


@pytest.mark.timeout(200)
def test_the_hive_releases_its_champion_again_on_a_broker_that_lost_hive_core(
    tmp_path: Path, brokers: Callable[[int], EmbeddedBroker], hive_serve: Callable[..., Any]
) -> None:
    port = free_port()
    kafka = KafkaSettings(bootstrap=f"127.0.0.1:{port}")
    first = brokers(port)
    create_topics(kafka)  # before anything reads hive.core: a reader's metadata request could create it otherwise
    home = tmp_path / "hive"
    serve = hive_serve(kafka.bootstrap, home, args=NO_ROUNDS_DUE)
    serve.start()
    [announced] = _releases(kafka, 1, 90)
    keys = read_public_keys(home / "release-key" / "release.pub")
    assert announced.version == 0 and announced.sequence == 1 and verify_release(announced, keys)

    # The broker restarts with nothing: no agent could get core v0 from it until the next round.
    first.stop()
    brokers(port)
    # A message the hive must dead-letter, at once: its producer from before the restart cannot send any more.
    create_topics(kafka)
    _send(kafka, topics.LEARNINGS, [b"not json"])
    [dead] = _records(kafka, topics.LEARNINGS_DLQ, 1, 90)
    assert dead == b"not json"
    again = _releases(kafka, 1, 90)  # after REPUBLISH_GRACE_S (30 s) from the first release
    assert serve.alive, serve.log_tail()
    # A higher number than any before: a first try may fail (and use up its number) while the broker settles.
    assert [r.version for r in again] == [0] and again[0].sequence > announced.sequence, serve.log_tail()
    assert verify_release(again[0], keys) and again[0].sha256 == announced.sha256
    assert "lacked release #1" in serve.log_path.read_text(errors="replace")
    assert serve.terminate() == 0
