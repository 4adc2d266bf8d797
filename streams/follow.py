"""A background reader of a one-partition topic, from its beginning, with no consumer group."""

from __future__ import annotations

import threading
from collections.abc import Callable

from kafka import TopicPartition

from streams.config import KafkaSettings
from streams.kafka import make_consumer


class TopicFollower:
    """Hands every record value of ``topic`` partition 0 to ``on_value``, oldest first.

    No consumer group: every process that follows the topic sees all of it, which is what a
    release or fleet topic needs. ``on_value`` runs on the follower's thread and must not raise
    on bad input; it decides what to do with a record it cannot read.
    """

    def __init__(self, kafka: KafkaSettings, topic: str, on_value: Callable[[bytes], None]) -> None:
        self._kafka = kafka
        self._topic = topic
        self._on_value = on_value
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"follow-{topic}", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        consumer = make_consumer(self._kafka, topics=None, group_id=None)
        try:
            partition = TopicPartition(self._topic, 0)
            consumer.assign([partition])
            consumer.seek_to_beginning(partition)
            while not self._stop.is_set():
                for records in consumer.poll(timeout_ms=500).values():
                    for record in records:
                        self._on_value(record.value)
        except BaseException as err:
            # Kept for the owner to report: a thread's exception would otherwise vanish.
            self.error = err
            raise
        finally:
            consumer.close()
