"""``hive serve`` fed every kind of bad message among good ones: the good are stored, the bad dead-lettered."""

from __future__ import annotations

import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kafka import TopicPartition

from hive.ingest.admit import UNKNOWN_SKILL
from hive.ingest.auth import REVOKED, SIGNATURE, UNKNOWN_AGENT, UNSIGNED
from hive.store.interface import PAYLOAD_HEAD_BYTES, StoreError
from hive.store.parquet import ParquetLearningStore
from streams import codec, topics
from streams.codec import encode
from streams.config import KafkaSettings
from streams.events import Learning, TeacherSignal
from streams.kafka import create_topics, make_consumer, make_producer
from streams.signing import signed

from factories import make_learning

DEADLINE_S = 60.0
KEY_A = b"alpha-key-given-inline"  # given inline
KEY_B = bytes(range(32))  # given as a file in the key directory
N_PER_AGENT = 30


def learning(rng: random.Random, agent: str, n: int) -> Learning:
    word = "".join(rng.choice("abcdef") for _ in range(4))
    teacher = None
    if n % 2:
        rows = len(word) + 1
        teacher = TeacherSignal(
            k=2, token_ids=[[i, i + 1] for i in range(rows)], logprobs=[[-0.1, -3.0] for _ in range(rows)]
        )
    return make_learning(
        agent, id=uuid.UUID(int=rng.getrandbits(128)), prompt=word, completion=word[::-1], teacher=teacher
    )


def hostile(rng: random.Random, max_bytes: int) -> list[tuple[str, bytes, bytes | None]]:
    """(expected reason, key, value) for each kind of bad message."""
    good = json.loads(encode(learning(rng, "plain-1", 0)))

    def variant(**changes: Any) -> bytes:
        return json.dumps(good | {"id": str(uuid.uuid4())} | changes).encode()

    def teacher(k: int, ids: list, lps: list) -> bytes:
        return variant(teacher={"k": k, "token_ids": ids, "logprobs": lps})

    a = learning(rng, "signer-a", 1)
    b = signed(learning(rng, "signer-b", 2), KEY_B)
    return [
        (codec.UNDECODABLE, b"plain-1", b"\xff\xfe\x00 not text"),
        (codec.UNDECODABLE, b"plain-1", b'{"prompt": "\xc3\x28"}'),
        (codec.UNDECODABLE, b"plain-1", None),  # a tombstone: a record with no value
        (codec.INVALID_JSON, b"plain-1", b'{"agent_id": "plain-1", '),
        (codec.INVALID_JSON, b"plain-1", b""),
        (codec.INVALID_JSON, b"plain-1", b"[" * 200_000),
        (codec.INVALID_JSON, b"plain-1", b'{"core_version": ' + b"7" * 5000 + b"}"),
        (codec.SCHEMA, b"plain-1", variant(agent_id="spaces are not allowed")),
        (codec.SCHEMA, b"plain-1", variant(feedback={})),
        (codec.SCHEMA, b"plain-1", json.dumps([good]).encode()),
        (codec.SCHEMA, b"plain-1", variant(core_version=-1)),
        (codec.UNKNOWN_VERSION, b"plain-1", variant(schema_version="2.0")),
        (codec.UNKNOWN_VERSION, b"plain-1", variant(schema_version="².0")),
        (codec.OVERSIZE, b"plain-1", variant(prompt="x" * (max_bytes + 10))),
        (codec.TEACHER_SIGNAL, b"plain-1", teacher(2, [[1, 2], [3, 4]], [[-0.1, -1.0]])),  # rows differ
        (codec.TEACHER_SIGNAL, b"plain-1", teacher(2, [[1, 2]], [[-0.1, float("nan")]])),
        (codec.TEACHER_SIGNAL, b"plain-1", teacher(0, [[]], [[]])),  # k below range
        (codec.TEACHER_SIGNAL, b"plain-1", teacher(600, [list(range(600))], [[-1.0] * 600])),  # k above range
        (codec.TEACHER_SIGNAL, b"plain-1", teacher(2, [[1, 1]], [[-0.1, -1.0]])),  # a repeated token id
        (codec.TEACHER_SIGNAL, b"plain-1", teacher(2, [[1, 2]], [[0.5, -1.0]])),  # log-probability > 0
        (SIGNATURE, b"signer-a", encode(a)),  # the agent has a key, and did not sign
        (SIGNATURE, b"signer-a", encode(signed(a, b"some other key"))),
        (SIGNATURE, b"signer-b", encode(b.model_copy(update={"completion": "tampered"}))),
        (SIGNATURE, b"signer-b", encode(b.model_copy(update={"signature": "not hex at all"}))),
        (UNKNOWN_AGENT, b"stranger", encode(learning(rng, "stranger", 3))),
        (UNKNOWN_AGENT, b"stranger", encode(signed(learning(rng, "stranger", 4), KEY_A))),
        # plain-1 has no key, and signatures are required by default.
        (UNSIGNED, b"plain-1", encode(learning(rng, "plain-1", 5))),
        (UNSIGNED, b"plain-1", encode(signed(learning(rng, "plain-1", 6), KEY_A))),
        (REVOKED, b"revoked-1", encode(signed(learning(rng, "revoked-1", 7), KEY_B))),
        (
            UNKNOWN_SKILL,
            b"signer-b",
            encode(signed(learning(rng, "signer-b", 8).model_copy(update={"skill": "x"}), KEY_B)),
        ),
        (codec.TIMESTAMP, b"plain-1", variant(created_at="2026-11-22T12:00:00")),
        (codec.TIMESTAMP, b"plain-1", variant(created_at="9999-12-31T23:59:59-01:00")),
    ]


def wait_for(what: str, check: Callable[[], bool], serve: Any) -> None:
    started = time.monotonic()
    while not check():
        assert serve.alive, f"hive serve exited while waiting for {what}:\n{serve.log_tail()}"
        assert time.monotonic() - started < DEADLINE_S, f"timed out waiting for {what}:\n{serve.log_tail()}"
        time.sleep(0.2)


def read_dlq(kafka: KafkaSettings, expected: int) -> list:
    consumer = make_consumer(kafka, None, None)
    tp = TopicPartition(topics.LEARNINGS_DLQ, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    records: list = []
    started = time.monotonic()
    try:
        while len(records) < expected and time.monotonic() - started < 30:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
    finally:
        consumer.close(autocommit=False)
    return records


def test_hostile_input_is_dead_lettered_and_the_service_survives(
    fresh_broker: str, tmp_path: Path, hive_serve: Callable[..., Any]
) -> None:
    rng = random.Random(11)
    kafka = KafkaSettings(bootstrap=fresh_broker)
    create_topics(kafka)
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "signer-b.key").write_text(KEY_B.hex() + "\n")
    (keys / "revoked-1.key").write_text(KEY_B.hex() + "\n")
    env = {
        "HIVE_INGEST__AGENT_KEYS": json.dumps({"signer-a": "utf8:" + KEY_A.decode()}),
        "HIVE_INGEST__AGENT_KEY_DIR": str(keys),
        "HIVE_INGEST__ALLOWED_AGENTS": json.dumps(["signer-a", "signer-b", "plain-1", "revoked-1"]),
        "HIVE_INGEST__REVOKED_AGENTS": json.dumps(["revoked-1"]),
    }
    home = tmp_path / "hive"
    serve = hive_serve(fresh_broker, home, env)
    serve.start()

    valid = [signed(learning(rng, "signer-a", i), KEY_A) for i in range(N_PER_AGENT)] + [
        signed(learning(rng, "signer-b", i), KEY_B) for i in range(N_PER_AGENT)
    ]
    bad = hostile(rng, kafka.max_message_bytes)
    messages: list[tuple[str | None, bytes, bytes | None]] = [(None, x.agent_id.encode(), encode(x)) for x in valid]
    messages += bad
    rng.shuffle(messages)
    # Room for the oversize record: the broker enforces no size limit (Tansu 0.6); the hive does.
    producer = make_producer(kafka, max_request_size=4 * kafka.max_message_bytes)
    try:
        futures = [(reason, producer.send(topics.LEARNINGS, key=key, value=value)) for reason, key, value in messages]
        producer.flush(timeout=60)
        expected = {}
        for reason, future in futures:
            meta = future.get(timeout=30)
            if reason is not None:
                expected[(meta.partition, meta.offset)] = reason
    finally:
        producer.close()

    store_dir = home / "store"

    def counts() -> tuple[int, int]:
        try:
            with ParquetLearningStore(store_dir, read_only=True) as store:
                return store.count(), sum(store.dead_letter_counts().values())
        except StoreError:
            return 0, 0

    wait_for("every record to be handled", lambda: counts() == (len(valid), len(bad)), serve)
    assert serve.alive, serve.log_tail()

    with ParquetLearningStore(store_dir, read_only=True) as store:
        assert {str(x.id) for x in store.read()} == {str(x.id) for x in valid}
        assert store.unique_ids() == len(valid)
        letters = store.dead_letters()
    local = {(d.source_partition, d.source_offset): d for d in letters}
    assert {k: d.reason for k, d in local.items()} == expected
    assert all(d.source_topic == topics.LEARNINGS and d.detail for d in letters)
    (oversize,) = [d for d in letters if d.reason == codec.OVERSIZE]
    assert oversize.size > kafka.max_message_bytes and len(oversize.payload_head) == PAYLOAD_HEAD_BYTES
    assert {d.agent_id for d in letters if d.reason in (SIGNATURE, UNKNOWN_AGENT, UNSIGNED, REVOKED)} == {
        "signer-a",
        "signer-b",
        "stranger",
        "plain-1",
        "revoked-1",
    }

    dead = read_dlq(kafka, len(bad))
    on_topic = {
        (int(h["source_partition"]), int(h["source_offset"])): h["reason"].decode()
        for h in (dict(r.headers) for r in dead)
    }
    assert len(dead) == len(bad)
    assert on_topic == expected
    assert Counter(expected.values()) == Counter(reason for reason, _, _ in bad)

    # Still serving after all that: a clean stop, and nothing accepted unsigned.
    assert serve.alive
    assert serve.terminate() == 0, serve.log_tail()
    assert f"{len(valid)} stored, 0 duplicates, {len(bad)} dead-lettered, 0 unsigned" in serve.log_tail()
