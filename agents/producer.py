"""The Kafka producer an agent publishes with: short bounds, so that an outage shows up as an error, not a stall."""

from __future__ import annotations

from typing import Any, Protocol

from kafka.errors import KafkaError

from streams.config import KafkaSettings
from streams.kafka import make_producer

# How long the first connection (bootstrap) may take before the broker counts as unreachable.
CONNECT_TIMEOUT_MS = 3000
# How long send() may block on missing metadata. kafka-python's default (60 s) would stall the drain
# while the broker is down; the spool is the place to wait, not send().
MAX_BLOCK_MS = 2000
# Errors that mean "not now": the broker is down, restarting, or forgot our producer id (a fresh embedded
# broker answers UnknownProducerId, then the old producer is wedged for good). Records stay in the spool.
RETRYABLE = (KafkaError, OSError)


class Producer(Protocol):
    """The part of ``kafka.KafkaProducer`` the publisher uses; tests pass a small fake."""

    def send(
        self, topic: str, value: bytes | None = None, key: bytes | None = None, partition: int | None = None
    ) -> Any: ...
    def flush(self, timeout: float | None = None) -> None: ...
    def close(self, timeout: float | None = None) -> None: ...


def agent_producer(kafka: KafkaSettings, send_timeout_s: float) -> Producer:
    """The project's safe producer (acks=all, idempotence on, retries) with the timeouts an agent needs.

    Each bound is short so that a broker outage shows up as an error within ``send_timeout_s``,
    and the records wait in the spool rather than inside the client.
    """
    delivery_ms = max(int(send_timeout_s * 1000), 1000)
    return make_producer(  # type: ignore[no-any-return]
        kafka,
        delivery_timeout_ms=delivery_ms,
        # kafka-python refuses a delivery timeout below linger_ms + request_timeout_ms.
        request_timeout_ms=min(kafka.request_timeout_ms, delivery_ms - 100),
        max_block_ms=MAX_BLOCK_MS,
        bootstrap_timeout_ms=CONNECT_TIMEOUT_MS,
        # After an outage, reconnect within a second of the broker's return, not kafka-python's 30 s.
        reconnect_backoff_max_ms=1000,
    )
