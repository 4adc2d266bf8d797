"""Integration fixtures: the embedded Tansu broker on a free loopback port, stopped by its pid."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.broker import EmbeddedBroker


def _start(log_path: Path) -> EmbeddedBroker:
    broker = EmbeddedBroker(log_path=log_path)
    broker.start()
    return broker


def _stop(broker: EmbeddedBroker) -> None:
    pid = broker.pid
    broker.stop()
    if pid is not None:
        # The broker is our child and has been reaped, so its pid no longer names a process.
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One broker for the whole session; tests sharing it must not count what others put on a topic."""
    embedded = _start(tmp_path_factory.mktemp("broker") / "tansu.log")
    try:
        yield embedded.bootstrap
    finally:
        _stop(embedded)


@pytest.fixture
def fresh_broker(tmp_path: Path) -> Iterator[str]:
    """A broker of the test's own (it starts in milliseconds), for tests that count a topic's records."""
    embedded = _start(tmp_path / "tansu.log")
    try:
        yield embedded.bootstrap
    finally:
        _stop(embedded)
