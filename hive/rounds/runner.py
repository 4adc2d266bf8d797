"""The round runner: resumes what a crash interrupted, then opens and runs new rounds; and the dry run's plan."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from agents.skills import skill_catalog
from hive.config import HiveSettings
from hive.cores.files import champion_core
from hive.cores.registry import CoreRegistry
from hive.rounds.book import UNFINISHED, RoundBook, RoundRecord, RoundState, failing_round
from hive.rounds.cancel import CANCEL_FILE, end_unfinished, kill_leftovers, watch_cancel
from hive.rounds.lock import RoundLock
from hive.rounds.open import open_round
from hive.rounds.progress import PROGRESS_FILE, ProgressFn, ProgressLog
from hive.rounds.quarantine import take_unusable
from hive.rounds.run import ReleaseFn, run_round
from hive.rounds.triggers import Backlog, ScheduleDecision, active_agents, evaluate
from hive.store.interface import LearningStore, StoreError

log = logging.getLogger(__name__)

# How many unreadable learnings the scheduler looks past to find the oldest new one's time.
OLDEST_TRIES = 10


@dataclass
class RoundPlan:
    """What ``hive round run`` would do now, and why: the dry run's report."""

    action: str  # "resume", "open" or "nothing"
    reason: str
    resume: list[str]
    round_id: str | None
    base_version: int | None
    after_seq: int
    upto_seq: int
    new_learnings: int
    per_agent: dict[str, int]
    per_skill: dict[str, int]
    skills_evaluated: list[str]
    replay: int
    distill: dict[str, Any]
    schedule: dict[str, Any]
    # Learnings in the range that earlier rounds quarantined (left out), and, per reason, those that
    # opening the round would quarantine now (a skill the hive cannot load, a stored JSON that no longer parses).
    quarantined: int = 0
    would_quarantine: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class RoundRunner:
    """Runs one hive's rounds: first any round a crash interrupted, then new ones.

    The caller MUST hold the round lock (``round_lock``) around ``resume_unfinished``, ``open_and_run`` and
    ``run_now``.
    ``store`` is only read, so a read-only store serves ``hive round run`` while ``hive serve`` writes it.
    """

    def __init__(
        self, settings: HiveSettings, store: LearningStore, registry: CoreRegistry, release: ReleaseFn | None
    ) -> None:
        self.settings = settings
        self.store = store
        self.registry = registry
        self.release = release
        self.book = RoundBook(settings.rounds_dir)

    def unfinished(self) -> list[RoundRecord]:
        return [r for r in self.book.all() if r.state in UNFINISHED]

    def backlog(self) -> Backlog:
        """The learnings no round has taken yet, quarantined ones left out, and whether failed rounds block them."""
        after = self.book.covered_seq()
        upto = self.store.max_seq()
        per_agent = self.store.per_agent_counts(after_seq=after, upto_seq=upto, skip_quarantined=True)
        rounds = self.book.all()
        return Backlog(
            new_learnings=sum(per_agent.values()),
            per_agent=per_agent,
            after_seq=after,
            upto_seq=upto,
            oldest_new_at=self._oldest_new_at(after, upto),
            last_round_at=datetime.fromtimestamp(max(r.created_at for r in rounds), UTC) if rounds else None,
            blocked=self.blocked(after),
        )

    def _oldest_new_at(self, after: int, upto: int) -> datetime | None:
        """created_at of the oldest new learning that still parses (the next round quarantines the others)."""
        for _ in range(OLDEST_TRIES):
            rows, unreadable = self.store.read_checked(after_seq=after, upto_seq=upto, limit=1)
            if rows:
                return rows[0][1].created_at
            if not unreadable:
                return None
            after = unreadable[0].seq
        return None

    def blocked(self, after: int) -> str | None:
        """Why the schedule opens no round over the learnings after seq ``after``: they failed
        ``max_failed_rounds`` rounds in a row (HIVE_SCHEDULE__MAX_FAILED_ROUNDS; 0 never blocks); else None."""
        limit = self.settings.schedule.max_failed_rounds
        streak = self.book.failed_streak(after)
        if limit == 0 or len(streak) < limit:
            return None
        newest = streak[0].id
        return (
            f"rounds {', '.join(r.id for r in reversed(streak))} failed over the learnings after seq {after}; "
            f"see `hive round show {newest}`; `hive round skip {newest}` moves past them"
        )

    def decide(
        self, heartbeats: dict[str, datetime] | None, now: datetime | None = None, backlog: Backlog | None = None
    ) -> ScheduleDecision:
        """The schedule's verdict on ``backlog`` (read now when not given); ``heartbeats`` (agent -> newest
        sent_at) is None when the fleet is unknown."""
        now = now or datetime.now(UTC)
        schedule = self.settings.schedule
        active = None if heartbeats is None else active_agents(heartbeats, now, schedule.active_s)
        return evaluate(schedule, backlog or self.backlog(), active, now)

    def plan(self, heartbeats: dict[str, datetime] | None, now: datetime | None = None) -> RoundPlan:
        """What a run would take in and why, without writing anything."""
        backlog = self.backlog()
        decision = self.decide(heartbeats, now, backlog)
        resume = [r.id for r in self.unfinished()]
        after, upto = backlog.after_seq, backlog.upto_seq
        rows, unreadable = self.store.read_checked(after_seq=after, upto_seq=upto)
        catalog = skill_catalog(self.settings.skills)
        learnings = [learning for _, learning in rows if learning.skill in catalog]
        would_quarantine = {"unreadable": len(unreadable), "unknown_skill": len(rows) - len(learnings)}
        per_skill: dict[str, int] = {}
        for learning in learnings:
            per_skill[learning.skill] = per_skill.get(learning.skill, 0) + 1
        base = self.registry.champion_version()
        if resume:
            action, reason = "resume", f"resume the interrupted round(s) {', '.join(resume)} first"
        elif learnings:
            action, reason = "open", f"open a round over {len(learnings)} new learnings"
        else:
            action, reason = "nothing", f"no new learnings after seq {after}"
        replay = min(self.settings.distill.replay_size, after) if after > 0 else 0
        params = self.settings.distill.for_round(first=(base or 0) == 0)
        return RoundPlan(
            action=action,
            reason=reason,
            resume=resume,
            round_id=self.book.next_id() if action == "open" else None,
            base_version=base if base is not None else 0,
            after_seq=after,
            upto_seq=upto,
            new_learnings=len(learnings),
            per_agent=backlog.per_agent,
            per_skill=dict(sorted(per_skill.items())),
            skills_evaluated=sorted(set(per_skill) | set(self.book.taught_skills())),
            replay=replay,
            distill={k: params[k] for k in ("nproc", "steps", "batch_size", "lr", "ds_config")},
            schedule=decision.to_json(),
            quarantined=len(self.store.quarantined(after_seq=after, upto_seq=upto)),
            would_quarantine={reason: n for reason, n in would_quarantine.items() if n},
        )

    def resume_unfinished(self, lock: RoundLock, on_progress: ProgressFn | None = None) -> list[RoundRecord]:
        """Ends every unfinished round: cancelled if asked, failed if it cannot resume, else resumed to its end.

        First it records every unreadable round.json as the failed round it reads as. Any error while it
        ends a round fails that round (RoundError, the reason in its round.json).
        """
        self.book.repair()
        done = []
        for record in self.unfinished():
            with failing_round(self.book, record):
                done.append(self._resume(record, lock, on_progress))
        return done

    def _resume(self, record: RoundRecord, lock: RoundLock, on_progress: ProgressFn | None) -> RoundRecord:
        directory = self.book.path(record.id)
        manifest = directory / "manifest.json"
        killed = kill_leftovers(manifest)
        if killed:
            log.warning("round %s: killed %d processes a crashed hive left running", record.id, len(killed))
        if (directory / CANCEL_FILE).exists():
            return self._end(record, "cancelled", "cancelled by `hive round cancel` while interrupted")
        if record.resumes >= self.settings.schedule.max_resumes:
            error = (
                f"interrupted {record.resumes + 1} times; gave up after {record.resumes} resumes "
                "(HIVE_SCHEDULE__MAX_RESUMES); its learnings go to the next round"
            )
            return self._end(record, "failed", error)
        if not manifest.is_file():
            return self._end(record, "failed", f"interrupted, and cannot resume: {manifest} is missing")
        record.resumes += 1
        log.info("round %s was interrupted; resuming it (resume %d)", record.id, record.resumes)
        return self._run(record, lock, on_progress)

    def _end(self, record: RoundRecord, state: RoundState, error: str) -> RoundRecord:
        return end_unfinished(self.book, record, state, error)

    def open_and_run(self, lock: RoundLock, trigger: str, on_progress: ProgressFn | None = None) -> RoundRecord:
        """Opens a round over the new learnings and runs it; raises RoundError when there are none."""
        base = champion_core(self.settings, self.registry)
        experiment = self.registry.experiment  # created below, with its artifacts under HIVE_HOME
        self.registry.experiment_id()
        opening = time.monotonic()
        record = open_round(self.settings, self.store, self.book, base, experiment, trigger)
        # A round's wall time counts its opening too (reading the store, sampling replay, writing its files).
        record.wall_s += time.monotonic() - opening
        return self._run(record, lock, on_progress)

    def run_now(self, lock: RoundLock, trigger: str, on_progress: ProgressFn | None = None) -> list[RoundRecord]:
        """A round now, whatever the schedule says (``hive round run``): the unfinished rounds are ended first
        (``resume_unfinished``); when there were none, a round opens over the new learnings and runs. Returns the
        rounds it ran; raises NoNewLearnings when there was nothing to resume and nothing new to distill."""
        records = self.resume_unfinished(lock, on_progress)
        if records:
            return records
        return [self.open_and_run(lock, trigger, on_progress)]

    def _run(self, record: RoundRecord, lock: RoundLock, on_progress: ProgressFn | None) -> RoundRecord:
        directory = self.book.path(record.id)
        lock.set_round(record.id)
        cancel, done = threading.Event(), threading.Event()
        watcher = threading.Thread(
            target=watch_cancel, args=(directory / CANCEL_FILE, cancel, done), name="round-cancel", daemon=True
        )
        watcher.start()
        try:
            with failing_round(self.book, record):
                return run_round(
                    self.settings,
                    self.book,
                    self.registry,
                    record,
                    on_progress=ProgressLog(directory / PROGRESS_FILE, on_progress),
                    release=self.release,
                    cancel=cancel,
                    after_job=self._take_unusable,
                )
        finally:
            done.set()
            lock.set_round(None)

    def _take_unusable(self, record: RoundRecord) -> None:
        """Quarantines what the round's distill job could not use (``out/unusable.jsonl``), so that the next
        round runs without it; a store that cannot record it now is logged, and the file stays for the next try."""
        try:
            record.quarantined += take_unusable(self.store, self.book.path(record.id), record.id)
        except (StoreError, sqlite3.Error, OSError):
            log.exception("round %s: cannot quarantine the learnings its distill job could not use", record.id)
