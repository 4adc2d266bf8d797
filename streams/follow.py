"""A background reader of a one-partition topic, from its beginning, with no consumer group."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from kafka import KafkaConsumer, TopicPartition
from kafka import errors as kafka_errors

from streams.config import KafkaSettings
from streams.kafka import make_consumer

log = logging.getLogger(__name__)

FIRST_RETRY_S = 0.5
RETRY_BACKOFF_MAX_S = 10.0
# How long one attempt waits for a broker before it counts as failed: kafka-python's own default (30 s) would
# keep a stopping follower, and its retry count, waiting.
BOOTSTRAP_TIMEOUT_MS = 5000
POSITION_TIMEOUT_MS = 2000


class TopicFollower:
    """Hands every record value of ``topic`` partition 0 to ``on_value``, oldest first.

    No consumer group: every process that follows the topic sees all of it, which is what a
    release or fleet topic needs. ``on_value`` runs on the follower's thread and must not raise
    on bad input; it decides what to do with a record it cannot read.

    The follower outlives the broker: when the broker cannot be reached, at start or later, it tries again
    with backoff (up to ``retry_backoff_max_s``), for as long as it runs; ``last_error`` and ``retries`` say
    what went wrong. When the topic starts over (a broker that lost its data: offsets go backwards, or the
    cluster id changes) it calls ``on_reset`` and reads the topic again from its beginning. ``error`` is set
    only when something other than the broker stopped the thread: a fault in ``on_value``.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        on_value: Callable[[bytes], None],
        on_reset: Callable[[], None] | None = None,
        retry_backoff_max_s: float = RETRY_BACKOFF_MAX_S,
    ) -> None:
        self._kafka = kafka
        self._topic = topic
        self._on_value = on_value
        self._on_reset = on_reset
        self._retry_backoff_max_s = retry_backoff_max_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"follow-{topic}", daemon=True)
        self.error: BaseException | None = None
        self.last_error: BaseException | None = None
        self.retries = 0
        self.resets = 0
        # When (time.time()) the reading last stood at the end of the partition, as a fetch reported it; None
        # until it did in this reading.
        self.caught_up_at: float | None = None
        # Where the reading stands: the offset expected next, and the cluster it came from.
        self._next_offset = 0
        self._cluster_id: str | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        wait_s = FIRST_RETRY_S
        while not self._stop.is_set():
            try:
                self._follow()
            except (kafka_errors.KafkaError, OSError) as err:
                self.last_error = err
                self.retries += 1
                log.warning("following %s: %s; trying again in %.1f s", self._topic, err, wait_s)
                self._stop.wait(wait_s)
                wait_s = min(wait_s * 2, self._retry_backoff_max_s)
                continue
            except BaseException as err:
                # Kept for the owner to report: a thread's exception would otherwise vanish.
                self.error = err
                raise
            return

    def _follow(self) -> None:
        # A follower never creates its topic: a metadata request for a missing topic would, with broker defaults.
        consumer = make_consumer(
            self._kafka,
            topics=None,
            group_id=None,
            bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
            allow_auto_create_topics=False,
        )
        try:
            partition = TopicPartition(self._topic, 0)
            # Metadata first, so that the cluster id is known before anything is read from this cluster.
            consumer.partitions_for_topic(self._topic)
            consumer.assign([partition])
            # A reconnect goes on from where the reading stood; a new cluster starts it over.
            self._check_cluster(consumer)
            consumer.seek(partition, self._next_offset)
            while not self._stop.is_set():
                batch = consumer.poll(timeout_ms=500).get(partition, [])
                if self._check_cluster(consumer):
                    consumer.seek(partition, 0)
                    continue
                # A broker that lost the partition answers "out of range", and the consumer goes back to its
                # earliest offset: with records or none, the reading went backwards.
                position = batch[0].offset if batch else consumer.position(partition, timeout_ms=POSITION_TIMEOUT_MS)
                if position is not None and position < self._next_offset:
                    self._reset(f"offset {position} came after {self._next_offset - 1}")
                    consumer.seek(partition, 0)
                    continue
                for record in batch:
                    self._on_value(record.value)
                    self._next_offset = record.offset + 1
                if not batch:
                    # Caught up only as of a fetch answered by the broker: an empty poll while it is away is not.
                    highwater = consumer.highwater(partition)
                    if highwater is not None and self._next_offset >= highwater:
                        self.caught_up_at = time.time()
        finally:
            consumer.close()

    def _check_cluster(self, consumer: KafkaConsumer) -> bool:
        """True (after ``on_reset``) when the consumer's metadata names another cluster than the reading's."""
        # kafka-python keeps the cluster id from the metadata responses only on the client's cluster view;
        # nothing public exposes it. None until the first metadata response, or from a broker too old to say.
        cluster_id = consumer._client.cluster.cluster_id
        if cluster_id is None or cluster_id == self._cluster_id:
            return False
        known, self._cluster_id = self._cluster_id, cluster_id
        if known is None:
            return False
        self._reset(f"the cluster id changed from {known} to {cluster_id}")
        return True

    def _reset(self, why: str) -> None:
        log.warning("%s starts over (%s): reading it again from its beginning", self._topic, why)
        self.resets += 1
        self._next_offset = 0
        self.caught_up_at = None
        if self._on_reset is not None:
            self._on_reset()
