"""No start order, no restart loses a release: followers outlive the broker, and notice a topic that starts over."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agents.config import AgentSettings
from agents.model import build_core, save_core
from agents.sdk import HiveAgent
from streams import topics
from streams.broker import EmbeddedBroker, free_port
from streams.codec import encode
from streams.config import KafkaSettings
from streams.events import CoreRelease
from streams.follow import TopicFollower
from streams.kafka import create_topics, make_producer, send_and_wait

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
        assert follower.resets >= 1 and resets and resets[0] == 3  # the reset came before any new record
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
