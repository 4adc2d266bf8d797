"""The agent SDK against the real broker: what it publishes arrives signed, with its ids, and the docs' example runs."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from kafka import TopicPartition

from agents.config import AgentSettings
from agents.model import build_core, save_core
from agents.sdk import HiveAgent, NoCoreError
from agents.spool import SpoolLocked
from streams import topics
from streams.codec import decode, encode
from streams.config import KafkaSettings
from streams.events import CoreRelease, Learning
from streams.kafka import create_topics, make_consumer, make_producer, send_and_wait
from streams.signing import verify

from factories import ReleaseSigner

ROOT = Path(__file__).resolve().parents[2]


def _read_learnings(kafka: KafkaSettings, expected: int) -> list[Learning]:
    consumer = make_consumer(kafka, None, None)
    partitions = [TopicPartition(topics.LEARNINGS, p) for p in consumer.partitions_for_topic(topics.LEARNINGS) or ()]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    found: list[Learning] = []
    deadline = time.monotonic() + 20
    try:
        while len(found) < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                found.extend(decode(r.value, Learning, kafka.max_message_bytes) for r in records)
    finally:
        consumer.close(autocommit=False)
    return found


def test_record_learn_publish_arrives_signed_with_the_ids_it_was_given(fresh_broker: str, tmp_path: Path) -> None:
    kafka = KafkaSettings(bootstrap=fresh_broker)
    create_topics(kafka)
    v0 = tmp_path / "cores" / "v0"
    producer = make_producer(kafka)
    hive = ReleaseSigner()
    v0_sha = save_core(build_core(seed=0), v0)
    release = hive.sign(CoreRelease(version=0, model_uri=v0.resolve().as_uri(), sha256=v0_sha))
    send_and_wait(producer, topics.CORE, b"core", encode(release))
    producer.close()

    settings = AgentSettings(
        agent_id="sdk-1",
        skill="reverse",
        home=tmp_path / "agents",
        signing_key="hex:" + "00ff" * 16,
        hive_public_key=hive.public_key,
    )
    with HiveAgent(settings, kafka) as agent:
        with pytest.raises(NoCoreError):
            agent.generate(["abc"])
        with pytest.raises(SpoolLocked):
            HiveAgent(settings, kafka)  # the same agent twice would share one spool
        seen: list[int] = []
        agent.on_new_core(lambda r: seen.append(r.version))
        assert agent.wait_for_core(timeout_s=30) == release and seen == [0]

        [answer] = agent.generate(["abc"])
        wrong = agent.record_feedback("abc", answer, reward=0.0, correction="cba")
        right = agent.record_feedback("xy", "yx", reward=1.0)
        unverified = agent.record_feedback("q", "nope", reward=0.2)
        learned = agent.learn([wrong, right, unverified])
        assert [lr.id for lr in learned] == [wrong.id, right.id, unverified.id]
        assert learned[0].teacher is not None and learned[0].teacher.over == "correction"
        assert learned[1].teacher is not None and learned[1].teacher.over == "completion"
        assert len(learned[1].teacher.token_ids) == len("yx") + 1
        assert learned[2].teacher is None  # nothing verified to follow
        agent.publish(learned)
        assert agent.flush(timeout_s=30)
        counters = agent.counters()
        assert (counters["spooled"], counters["published"], counters["spool_size"]) == (3, 3, 0)

    arrived = _read_learnings(kafka, 3)
    assert sorted(str(lr.id) for lr in arrived) == sorted(str(lr.id) for lr in learned)
    assert all(verify(lr, bytes.fromhex("00ff" * 16)) for lr in arrived)


def test_the_documented_example_runs() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "examples" / "sdk_agent.py")],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
    assert "running core v1" in result.stderr
