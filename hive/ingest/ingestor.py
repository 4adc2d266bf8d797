"""Hive ingest: validate each learning, dead-letter the bad ones, store the good ones, then commit offsets."""

from __future__ import annotations

import logging
import sqlite3
import threading
from dataclasses import dataclass, fields
from typing import Any, cast

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka.errors import KafkaError

from agents.skills import load_skill, skill_catalog
from hive.config import HiveSettings
from hive.ingest.admit import DESCRIPTIONS, UNPROCESSABLE, admit, dead_letter_entry
from hive.ingest.auth import Rejection, SenderPolicy
from hive.ingest.history import IngestHistory
from hive.store.interface import DeadLetter, LearningStore, StoreError
from streams import topics
from streams.codec import OVERSIZE
from streams.events import Learning
from streams.kafka import RenewableProducer, make_consumer
from streams.signing import KeyRingError

log = logging.getLogger(__name__)

GROUP_ID = "hive-ingest"
MAX_UNSIGNED_NOTED = 1000
DLQ_HEADROOM_BYTES = 4096
# Failures the run loop survives by backing off and retrying the same records; anything else is a bug.
# A broken key file (KeyRingError) is the operator's to fix: the batch waits for it rather than being
# accepted unverified or dead-lettered for a fault that is not the sender's.
RETRYABLE = (KafkaError, OSError, sqlite3.Error, StoreError, KeyRingError)


@dataclass
class IngestStats:
    """Counts of records: polled from Kafka, stored as new, skipped as duplicates, and dead-lettered.

    ``unsigned`` counts the valid learnings accepted from agents that have no key (repeats included); only
    with ``HIVE_INGEST__REQUIRE_SIGNATURES=false``, since otherwise they are refused.
    """

    polled: int = 0
    stored: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    unsigned: int = 0

    def add(self, other: IngestStats) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


class _Rebalance(ConsumerRebalanceListener):
    # Runs on the consumer's IO loop, which must not block (kafka-python 3 docs), so it only pauses
    # the new partitions; poll_once positions them from the store on the caller's thread.
    def __init__(self, ingestor: Ingestor) -> None:
        self._ingestor = ingestor

    def on_partitions_revoked(self, revoked: Any) -> None:
        with self._ingestor._pending_lock:
            self._ingestor._pending.difference_update(revoked)

    def on_partitions_assigned(self, assigned: Any) -> None:
        if assigned:
            with self._ingestor._pending_lock:
                self._ingestor._consumer.pause(*assigned)
                self._ingestor._pending.update(assigned)


class Ingestor:
    """Moves learnings from ``topic`` (``hive.learnings``) into the store, exactly once in effect.

    ``topic`` and ``group_id`` are for benchmarks and tests that need a topic and group of their own;
    the hive itself uses the defaults.

    Order per batch: dead-letter the invalid records and wait for the broker's acks, append the
    valid ones to the store together with the next offsets and a record of each dead letter, and
    only then commit those offsets to Kafka. A crash anywhere replays the batch; learning ids (and
    dead letters' source offsets) make the replay store nothing twice.

    A record is invalid when it does not decode (``streams.codec``), when its sender is refused
    (``hive.ingest.auth.SenderPolicy``: not allowed, revoked, unsigned, or a bad signature), or when its skill is
    neither a built-in nor one of ``settings.skills`` (``unknown_skill``), or when its prompt is one that evaluation
    holds out (``held_out_prompt``, ``agents.skills.splits``). The skills are loaded once, here:
    loading a plugin imports its code. Raises KeyRingError for bad key settings and SkillLoadError for a
    plugin that does not load.
    """

    def __init__(
        self,
        settings: HiveSettings,
        store: LearningStore,
        producer: KafkaProducer | None = None,
        topic: str = topics.LEARNINGS,
        group_id: str = GROUP_ID,
        history: IngestHistory | None = None,
        **consumer: Any,
    ) -> None:
        self.settings = settings
        self.history = history
        self.store = store
        self.totals = IngestStats()
        self.max_bytes = settings.kafka.max_message_bytes
        self.policy = SenderPolicy.from_settings(settings.ingest)
        self.skills = {name: load_skill(spec) for name, spec in skill_catalog(settings.skills).items()}
        self._unsigned_agents: set[str] = set()
        # Filled by the rebalance listener on the consumer's IO thread, drained on the polling thread.
        self._pending: set[TopicPartition] = set()
        self._pending_lock = threading.Lock()
        self._owns_producer = producer is None
        self._producer = producer if producer is not None else cast("KafkaProducer", RenewableProducer(settings.kafka))
        self.topic = topic
        self._consumer: KafkaConsumer = make_consumer(settings.kafka, None, group_id, **consumer)
        self._consumer.subscribe([topic], listener=_Rebalance(self))
        self._closed = False

    @property
    def ready(self) -> bool:
        """True once the group has assigned partitions and each is positioned (after a poll)."""
        with self._pending_lock:
            return bool(self._consumer.assignment()) and not self._pending

    def assignment(self) -> set[TopicPartition]:
        """The partitions the group gave this ingestor."""
        return set(self._consumer.assignment())

    def poll_once(self, timeout_ms: int = 500) -> IngestStats:
        """Polls one batch and handles it fully (dead letters, store, commit); returns its counts."""
        if self._pending:
            self._position_pending()
        batch = self._consumer.poll(timeout_ms=timeout_ms)
        if self._pending:
            self._position_pending()
        stats = IngestStats()
        records = [r for recs in batch.values() for r in recs]
        if not records:
            return stats
        stats.polled = len(records)
        learnings: list[Learning] = []
        sources: list[Any] = []  # the record each learning came from, in step with ``learnings``
        dead: list[Any] = []
        letters: list[DeadLetter] = []
        next_offsets: dict[tuple[str, int], int] = {}
        first_offsets: dict[TopicPartition, int] = {}
        unsigned = 0
        # Known before any record is handled: a failure half-way must rewind every partition of the batch.
        for rec in records:
            key = (rec.topic, rec.partition)
            next_offsets[key] = max(next_offsets.get(key, 0), rec.offset + 1)
            tp = TopicPartition(rec.topic, rec.partition)
            first_offsets[tp] = min(first_offsets.get(tp, rec.offset), rec.offset)
        try:
            for rec in records:
                learning, rejection = admit(rec.value, self.max_bytes, self.policy, self.skills)
                if rejection is not None:
                    self._refuse(rec, rejection, learning, dead, letters)
                    continue
                assert learning is not None
                learnings.append(learning)
                sources.append(rec)
                if not self.policy.require_signatures and self.policy.is_unsigned(learning.agent_id):
                    unsigned += 1
                    self._note_unsigned(learning.agent_id)
            self._wait_for(dead)
            try:
                stored = self.store.append(learnings, next_offsets, letters)
            except RETRYABLE:
                raise
            except Exception:  # one learning the store cannot take must not stop ingest (issue #9)
                log.exception("storing a batch of %d learnings failed; storing them one at a time", len(learnings))
                stored = self._append_one_by_one(sources, learnings, next_offsets, dead, letters)
            self._commit(next_offsets)
        except RETRYABLE:
            # Rewind so that the next poll replays this batch: nothing in it may be skipped.
            for tp, offset in first_offsets.items():
                if tp in self._consumer.assignment():
                    self._consumer.seek(tp, offset)
            raise
        stats.dead_lettered = len(dead)
        stats.stored = stored
        stats.duplicates = len(learnings) - stored
        stats.unsigned = unsigned
        self.totals.add(stats)
        if self.history is not None:
            created = [learning.created_at for learning in learnings]
            self.history.record(stats.stored, stats.duplicates, stats.dead_lettered, created)
        return stats

    def _wait_for(self, dead: list[Any]) -> None:
        """Waits for the broker's ack of every dead letter sent: none may be lost before the offsets move."""
        try:
            for future in dead:
                future.get(timeout=self.settings.kafka.request_timeout_ms / 1000)
        except KafkaError:
            # kafka-python's idempotent producer never sends again after a broker that lost its state; the batch
            # is retried (RETRYABLE) with a new one.
            if isinstance(self._producer, RenewableProducer):
                self._producer.renew()
            raise

    def _append_one_by_one(
        self,
        sources: list[Any],
        learnings: list[Learning],
        next_offsets: dict[tuple[str, int], int],
        dead: list[Any],
        letters: list[DeadLetter],
    ) -> int:
        """Stores each learning alone; one the store refuses unforeseen is dead-lettered as ``unprocessable``.

        Then the batch's offsets and dead letters are committed. A crash half-way replays the batch, and ids
        (and dead letters' source offsets) keep the replay from storing anything twice.
        """
        stored = 0
        sent = len(dead)
        for rec, learning in zip(sources, learnings, strict=True):
            try:
                stored += self.store.append([learning], {}, ())
            except RETRYABLE:
                raise
            except Exception as err:  # this learning alone; the rest of the batch is stored
                log.exception("the store refused learning %s", learning.id)
                detail = f"the hive could not store this learning: {err!r}"[:1000]
                self._refuse(rec, Rejection(UNPROCESSABLE, detail), learning, dead, letters)
        self._wait_for(dead[sent:])
        self.store.append([], next_offsets, letters)
        return stored

    def _refuse(
        self, rec: Any, rejection: Rejection, learning: Learning | None, dead: list[Any], letters: list[DeadLetter]
    ) -> None:
        log.warning(
            "dead-lettering %s[%d]@%d: %s: %s",
            rec.topic,
            rec.partition,
            rec.offset,
            DESCRIPTIONS[rejection.reason],
            rejection.detail,
        )
        dead.append(self._dead_letter(rec, rejection))
        letters.append(dead_letter_entry(rec, rejection, learning))

    def _note_unsigned(self, agent_id: str) -> None:
        # Once per agent and process: an operator should know who sends unverified learnings, without a
        # log line per record. Bounded, since without an allow-list any sender can make up agent ids.
        if agent_id in self._unsigned_agents or len(self._unsigned_agents) > MAX_UNSIGNED_NOTED:
            return
        self._unsigned_agents.add(agent_id)
        if len(self._unsigned_agents) > MAX_UNSIGNED_NOTED:
            log.warning("more than %d agents send unsigned learnings; no longer naming each", MAX_UNSIGNED_NOTED)
            return
        log.info("accepting unsigned learnings from agent %r: it has no key", agent_id)

    def _commit(self, next_offsets: dict[tuple[str, int], int]) -> None:
        # Only the partitions in this batch: a position on a partition the store has no offset for
        # must not be committed, or a restart could skip past records the store never saw.
        self._consumer.commit(
            {TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in next_offsets.items()}
        )

    def _dead_letter(self, rec: Any, err: Rejection) -> Any:
        value = rec.value
        headers = [
            ("reason", err.reason.encode()),
            ("detail", err.detail.encode("utf-8", errors="replace")),
            ("source_topic", rec.topic.encode()),
            ("source_partition", str(rec.partition).encode()),
            ("source_offset", str(rec.offset).encode()),
        ]
        limit = self.max_bytes - DLQ_HEADROOM_BYTES
        if err.reason == OVERSIZE and value is not None and len(value) > limit:
            # The original cannot pass our own producer's size limit; keep its head and say so. The
            # whole record stays in the source topic (at the offset in the headers) until retention.
            headers.append(("truncated_from", str(len(value)).encode()))
            value = bytes(value[:limit])
        return self._producer.send(topics.LEARNINGS_DLQ, key=rec.key, value=value, headers=headers)

    def _position_pending(self) -> None:
        """Seeks newly assigned partitions past what the store already holds, then resumes them.

        The store's offset wins only when Kafka has a committed offset for the group that is behind
        it (a crash between the store commit and the Kafka commit). With no committed offset at all,
        the broker may be a fresh embedded one whose offsets restarted at 0, so the stored offsets
        would skip new records; reading from the start instead costs only deduplicated replays.
        """
        stored = self.store.offsets()
        with self._pending_lock:
            pending, self._pending = self._pending, set()
        assigned = self._consumer.assignment()
        for tp in pending:
            if tp not in assigned:
                continue
            ours = stored.get((tp.topic, tp.partition))
            committed = self._consumer.committed(tp)
            if ours is not None and committed is not None and committed < ours:
                log.info("seeking %s to %d from the store (Kafka had %d committed)", tp, ours, committed)
                self._consumer.seek(tp, ours)
            self._consumer.resume(tp)

    def run(self, stop: threading.Event, timeout_ms: int = 500, backoff_s: float = 1.0) -> IngestStats:
        """Polls until ``stop`` is set, then closes; survives broker and store hiccups by retrying."""
        try:
            while not stop.is_set():
                try:
                    self.poll_once(timeout_ms)
                except RETRYABLE:
                    log.exception("ingest batch failed; it will be retried in %.1f s", backoff_s)
                    stop.wait(backoff_s)
        finally:
            self.close()
        return self.totals

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.history is not None:
            self.history.flush()
        # Offsets were committed explicitly after each durable batch; never commit on close.
        self._consumer.close(autocommit=False)
        if self._owns_producer:
            self._producer.close()
