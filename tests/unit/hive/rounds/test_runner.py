"""Rounds one at a time: the lock, cancelling, progress, views of unfinished rounds, and the runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hive.config import HiveSettings, ScheduleSettings
from hive.cores.registry import CoreRegistry
from hive.rounds.book import RoundBook, RoundNotFound, RoundRecord
from hive.rounds.cancel import CANCEL_FILE, RoundStateError, kill_leftovers, request_cancel
from hive.rounds.lock import RoundBusy, lock_holder, round_lock
from hive.rounds.progress import PROGRESS_FILE, ProgressLog, eta_s
from hive.rounds.runner import RoundRunner
from hive.store.parquet import ParquetLearningStore
from hive.views import round_json, rounds_json

from factories import make_learning


def record(round_id: str, state: str, **fields: object) -> RoundRecord:
    base = {
        "id": round_id,
        "state": state,
        "base_version": 0,
        "after_seq": 0,
        "upto_seq": 4,
        "learnings": 4,
        "per_agent": {"a1": 4},
        "skills": ["add"],
    }
    return RoundRecord(**(base | fields))  # type: ignore[arg-type]


@pytest.fixture
def settings(tmp_path: Path) -> HiveSettings:
    return HiveSettings(home=tmp_path / "hive")


def test_one_process_holds_the_round_lock_and_readers_see_who(settings: HiveSettings) -> None:
    assert lock_holder(settings.home) is None
    with round_lock(settings.home) as lock:
        lock.set_round("r0007")
        assert lock_holder(settings.home) == {"pid": os.getpid(), "round": "r0007"}
        with (
            pytest.raises(RoundBusy, match=rf"pid {os.getpid()} is running round r0007"),
            round_lock(settings.home, wait_s=0.1),
        ):
            pytest.fail("a second holder got the lock")
    assert lock_holder(settings.home) is None
    with round_lock(settings.home, wait_s=0):
        pass  # free again once the holder let go


def test_an_unfinished_round_no_process_runs_is_shown_interrupted(settings: HiveSettings) -> None:
    book = RoundBook(settings.rounds_dir)
    book.save(record("r0001", "released", candidate_version=1))
    book.save(record("r0002", "distilling"))
    (book.path("r0002") / PROGRESS_FILE).write_text(json.dumps({"step": 5, "total": 10, "loss": 1.5, "eta_s": 3.0}))
    rows = {row["id"]: row for row in rounds_json(settings)}
    assert rows["r0001"]["display_state"] == "released"
    assert rows["r0002"]["display_state"] == "interrupted"
    assert rows["r0002"]["progress"]["step"] == 5
    with round_lock(settings.home) as lock:
        lock.set_round("r0002")
        row = round_json(settings, "r0002")
        assert row["display_state"] == "distilling" and row["runner_pid"] == os.getpid()
    with pytest.raises(RoundNotFound, match="r0009"):
        round_json(settings, "r0009")


def test_cancel_is_refused_for_a_finished_round_and_recorded_for_an_unfinished_one(settings: HiveSettings) -> None:
    book = RoundBook(settings.rounds_dir)
    book.save(record("r0001", "rejected"))
    book.save(record("r0002", "distilling"))
    with pytest.raises(RoundStateError, match="already rejected"):
        request_cancel(settings, "r0001")
    request_cancel(settings, "r0002")
    assert (book.path("r0002") / CANCEL_FILE).is_file()
    assert round_json(settings, "r0002")["cancel_requested"] is True


def test_progress_log_writes_steps_loss_and_an_eta(tmp_path: Path) -> None:
    seen: list[tuple[int, int, float]] = []
    progress = ProgressLog(tmp_path / PROGRESS_FILE, lambda *p: seen.append(p))
    progress(10, 100, 2.0)
    payload = json.loads((tmp_path / PROGRESS_FILE).read_text())
    assert (payload["step"], payload["total"], payload["loss"], payload["eta_s"]) == (10, 100, 2.0, None)
    progress(100, 100, 0.5)  # the last step is always written
    assert json.loads((tmp_path / PROGRESS_FILE).read_text())["step"] == 100
    assert seen == [(10, 100, 2.0), (100, 100, 0.5)]
    assert eta_s((10, 0.0), 20, 100, 5.0) == pytest.approx(40.0)  # 10 steps in 5 s, 80 to go


def test_kill_leftovers_kills_exactly_the_processes_naming_the_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "r0001" / "manifest.json"
    other = tmp_path / "r0002" / "manifest.json"
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    mine = subprocess.Popen([*sleeper, "--manifest", str(manifest)])
    theirs = subprocess.Popen([*sleeper, "--manifest", str(other)])
    try:
        deadline = time.monotonic() + 30
        while not Path(f"/proc/{mine.pid}/cmdline").read_bytes().endswith(str(manifest).encode() + b"\0"):
            assert time.monotonic() < deadline, "the child never exec'd"
            time.sleep(0.01)
        assert kill_leftovers(manifest) == [mine.pid]
        assert mine.wait(timeout=10) == -9
        assert theirs.poll() is None
    finally:
        for proc in (mine, theirs):
            proc.kill()
            proc.wait()


def runner(settings: HiveSettings, store: ParquetLearningStore) -> RoundRunner:
    return RoundRunner(settings, store, CoreRegistry.from_settings(settings), release=None)


def test_interrupted_rounds_end_cancelled_or_failed_with_a_reason(settings: HiveSettings) -> None:
    settings = settings.model_copy(update={"schedule": ScheduleSettings(max_resumes=1)})
    book = RoundBook(settings.rounds_dir)
    book.save(record("r0001", "distilling"))  # cancel requested while nothing ran it
    (book.path("r0001") / "manifest.json").write_text("{}")
    (book.path("r0001") / CANCEL_FILE).write_text("now")
    book.save(record("r0002", "distilling", resumes=1))  # resumed once already
    (book.path("r0002") / "manifest.json").write_text("{}")
    book.save(record("r0003", "open"))  # no manifest to resume from
    with ParquetLearningStore(settings.store_dir) as store, round_lock(settings.home) as lock:
        ended = runner(settings, store).resume_unfinished(lock)
    states = {r.id: (r.state, r.error) for r in ended}
    assert states["r0001"][0] == "cancelled"
    assert states["r0002"][0] == "failed" and "gave up after 1 resumes" in (states["r0002"][1] or "")
    assert states["r0003"][0] == "failed" and "manifest.json is missing" in (states["r0003"][1] or "")
    assert [row["display_state"] for row in rounds_json(settings)] == ["cancelled", "failed", "failed"]


def test_the_dry_run_shows_what_would_go_in_and_why(settings: HiveSettings) -> None:
    settings = settings.model_copy(update={"schedule": ScheduleSettings(min_new=5)})
    with ParquetLearningStore(settings.store_dir) as store:
        store.append([make_learning("a1", "add"), make_learning("a1", "add"), make_learning("a2", "mul")], {})
        plan = runner(settings, store).plan(heartbeats=None)
        assert (plan.action, plan.round_id, plan.new_learnings) == ("open", "r0001", 3)
        assert plan.per_agent == {"a1": 2, "a2": 1}
        assert plan.per_skill == {"add": 2, "mul": 1}
        assert plan.skills_evaluated == ["add", "mul"]
        assert plan.schedule["due"] is False
        assert plan.schedule["triggers"][0]["detail"] == "3 new learnings < 5"
        RoundBook(settings.rounds_dir).save(record("r0001", "distilling"))
        assert runner(settings, store).plan(heartbeats=None).action == "resume"


def test_run_now_resumes_the_unfinished_rounds_first_and_opens_one_only_when_there_are_none(
    settings: HiveSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    book = RoundBook(settings.rounds_dir)
    book.save(record("r0001", "open"))  # no manifest to resume from: it ends failed
    opened: list[str] = []

    def open_and_run(lock: object, trigger: str, on_progress: object = None) -> RoundRecord:
        opened.append(trigger)
        return record("r0002", "released")

    with ParquetLearningStore(settings.store_dir) as store, round_lock(settings.home) as lock:
        rounds = runner(settings, store)
        monkeypatch.setattr(rounds, "open_and_run", open_and_run)
        assert [(r.id, r.state) for r in rounds.run_now(lock, "manual")] == [("r0001", "failed")]
        assert opened == []
        assert [r.id for r in rounds.run_now(lock, "manual")] == ["r0002"]
        assert opened == ["manual"]
