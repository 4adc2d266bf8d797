"""``hive serve``'s main loop with a fake hive: one round at a time, a pause after a failed round, a clean stop."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from hive.cli import serve
from hive.rounds import RoundBook, RoundError, RoundRecord


def record(round_id: str, state: str = "released") -> RoundRecord:
    return RoundRecord(
        id=round_id, state=state, base_version=0, after_seq=0, upto_seq=1, learnings=1, per_agent={}, skills=[]
    )  # type: ignore[arg-type]


class FakeIngestor:
    ready = True

    def assignment(self) -> set:
        return set()


class FakeHive:
    """Each round_tick takes the next outcome (a record, None for "nothing due", or an exception to raise)."""

    def __init__(self, outcomes: list, stop: serve._Stop, book: RoundBook | None = None) -> None:
        self.outcomes = outcomes
        self.stop = stop
        self.book = book
        self.ingestor = FakeIngestor()
        self.calls: list[str] = []
        self.times: list[float] = []
        self.running = 0
        self.broken: str | None = None

    def failure(self) -> str | None:
        return self.broken

    def round_tick(self, on_progress=None) -> RoundRecord | None:
        if not self.outcomes:
            return None
        self.running += 1
        assert self.running == 1, "two rounds at once"
        try:
            outcome = self.outcomes.pop(0)
            self.calls.append(type(outcome).__name__)
            self.times.append(time.monotonic())
            if not self.outcomes:
                self.stop.event.set()
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome
        finally:
            self.running -= 1


@pytest.fixture(autouse=True)
def fast_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serve, "HEALTH_CHECK_S", 0.01)


def test_rounds_run_one_at_a_time_and_a_failure_waits_for_the_retry() -> None:
    stop = serve._Stop()
    hive = FakeHive([RoundError("no skills"), record("r0002")], stop)
    timer = threading.Timer(5.0, stop.event.set)  # a bound, should the loop never run the second round
    timer.start()
    try:
        failure = serve._loop(hive, stop, rounds=True, round_check_s=0.01, round_retry_s=0.3)  # type: ignore[arg-type]
    finally:
        timer.cancel()
    assert failure is None
    assert hive.calls == ["RoundError", "RoundRecord"]
    assert hive.times[1] - hive.times[0] >= 0.3  # round_retry_s, not round_check_s


def test_no_rounds_means_none_are_run() -> None:
    stop = serve._Stop()
    hive = FakeHive([record("r0001")], stop)
    threading.Timer(0.3, stop.event.set).start()
    assert serve._loop(hive, stop, rounds=False, round_check_s=0.01, round_retry_s=0) is None  # type: ignore[arg-type]
    assert hive.calls == []


def test_a_dead_background_thread_ends_the_loop_with_its_failure() -> None:
    stop = serve._Stop()
    hive = FakeHive([], stop)
    hive.broken = "ingest stopped: RuntimeError('bug')"
    assert serve._loop(hive, stop, rounds=True, round_check_s=0.01, round_retry_s=0) == hive.broken  # type: ignore[arg-type]


def test_an_interrupted_round_is_left_to_resume(tmp_path: Path) -> None:
    book = RoundBook(tmp_path / "rounds")
    book.save(record("r0001"))
    book.save(record("r0002", state="distilling"))
    stop = serve._Stop()
    hive = FakeHive([KeyboardInterrupt()], stop, book)
    assert serve._loop(hive, stop, rounds=True, round_check_s=0.01, round_retry_s=0) is None  # type: ignore[arg-type]
    # Unfinished on disk: the next start resumes it (hive.round_control), and readers show it "interrupted".
    states = {r.id: r.state for r in book.all()}
    assert states == {"r0001": "released", "r0002": "distilling"}


def test_a_look_with_nothing_due_runs_nothing_and_keeps_looking() -> None:
    stop = serve._Stop()
    hive = FakeHive([None, None, record("r0001")], stop)
    threading.Timer(5.0, stop.event.set).start()
    assert serve._loop(hive, stop, rounds=True, round_check_s=0.01, round_retry_s=0) is None  # type: ignore[arg-type]
    assert hive.calls == ["NoneType", "NoneType", "RoundRecord"]


def test_a_signal_during_a_round_interrupts_it() -> None:
    stop = serve._Stop()
    stop.handle(15, None)  # SIGTERM outside a round: just stop
    assert stop.event.is_set()
    stop.in_round = True
    with pytest.raises(KeyboardInterrupt):
        stop.handle(15, None)
