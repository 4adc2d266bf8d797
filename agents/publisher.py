"""Publishes learnings through the spool: spooled first, sent oldest first, removed only once the broker acks."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from kafka.errors import KafkaError

from agents.producer import CONNECT_TIMEOUT_MS, RETRYABLE, Producer
from agents.spool import Spool, SpoolFull
from streams import topics
from streams.codec import encode
from streams.events import Learning
from streams.signing import signed

log = logging.getLogger(__name__)

# Records sent per round trip of the drain: enough to keep the broker busy, few enough to ack promptly.
DRAIN_BATCH = 500
BACKOFF_MIN_S = 0.2

COUNTERS = ("spooled", "published", "send_errors", "spool_full_waits", "heartbeats_sent", "heartbeat_errors")


class PublisherClosed(RuntimeError):
    """``publish`` after ``close``, or after the drain thread died (the cause is chained)."""


class Publisher:
    """Moves learnings from the agent to ``hive.learnings`` without losing one.

    ``publish`` signs (when a key is set), encodes and spools, then returns: the learning loop never
    waits on the network. A background thread sends the spool oldest first, checks every send
    result, and acks to the spool only what the broker acknowledged. While the broker is unreachable
    it retries with backoff and the spool grows; at the spool's bound ``publish`` blocks (backpressure,
    counted in ``spool_full_waits``). Any send error discards the producer and makes a fresh one,
    since an idempotent producer can be wedged for good by a broker that forgot its id.

    Heartbeats are best effort: only the newest waits, it is never spooled, and one that failed or was
    replaced before it could be sent counts in ``heartbeat_errors``. ``send_errors`` counts failed
    attempts to reach the broker or to get a batch acked.
    """

    def __init__(
        self,
        spool: Spool,
        producer_factory: Callable[[], Producer],
        agent_id: str,
        *,
        max_message_bytes: int,
        signing_key: bytes | None = None,
        send_timeout_s: float = 10.0,
        retry_backoff_max_s: float = 5.0,
    ) -> None:
        self.spool = spool
        self._factory = producer_factory
        self._key = agent_id.encode()
        self._max_bytes = max_message_bytes
        self._signing_key = signing_key
        self._send_timeout_s = send_timeout_s
        self._backoff_max_s = retry_backoff_max_s
        self._counters = dict.fromkeys(COUNTERS, 0)
        self._counter_lock = threading.Lock()
        self._beat: bytes | None = None
        self._beat_lock = threading.Lock()
        self._producer: Producer | None = None
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._drain_deadline = float("inf")
        self._unreachable_since: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"publisher-{agent_id}", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def counters(self) -> dict[str, int]:
        """This process's counts, plus the spool's current size (``spool_size``)."""
        with self._counter_lock:
            counts = dict(self._counters)
        counts["spool_size"] = len(self.spool)
        return counts

    def publish(self, learnings: Sequence[Learning], stop: threading.Event | None = None) -> None:
        """Signs, encodes and spools the learnings in order; they are durable when this returns.

        Blocks while the spool is full (with a warning, counted in ``spool_full_waits``). If ``stop``
        is set while it waits, the agent is shutting down: the rest is spooled past the bound rather
        than dropped. Raises ``ValueError`` for a learning larger than the message limit, before any
        of them is spooled, and ``PublisherClosed`` after ``close``.
        """
        records = [self._record(learning) for learning in learnings]
        waited = False
        while records:
            self._check_alive()
            room = self.spool.room()
            if room <= 0:
                if stop is not None and stop.is_set():
                    self._spool_past_bound(records)
                    return
                if not waited:
                    waited = True
                    self._count("spool_full_waits")
                    log.warning(
                        "spool %s is full (%d learnings): the broker has not acked them, so the agent waits "
                        "until it does (backpressure; nothing is dropped)",
                        self.spool.path,
                        self.spool.max_entries,
                    )
                self._wake.set()
                self.spool.wait_for_room(1, timeout_s=0.5)
                continue
            chunk, records = records[:room], records[room:]
            try:
                added = self.spool.append(chunk)
            except SpoolFull:
                records = chunk + records  # another thread took the room; wait for it again
                continue
            self._count("spooled", added)
            self._wake.set()
        if waited:
            log.info("spool %s has room again; the agent goes on", self.spool.path)

    def beat(self, value: bytes) -> None:
        """Queues a heartbeat; only the newest one waits. Best effort: never spooled, never blocks."""
        with self._beat_lock:
            missed, self._beat = self._beat is not None, value
        if missed:
            self._count("heartbeat_errors")  # the previous one never left: the broker was unreachable
        self._wake.set()

    def flush(self, timeout_s: float) -> bool:
        """Waits until the spool is empty (every learning acked); False if ``timeout_s`` passed first."""
        deadline = time.monotonic() + timeout_s
        self._wake.set()
        while len(self.spool) > 0:
            self._check_alive()
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def close(self, drain_timeout_s: float = 10.0) -> int:
        """Keeps sending for up to ``drain_timeout_s``, sends the last heartbeat, closes the producer.

        Returns how many learnings are left in the spool; they are sent when the agent starts again.
        The spool itself stays open: its owner closes it.
        """
        if not self._thread.is_alive():
            return len(self.spool)
        self._drain_deadline = time.monotonic() + drain_timeout_s
        self._closing.set()
        self._wake.set()
        self._thread.join(timeout=drain_timeout_s + self._send_timeout_s + CONNECT_TIMEOUT_MS / 1000 + 5)
        left = len(self.spool)
        if left:
            log.warning(
                "%d learnings stay in the spool %s; they are sent when the agent starts again", left, self.spool.path
            )
        return left

    def _record(self, learning: Learning) -> tuple[str, bytes, bytes]:
        if self._signing_key is not None:
            learning = signed(learning, self._signing_key)
        value = encode(learning)
        if len(value) > self._max_bytes:
            raise ValueError(
                f"learning {learning.id} is {len(value)} bytes encoded, over the {self._max_bytes}-byte message limit"
            )
        return str(learning.id), self._key, value

    def _spool_past_bound(self, records: list[tuple[str, bytes, bytes]]) -> None:
        # Shutting down while full: exceeding the bound by one batch is better than losing it.
        log.warning("shutting down with a full spool: %d learnings are spooled past its bound", len(records))
        self._count("spooled", self.spool.append(records, past_bound=True))

    def _check_alive(self) -> None:
        if self.error is not None:
            raise PublisherClosed("the publisher's drain thread died") from self.error
        if self._closing.is_set():
            raise PublisherClosed("the publisher is closed")

    def _count(self, name: str, n: int = 1) -> None:
        with self._counter_lock:
            self._counters[name] += n

    # --- the drain thread -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._drain_loop()
        except BaseException as err:
            # Kept for publish() to raise: a dead drain thread must not look like a slow broker.
            self.error = err
            log.exception("the publisher's drain thread died")
            raise
        finally:
            # The last heartbeat (an agent says it is stopping) goes out whenever the broker is there.
            if self._producer is not None:
                self._send_beat(self._producer)
            self._drop_producer(timeout_s=2.0, flush=True)

    def _drain_loop(self) -> None:
        backoff = 0.0
        while True:
            self._wake.clear()
            if self._closing.is_set() and (
                time.monotonic() >= self._drain_deadline or (len(self.spool) == 0 and not self._has_beat())
            ):
                return
            try:
                producer = self._connect()
                self._send_beat(producer)
                sent = self._send_batch(producer)
            except RETRYABLE as err:
                self._count("send_errors")
                self._on_unreachable(err)
                self._drop_producer(timeout_s=0.0)
                backoff = min(self._backoff_max_s, max(BACKOFF_MIN_S, backoff * 2))
                # Not woken by publish: only time (or shutdown's deadline) ends a backoff.
                time.sleep(min(backoff, max(0.0, self._drain_deadline - time.monotonic())))
                continue
            backoff = 0.0
            if self._unreachable_since is not None:
                log.info(
                    "broker reachable again after %.1f s: %d spooled learnings acked, %d still to send",
                    time.monotonic() - self._unreachable_since,
                    sent,
                    len(self.spool),
                )
                self._unreachable_since = None
            if not sent:
                self._wake.wait(0.5)

    def _connect(self) -> Producer:
        if self._producer is None:
            self._producer = self._factory()
        return self._producer

    def _has_beat(self) -> bool:
        with self._beat_lock:
            return self._beat is not None

    def _send_beat(self, producer: Producer) -> None:
        with self._beat_lock:
            value, self._beat = self._beat, None
        if value is None:
            return
        try:
            # Partition 0 always: the hive's fleet readers follow partition 0 only, and a topic that an
            # agent's first request auto-created may have the broker's default partition count, not 1.
            future = producer.send(topics.FLEET, key=self._key, value=value, partition=0)
        except RETRYABLE as err:
            self._count("heartbeat_errors")
            log.debug("heartbeat not sent: %r", err)
            return
        future.add_callback(lambda _meta: self._count("heartbeats_sent"))
        future.add_errback(lambda _err: self._count("heartbeat_errors"))

    def _send_batch(self, producer: Producer) -> int:
        """Sends the oldest spooled records and acks what the broker acknowledged; raises on any failure.

        Every future is waited on, even after a failure, so that a record the broker did take is not
        sent again needlessly (a resend would only be deduplicated by the hive).
        """
        entries = self.spool.peek(DRAIN_BATCH)
        if not entries:
            return 0
        futures = []
        failure: BaseException | None = None
        for entry in entries:
            try:
                futures.append((entry, producer.send(topics.LEARNINGS, key=entry.key, value=entry.value)))
            except RETRYABLE as err:
                failure = err
                break
        deadline = time.monotonic() + self._send_timeout_s + 1.0
        acked: list[int] = []
        for entry, future in futures:
            try:
                metadata = future.get(timeout=max(0.0, deadline - time.monotonic()))
            except RETRYABLE as err:
                failure = failure or err
                continue
            if metadata is None or metadata.offset < 0:
                failure = failure or KafkaError(f"send returned no offset: {metadata!r}")
                continue
            acked.append(entry.seq)
        self.spool.ack(acked)
        self._count("published", len(acked))
        if failure is not None:
            raise failure
        return len(acked)

    def _on_unreachable(self, err: BaseException) -> None:
        if self._unreachable_since is None:
            self._unreachable_since = time.monotonic()
            log.warning(
                "cannot publish (%s: %s); %d learnings wait in the spool, retrying with backoff up to %.0f s",
                type(err).__name__,
                err,
                len(self.spool),
                self._backoff_max_s,
            )
        else:
            log.debug("still cannot publish: %r", err)

    def _drop_producer(self, timeout_s: float, flush: bool = False) -> None:
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            if flush:
                producer.flush(timeout=timeout_s)
            producer.close(timeout=timeout_s)
        except RETRYABLE as err:
            # Closing a producer whose broker is gone can fail; it is discarded either way.
            log.debug("closing the producer: %r", err)
