"""A renewable producer passes for the one it holds, and is made again in place for every holder."""

from __future__ import annotations

from typing import Any

import pytest

import streams.kafka as kafka_module
from streams.config import KafkaSettings
from streams.kafka import RenewableProducer


class FakeProducer:
    def __init__(self, number: int) -> None:
        self.number = number
        self.sent: list[tuple[str, bytes]] = []
        self.closed_with: float | None = None

    def send(self, topic: str, value: bytes, **_: Any) -> str:
        self.sent.append((topic, value))
        return f"future-{self.number}"

    def close(self, timeout: float | None = None) -> None:
        self.closed_with = timeout


def test_renew_closes_the_failed_producer_without_waiting_and_sends_through_a_new_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[FakeProducer] = []

    def make(settings: KafkaSettings, **overrides: Any) -> FakeProducer:
        assert overrides == {"linger_ms": 0}  # the same settings every time
        made.append(FakeProducer(len(made)))
        return made[-1]

    monkeypatch.setattr(kafka_module, "make_producer", make)
    producer = RenewableProducer(KafkaSettings(bootstrap="127.0.0.1:1"), linger_ms=0)
    holder = producer  # what the ingestor and the release hold: the same object, before and after
    assert holder.send("t", value=b"a") == "future-0"
    producer.renew()
    assert made[0].closed_with == 0  # its pending sends failed already: nothing to wait for
    assert holder.send("t", value=b"b") == "future-1"
    assert made[0].sent == [("t", b"a")] and made[1].sent == [("t", b"b")]
    assert made[1].closed_with is None
