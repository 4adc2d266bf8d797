"""An agent against the real broker: it learns and publishes, refuses a tampered core, swaps to a good one."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kafka import TopicPartition

from agents.config import AgentSettings
from agents.model import build_core, save_core
from agents.runtime import AgentRuntime
from hive.fleet import FleetTracker
from hive.ingest.auth import SenderPolicy
from streams import topics
from streams.codec import decode, encode
from streams.config import KafkaSettings
from streams.events import CoreRelease, Heartbeat, Learning
from streams.kafka import DEFAULT_PARTITIONS, create_topics, make_consumer, make_producer, send_and_wait

from factories import ReleaseSigner


def _until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _published(kafka: KafkaSettings, count: int, timeout_s: float = 30) -> list[Learning]:
    """The learnings on ``hive.learnings``, once there are ``count`` of them (fewer after ``timeout_s``)."""
    consumer = make_consumer(kafka, [topics.LEARNINGS], "test-reader")
    learnings: list[Learning] = []
    deadline = time.monotonic() + timeout_s
    while len(learnings) < count and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            learnings.extend(decode(r.value, Learning, kafka.max_message_bytes) for r in records)
    consumer.close()
    return learnings


def _heartbeats(kafka: KafkaSettings, agent_id: str) -> list[Heartbeat]:
    """Every heartbeat ``agent_id`` sent, in order, read from the start of ``hive.fleet``."""
    consumer = make_consumer(kafka, topics=None, group_id=None)  # no group: no join to wait for
    partitions = [TopicPartition(topics.FLEET, p) for p in sorted(consumer.partitions_for_topic(topics.FLEET) or ())]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    beats: list[Heartbeat] = []
    idle = 0
    while idle < 3:
        polled = consumer.poll(timeout_ms=1000)
        idle = 0 if polled else idle + 1
        for records in polled.values():
            beats.extend(decode(r.value, Heartbeat, kafka.max_message_bytes) for r in records)
    consumer.close()
    return sorted((b for b in beats if b.agent_id == agent_id), key=lambda b: b.sent_at)


def _changes(states: list[tuple[int | None, str, str]]) -> list[tuple[int | None, str, str]]:
    """``states`` without consecutive repeats."""
    return [state for i, state in enumerate(states) if i == 0 or states[i - 1] != state]


def _release(producer, hive: ReleaseSigner, version: int, directory: Path, sha256: str) -> CoreRelease:
    release = hive.sign(CoreRelease(version=version, model_uri=directory.resolve().as_uri(), sha256=sha256))
    send_and_wait(producer, topics.CORE, b"core", encode(release))
    return release


def test_agent_learns_publishes_and_swaps_only_verified_cores(
    fresh_broker: str, tmp_path: Path, agent_keys: Any
) -> None:
    kafka = KafkaSettings(bootstrap=fresh_broker)
    create_topics(kafka, DEFAULT_PARTITIONS)
    producer = make_producer(kafka)
    hive = ReleaseSigner()
    v0 = tmp_path / "cores" / "v0"
    first = _release(producer, hive, 0, v0, save_core(build_core(seed=0), v0))

    settings = AgentSettings(
        agent_id="agent-t",
        skill="add",
        eval_skills=["add", "capital"],
        home=tmp_path / "agents",
        learn_steps=3,
        relearn_steps=0,  # serves after a swap: the swaps below are the subject (rebasing has its own test)
        batch_size=4,
        publish_per_step=2,
        eval_tasks=5,
        heartbeat_s=0.5,
        signing_key_file=agent_keys.agent_env("agent-t")["HIVE_AGENT_SIGNING_KEY_FILE"],
        hive_public_key=hive.public_key,
    )
    runtime = AgentRuntime(settings, kafka)
    stop = threading.Event()
    thread = threading.Thread(target=runtime.run, args=(stop,), daemon=True)
    # The hive's own view: a heartbeat counts only once its signature verifies.
    fleet = FleetTracker(kafka, SenderPolicy.from_settings(agent_keys.ingest()), max_skew_s=300)
    fleet.start()
    thread.start()
    try:
        _until(lambda: ("agent-t", 0) in fleet.snapshot().evaluations, 60, "the agent to finish learning on v0")
        beat = fleet.snapshot().latest["agent-t"]
        assert beat.state == "serving"
        assert beat.counters["learn_steps"] == 3
        assert beat.counters["published"] == 6
        assert set(fleet.snapshot().evaluations[("agent-t", 0)]) == {"add", "capital"}
        assert runtime.adapter is not None  # the specialist is saved as a claim check
        adapter = runtime.adapter

        # A release whose weights do not match its sha256 is refused; the agent keeps serving v0.
        v1 = tmp_path / "cores" / "v1"
        save_core(build_core(seed=1), v1)
        _release(producer, hive, 1, v1, "0" * 64)
        _until(lambda: runtime.counters["cores_refused"] == 1, 30, "the tampered core to be refused")
        assert runtime.specialist is not None and runtime.specialist.core_version == 0

        v2 = tmp_path / "cores" / "v2"
        _release(producer, hive, 2, v2, save_core(build_core(seed=2), v2))
        _until(lambda: ("agent-t", 2) in fleet.snapshot().evaluations, 30, "the agent to swap to v2")
        assert fleet.snapshot().latest["agent-t"].core_version == 2

        # Whoever can write to hive.core without the hive's key: each release is refused, counted in heartbeats.
        v3 = tmp_path / "cores" / "v3"
        sha3 = save_core(build_core(seed=3), v3)
        attacker = ReleaseSigner()
        attacker.sequence = hive.sequence
        genuine = CoreRelease(version=3, model_uri=v3.resolve().as_uri(), sha256=sha3)
        hostile = [
            attacker.sign(genuine),  # forged: another key
            hive.sign(genuine).model_copy(update={"model_uri": v1.resolve().as_uri(), "sha256": "0" * 64}),  # tampered
            first,  # replayed: the v0 release again
            genuine.model_copy(update={"sequence": hive.sequence + 1}),  # unsigned
        ]
        for release in hostile:
            send_and_wait(producer, topics.CORE, b"core", encode(release))
        refused = {"releases_bad_signature": 2, "releases_replayed": 1, "releases_unsigned": 1}
        _until(
            lambda: all(fleet.snapshot().latest["agent-t"].counters.get(k) == n for k, n in refused.items()),
            30,
            "heartbeats to count the hostile releases",
        )
        assert fleet.snapshot().latest["agent-t"].core_version == 2
        _release(producer, hive, 3, v3, sha3)  # the hive's next release still goes through
        _until(lambda: ("agent-t", 3) in fleet.snapshot().evaluations, 30, "the agent to swap to v3")
    finally:
        stop.set()
        thread.join(timeout=30)
        fleet.stop()
        producer.close()
    assert not thread.is_alive()

    learnings = _published(kafka, 6)
    assert len(learnings) == 6
    assert len({lr.id for lr in learnings}) == 6
    for learning in learnings:
        assert learning.agent_id == "agent-t" and learning.skill == "add" and learning.core_version == 0
        assert learning.teacher is not None and learning.teacher.k == 16
        assert len(learning.teacher.token_ids) == len(learning.learned_answer().encode()) + 1
    # The last step's learnings name the finished specialist, so the hive can load what the agent learned.
    assert [lr.adapter for lr in learnings] == [None] * 4 + [adapter] * 2


def test_after_a_swap_the_agent_reports_the_new_core_then_learns_on_it_again_on_new_material(
    fresh_broker: str, tmp_path: Path, agent_keys: Any
) -> None:
    kafka = KafkaSettings(bootstrap=fresh_broker)
    create_topics(kafka, DEFAULT_PARTITIONS)
    producer = make_producer(kafka)
    hive = ReleaseSigner()
    v0, v1 = tmp_path / "cores" / "v0", tmp_path / "cores" / "v1"
    _release(producer, hive, 0, v0, save_core(build_core(seed=0), v0))
    settings = AgentSettings(
        agent_id="agent-r",
        skill="add",
        later_skills=["capital"],
        eval_skills=["add", "capital"],
        home=tmp_path / "agents",
        learn_steps=3,
        relearn_steps=2,
        batch_size=4,
        publish_per_step=2,
        eval_tasks=5,
        heartbeat_s=0.5,
        signing_key_file=agent_keys.agent_env("agent-r")["HIVE_AGENT_SIGNING_KEY_FILE"],
        hive_public_key=hive.public_key,
    )
    runtime = AgentRuntime(settings, kafka)
    stop = threading.Event()
    thread = threading.Thread(target=runtime.run, args=(stop,), daemon=True)
    fleet = FleetTracker(kafka, SenderPolicy.from_settings(agent_keys.ingest()), max_skew_s=300)
    fleet.start()
    thread.start()
    try:
        _until(lambda: ("agent-r", 0) in fleet.snapshot().evaluations, 60, "the agent to finish learning on v0")
        first_adapter = runtime.adapter
        _release(producer, hive, 1, v1, save_core(build_core(seed=1), v1))

        def relearned() -> bool:
            beat = fleet.snapshot().latest["agent-r"]
            return beat.core_version == 1 and beat.state == "serving" and beat.counters["learn_steps"] == 5

        _until(relearned, 60, "the agent to learn 2 more steps on v1")
        beat = fleet.snapshot().latest["agent-r"]
        assert beat.skill == "capital" and beat.counters["core_swaps"] == 1
        assert runtime.adapter is not None and runtime.adapter != first_adapter  # a new specialist, on v1
        assert runtime.specialist is not None and runtime.specialist.core_version == 1
    finally:
        stop.set()
        thread.join(timeout=30)
        fleet.stop()
        producer.close()
    assert not thread.is_alive()

    # Every heartbeat that went out, in order. Heartbeats are best effort (only the newest waits to be sent), so the
    # short-lived states after the swap may be replaced before they leave; the last ones are certain.
    beats = _changes([(b.core_version, b.state, b.skill) for b in _heartbeats(kafka, "agent-r")])
    assert beats[0][0] == 0 and beats[-2:] == [(1, "serving", "capital"), (1, "stopping", "capital")], beats

    learnings = _published(kafka, 10)
    assert sorted((lr.skill, lr.core_version) for lr in learnings) == [("add", 0)] * 6 + [("capital", 1)] * 4
    assert [lr.adapter for lr in learnings if lr.core_version == 1][-2:] == [runtime.adapter] * 2
