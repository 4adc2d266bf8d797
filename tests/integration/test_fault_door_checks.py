"""One ``hive serve`` with rounds checked often, fed what used to stop it or slip past it: it refuses each at the
door with its reason, stays up, and goes on storing good learnings, across a key file's deletion and a restart."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hive.ingest.admit import UNKNOWN_SKILL
from hive.ingest.auth import REVOKED, UNSIGNED
from hive.store.interface import StoreError
from hive.store.parquet import ParquetLearningStore
from streams import codec, topics
from streams.codec import encode
from streams.config import KafkaSettings
from streams.kafka import create_topics, make_producer
from streams.signing import signed

from factories import make_learning

DEADLINE_S = 120.0
FAST_GROUP = {"HIVE_KAFKA_SESSION_TIMEOUT_MS": "3000", "HIVE_KAFKA_HEARTBEAT_INTERVAL_MS": "1000"}
# Every trigger that reads a time or the fleet is on, and none can fire: the round check runs every 0.3 s and
# reads the zone-less times (which raised TypeError in it), but never starts a DeepSpeed round.
ROUND_ARGS = (
    "--round-check-s",
    "0.3",
    "--min-new",
    "0",
    "--every",
    "10h",
    "--max-staleness",
    "10h",
    "--min-per-agent",
    "100000",
)
CHECKS_TO_SURVIVE_S = 1.2


def zone_less(agent: str) -> bytes:
    data = json.loads(encode(make_learning(agent)))
    return json.dumps(data | {"created_at": "2026-11-22T12:00:00"}).encode()


def state(store_dir: Path) -> tuple[int, list[tuple[str, str | None]]]:
    """Learnings stored, and (reason, agent id) of every dead letter, oldest first."""
    try:
        with ParquetLearningStore(store_dir, read_only=True) as store:
            letters = sorted(store.dead_letters(), key=lambda d: (d.source_partition, d.source_offset))
            return store.count(), [(d.reason, d.agent_id) for d in letters]
    except StoreError:
        return 0, []  # not created yet


def test_poison_is_refused_at_the_door_and_the_service_stays_up(
    fresh_broker: str, tmp_path: Path, hive_serve: Callable[..., Any], agent_keys: Any
) -> None:
    kafka = KafkaSettings(bootstrap=fresh_broker)
    create_topics(kafka)
    home = tmp_path / "hive"
    store_dir = home / "store"
    for agent in ("agent-0", "agent-del", "agent-revoked"):
        agent_keys.key(agent)
    env = FAST_GROUP | {"HIVE_INGEST__REVOKED_AGENTS": json.dumps(["agent-revoked"])}
    serve = hive_serve(fresh_broker, home, env, args=ROUND_ARGS)
    producer = make_producer(kafka)

    def send(*messages: tuple[str, bytes, bytes]) -> None:
        for topic, key, value in messages:
            producer.send(topic, key=key, value=value, partition=0 if topic == topics.FLEET else None)
        producer.flush(timeout=30)

    def wait_for(what: str, stored: int, letters: int) -> list[tuple[str, str | None]]:
        started = time.monotonic()
        while True:
            count, dead = state(store_dir)
            if (count, len(dead)) == (stored, letters):
                return dead
            assert serve.alive, f"hive serve exited while waiting for {what}:\n{serve.log_tail()}"
            assert time.monotonic() - started < DEADLINE_S, f"timed out waiting for {what}: {count}, {dead}"
            time.sleep(0.2)

    def survives_round_checks() -> None:
        time.sleep(CHECKS_TO_SURVIVE_S)  # several round checks, each reading the fleet and the backlog
        assert serve.alive, f"hive serve exited:\n{serve.log_tail()}"

    old_key = agent_keys.key("agent-del")
    try:
        serve.start()
        zone_less_beat = {"agent_id": "agent-0", "skill": "add", "core_version": 0, "sent_at": "2026-11-22T12:00:00"}
        send(
            (topics.FLEET, b"agent-0", json.dumps(zone_less_beat).encode()),
            # From an agent without a key: accepted unsigned before signatures were required, then stored.
            (topics.LEARNINGS, b"agent-nokey", zone_less("agent-nokey")),
            (topics.LEARNINGS, b"agent-0", encode(agent_keys.sign(make_learning("agent-0", "no-such-skill")))),
            (topics.LEARNINGS, b"agent-nokey", encode(make_learning("agent-nokey"))),
            (topics.LEARNINGS, b"agent-revoked", encode(agent_keys.sign(make_learning("agent-revoked")))),
            (topics.LEARNINGS, b"agent-del", encode(agent_keys.sign(make_learning("agent-del")))),
            (topics.LEARNINGS, b"agent-0", encode(agent_keys.sign(make_learning("agent-0")))),
        )
        dead = wait_for("the first messages", stored=2, letters=4)
        assert Counter(dead) == Counter(
            [
                (codec.TIMESTAMP, None),
                (UNKNOWN_SKILL, "agent-0"),
                (UNSIGNED, "agent-nokey"),
                (REVOKED, "agent-revoked"),
            ]
        )
        survives_round_checks()
        assert "ignoring an invalid heartbeat" in serve.log_tail(100_000)

        # Deleting an agent's key file revokes it at once: no restart, and no falling back to "unsigned is fine".
        agent_keys.path("agent-del").unlink()
        send(
            (topics.LEARNINGS, b"agent-del", encode(signed(make_learning("agent-del"), old_key))),
            (topics.LEARNINGS, b"agent-0", encode(agent_keys.sign(make_learning("agent-0")))),
        )
        dead = wait_for("the learning after the key file was deleted", stored=3, letters=5)
        assert dead.count((UNSIGNED, "agent-del")) == 1

        # And still after a restart.
        assert serve.terminate() == 0, serve.log_tail()
        serve.start()
        send(
            (topics.LEARNINGS, b"agent-del", encode(signed(make_learning("agent-del"), old_key))),
            (topics.LEARNINGS, b"agent-0", encode(agent_keys.sign(make_learning("agent-0")))),
        )
        dead = wait_for("the learning after the restart", stored=4, letters=6)
        assert dead.count((UNSIGNED, "agent-del")) == 2
        survives_round_checks()
        assert serve.terminate() == 0, serve.log_tail()
    finally:
        producer.close(timeout=5)
