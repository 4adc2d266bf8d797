"""``hive serve``'s main loop: one round at a time, a pause after a failed round, a clean stop, and no exception
in a round or a round check that ends the service."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from hive import serve_loop
from hive.config import DistillSettings, HiveSettings, ScheduleSettings
from hive.cores.files import CoreFiles
from hive.rounds import runner as round_runner
from hive.rounds.book import RoundBook, RoundError, RoundRecord, end_round
from hive.rounds.last_check import describe_check, read_check, record_check
from hive.rounds.runner import RoundRunner
from hive.rounds.triggers import Backlog
from hive.service import Hive
from hive.store.parquet import ParquetLearningStore
from hive.views import rounds_json

from factories import make_learning


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

    def __init__(self, outcomes: list, stop: serve_loop.StopSignal, home: Path, book: RoundBook | None = None) -> None:
        self.settings = SimpleNamespace(home=home)
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
    monkeypatch.setattr(serve_loop, "HEALTH_CHECK_S", 0.01)


def test_rounds_run_one_at_a_time_and_a_failure_waits_for_the_retry(tmp_path: Path) -> None:
    stop = serve_loop.StopSignal()
    hive = FakeHive([RoundError("no skills"), record("r0002")], stop, tmp_path)
    timer = threading.Timer(5.0, stop.event.set)  # a bound, should the loop never run the second round
    timer.start()
    try:
        failure = serve_loop.main_loop(hive, stop, rounds=True, round_check_s=0.01, round_retry_s=0.3)  # type: ignore[arg-type]
    finally:
        timer.cancel()
    assert failure is None
    assert hive.calls == ["RoundError", "RoundRecord"]
    assert hive.times[1] - hive.times[0] >= 0.3  # round_retry_s, not round_check_s


def test_no_rounds_means_none_are_run(tmp_path: Path) -> None:
    stop = serve_loop.StopSignal()
    hive = FakeHive([record("r0001")], stop, tmp_path)
    threading.Timer(0.3, stop.event.set).start()
    assert serve_loop.main_loop(hive, stop, rounds=False, round_check_s=0.01, round_retry_s=0) is None  # type: ignore[arg-type]
    assert hive.calls == []


def test_a_dead_background_thread_ends_the_loop_with_its_failure(tmp_path: Path) -> None:
    stop = serve_loop.StopSignal()
    hive = FakeHive([], stop, tmp_path)
    hive.broken = "ingest stopped: RuntimeError('bug')"
    assert serve_loop.main_loop(hive, stop, rounds=True, round_check_s=0.01, round_retry_s=0) == hive.broken  # type: ignore[arg-type]


def test_an_interrupted_round_is_left_to_resume(tmp_path: Path) -> None:
    book = RoundBook(tmp_path / "rounds")
    book.save(record("r0001"))
    book.save(record("r0002", state="distilling"))
    stop = serve_loop.StopSignal()
    hive = FakeHive([KeyboardInterrupt()], stop, tmp_path, book)
    assert serve_loop.main_loop(hive, stop, rounds=True, round_check_s=0.01, round_retry_s=0) is None  # type: ignore[arg-type]
    # Unfinished on disk: the next start resumes it (hive.rounds.runner), and readers show it "interrupted".
    states = {r.id: r.state for r in book.all()}
    assert states == {"r0001": "released", "r0002": "distilling"}


def test_a_look_with_nothing_due_runs_nothing_and_keeps_looking(tmp_path: Path) -> None:
    stop = serve_loop.StopSignal()
    hive = FakeHive([None, None, record("r0001")], stop, tmp_path)
    threading.Timer(5.0, stop.event.set).start()
    assert serve_loop.main_loop(hive, stop, rounds=True, round_check_s=0.01, round_retry_s=0) is None  # type: ignore[arg-type]
    assert hive.calls == ["NoneType", "NoneType", "RoundRecord"]


def test_a_signal_during_a_round_interrupts_it() -> None:
    stop = serve_loop.StopSignal()
    stop.handle(15, None)  # SIGTERM outside a round: just stop
    assert stop.event.is_set()
    stop.in_round = True
    with pytest.raises(KeyboardInterrupt):
        stop.handle(15, None)


@pytest.fixture
def real_hive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_registry: object) -> Iterator[Hive]:
    """A Hive whose round_tick, runner, book and store are real; the registry, core v0 and the fleet are not."""
    settings = HiveSettings(
        home=tmp_path / "hive", schedule=ScheduleSettings(min_new=1), distill=DistillSettings(replay_size=0)
    )
    store = ParquetLearningStore(settings.store_dir)
    store.append([make_learning(prompt=f"1+{i}=", completion="0", reward=0.0) for i in range(3)], {})
    monkeypatch.setattr(round_runner, "champion_core", lambda s, r: CoreFiles(0, tmp_path / "v0", "0" * 64))
    hive = object.__new__(Hive)
    hive.settings = settings
    hive.runner = RoundRunner(settings, store, fake_registry, None)  # type: ignore[arg-type]
    hive.ingestor = FakeIngestor()  # type: ignore[assignment]
    hive.failure = lambda: None  # type: ignore[method-assign]
    hive.decide = lambda backlog=None: hive.runner.decide(None, backlog=backlog)  # type: ignore[method-assign]
    yield hive
    store.close()


def test_an_exception_in_a_round_fails_that_round_and_the_loop_goes_on(
    real_hive: Hive, monkeypatch: pytest.MonkeyPatch
) -> None:
    stop = serve_loop.StopSignal()
    calls: list[str] = []

    def buggy_then_fine(settings, book, registry, record, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(record.id)
        if len(calls) == 1:
            raise TypeError("'NoneType' object is not subscriptable")
        stop.event.set()
        return end_round(book, record, "released", None)

    monkeypatch.setattr(round_runner, "run_round", buggy_then_fine)
    threading.Timer(10.0, stop.event.set).start()  # a bound, should the loop never run the second round
    assert serve_loop.main_loop(real_hive, stop, rounds=True, round_check_s=0.01, round_retry_s=0.05) is None
    assert calls == ["r0001", "r0002"]
    rounds = {r["id"]: r for r in rounds_json(real_hive.settings)}
    assert rounds["r0001"]["state"] == "failed"
    assert "unexpected TypeError: 'NoneType' object is not subscriptable" in rounds["r0001"]["error"]
    assert rounds["r0002"]["state"] == "released"
    assert read_check(real_hive.settings.home) is None  # the checks themselves never failed


def test_a_failing_round_check_is_recorded_and_the_loop_goes_on(
    real_hive: Hive, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    stop = serve_loop.StopSignal()
    backlog = real_hive.runner.backlog
    looks: list[int] = []

    def flaky_backlog() -> Backlog:
        looks.append(1)
        if len(looks) == 1:
            raise KeyError("sent_at")
        stop.event.set()
        return replace(backlog(), new_learnings=0)  # nothing due: no round needed for this test

    monkeypatch.setattr(real_hive.runner, "backlog", flaky_backlog)
    failures: list[dict] = []

    def spied_record_check(home: Path, error: str | None) -> None:
        failures.append(read_check(home) or {})
        record_check(home, error)

    monkeypatch.setattr(serve_loop, "record_check", spied_record_check)
    threading.Timer(10.0, stop.event.set).start()
    assert serve_loop.main_loop(real_hive, stop, rounds=True, round_check_s=0.01, round_retry_s=0.05) is None
    assert len(looks) == 2
    assert "Traceback" in caplog.text and "KeyError: 'sent_at'" in caplog.text
    after = read_check(real_hive.settings.home)
    assert after is not None and after["ok"] is True and after["last_error"] == "KeyError: 'sent_at'"
    assert describe_check(after) is None
    assert failures[1]["ok"] is False and failures[1]["failures"] == 1  # what an operator saw in between
    assert rounds_json(real_hive.settings) == []
