"""Rounds one at a time per HIVE_HOME: the round lock, resuming after a crash, cancelling, progress and reports."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from agents.skills import skill_catalog
from distill.launch import remove_shm_buffers
from hive.config import HiveSettings
from hive.cores.files import CoreFiles, build_core_v0, existing_core
from hive.cores.registry import CHAMPION, CoreRegistry
from hive.rounds.book import (
    UNFINISHED,
    ProgressFn,
    ReleaseFn,
    RoundBook,
    RoundError,
    RoundRecord,
    RoundState,
    end_round,
    failing_round,
    open_round,
    run_round,
)
from hive.rounds.quarantine import take_unusable
from hive.rounds.triggers import Backlog, ScheduleDecision, active_agents, evaluate
from hive.store.interface import LearningStore, StoreError

log = logging.getLogger(__name__)

ROUND_LOCK = "round.lock"
CANCEL_FILE = "cancel"
PROGRESS_FILE = "progress.json"
# How often a running round looks for a cancel request, and how often its progress file is rewritten.
CANCEL_POLL_S = 0.5
PROGRESS_EVERY_S = 1.0
# How many unreadable learnings the scheduler looks past to find the oldest new one's time.
OLDEST_TRIES = 10


class RoundBusy(RuntimeError):
    """Another process holds the round lock: it is running a round."""


class RoundNotFound(KeyError):
    """No round with that id under HIVE_HOME/rounds."""

    def __str__(self) -> str:
        return str(self.args[0])


class RoundStateError(RuntimeError):
    """The round is in a state that does not allow the request (e.g. cancelling a released round)."""


# -- the round lock ------------------------------------------------------------------------------------


class RoundLock:
    """The held ``HIVE_HOME/round.lock``; it names the holder's pid and the round it runs, for readers."""

    def __init__(self, handle: IO[str]) -> None:
        self._handle = handle
        self.set_round(None)

    def set_round(self, round_id: str | None) -> None:
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.write(json.dumps({"pid": os.getpid(), "round": round_id}) + "\n")
        self._handle.flush()


@contextlib.contextmanager
def round_lock(home: Path, wait_s: float = 2.0) -> Iterator[RoundLock]:
    """Holds the round lock, so that one process at a time (``hive serve`` or ``hive round run``) runs rounds.

    Waits up to ``wait_s`` (a reader's check takes the lock for an instant), then raises RoundBusy naming
    the holder. An flock is released by the kernel when its holder dies, even by SIGKILL.
    """
    home.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    with open(home / ROUND_LOCK, "a+") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError as err:
                if time.monotonic() >= deadline:
                    holder = _read_holder(handle)
                    what = f"round {holder['round']}" if holder.get("round") else "rounds"
                    raise RoundBusy(f"pid {holder.get('pid', '?')} is running {what} in {home}") from err
                time.sleep(0.05)
        yield RoundLock(handle)


def lock_holder(home: Path) -> dict[str, Any] | None:
    """``{"pid", "round"}`` of the process holding the round lock, or None when no process holds it."""
    path = home / ROUND_LOCK
    if not path.is_file():
        return None
    with open(path) as handle:
        try:
            # A shared lock succeeds only when no one holds the exclusive one; released at once.
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(handle)
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def _read_holder(handle: IO[str]) -> dict[str, Any]:
    handle.seek(0)
    try:
        holder = json.loads(handle.read() or "{}")
    except json.JSONDecodeError:
        return {}
    return holder if isinstance(holder, dict) else {}


# -- progress ------------------------------------------------------------------------------------------


class ProgressLog:
    """Records a running round's progress in ``progress.json`` (for ``hive round show`` and the dashboard),
    with an ETA from the pace since this process started the job, and passes each step on to ``forward``."""

    def __init__(self, path: Path, forward: ProgressFn | None = None) -> None:
        self.path = path
        self.forward = forward
        self._first: tuple[int, float] | None = None
        self._written = 0.0

    def __call__(self, step: int, total: int, loss: float) -> None:
        now = time.monotonic()
        if self._first is None:
            self._first = (step, now)
        eta = eta_s(self._first, step, total, now)
        if step >= total or now - self._written >= PROGRESS_EVERY_S:
            self._written = now
            payload = {"step": step, "total": total, "loss": loss, "eta_s": eta, "updated_at": time.time()}
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(payload))
            tmp.replace(self.path)
        if self.forward is not None:
            self.forward(step, total, loss)


def eta_s(first: tuple[int, float], step: int, total: int, now: float) -> float | None:
    """Seconds left at the pace since ``first`` (step, monotonic time); None before a step has passed."""
    done = step - first[0]
    if done <= 0:
        return None
    return (now - first[1]) / done * max(0, total - step)


def read_progress(round_dir: Path) -> dict[str, Any] | None:
    path = round_dir / PROGRESS_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:
        # Replaced atomically, so a bad file is not a partial write; say so rather than show nothing.
        return {"error": f"unreadable {path}"}


# -- reports -------------------------------------------------------------------------------------------


def get_round(book: RoundBook, round_id: str) -> RoundRecord:
    record = book.get(round_id)
    if record is None:
        known = ", ".join(book.ids()) or "none"
        raise RoundNotFound(f"no round {round_id!r} in {book.directory} (known: {known})")
    return record


def round_view(book: RoundBook, record: RoundRecord, holder: dict[str, Any] | None) -> dict[str, Any]:
    """A round as ``hive round show --json`` prints it: the record, plus what a reader needs to know now.

    ``display_state`` is ``interrupted`` for an unfinished round that no live process runs: the next
    ``hive serve`` (or ``hive round run``) resumes it, or fails it with a reason; it is never stuck.
    """
    view = asdict(record)
    running = holder is not None and holder.get("round") == record.id
    if record.state in UNFINISHED and not running:
        view["display_state"] = "interrupted"
    else:
        view["display_state"] = record.state
    directory = book.path(record.id)
    view["progress"] = read_progress(directory) if record.state == "distilling" else None
    view["cancel_requested"] = (directory / CANCEL_FILE).exists()
    view["runner_pid"] = holder.get("pid") if running and holder is not None else None
    return view


def rounds_json(settings: HiveSettings) -> list[dict[str, Any]]:
    """Every round, oldest first, as ``hive round list --json`` prints them."""
    book = RoundBook(settings.rounds_dir)
    holder = lock_holder(settings.home)
    return [round_view(book, record, holder) for record in book.all()]


def round_json(settings: HiveSettings, round_id: str) -> dict[str, Any]:
    """One round, as ``hive round show R --json`` prints it; raises RoundNotFound."""
    book = RoundBook(settings.rounds_dir)
    return round_view(book, get_round(book, round_id), lock_holder(settings.home))


# -- cancelling and leftovers --------------------------------------------------------------------------


def request_cancel(settings: HiveSettings, round_id: str) -> RoundRecord:
    """Asks the process running round ``round_id`` to stop it (it looks twice a second); an interrupted
    round is cancelled by the next process that takes the round lock (``hive round cancel`` does)."""
    book = RoundBook(settings.rounds_dir)
    record = get_round(book, round_id)
    if record.state not in UNFINISHED:
        raise RoundStateError(f"round {round_id} is already {record.state}; only an unfinished round can be cancelled")
    (book.path(round_id) / CANCEL_FILE).write_text(datetime.now(UTC).isoformat() + "\n")
    return record


def skip_round(settings: HiveSettings, round_id: str, dry_run: bool = False) -> RoundRecord:
    """Marks failed round ``round_id`` ``skipped``: its learnings count as taken (like a released or
    rejected round's), so the next round starts after them, and no later round replays them. Returns the
    record as it is (dry run) or as saved. Raises RoundNotFound, or RoundStateError for a round that is
    not failed.

    It takes no lock: a failed round is never written by the process running rounds, and the file is
    replaced atomically.
    """
    book = RoundBook(settings.rounds_dir)
    record = get_round(book, round_id)
    if record.state != "failed":
        raise RoundStateError(
            f"round {round_id} is {record.state}; only a failed round can be skipped"
            + (" (cancel an unfinished one first)" if record.state in UNFINISHED else "")
        )
    record.state = "skipped"
    if not dry_run:
        book.save(record)
        log.warning(
            "round %s skipped: learnings seq %d..%d will not be distilled",
            round_id,
            record.after_seq + 1,
            record.upto_seq,
        )
    return record


def kill_leftovers(manifest: Path) -> list[int]:
    """SIGKILLs every process whose command line names ``manifest``: the launcher and ranks that a hive
    killed mid-round left running. Returns their pids. Linux only (reads /proc)."""
    needle = str(manifest.resolve())
    mine = os.getpid()
    found: list[int] = []
    ports: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == mine:
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # the process ended while we looked, or is not ours to read
        args = [arg.decode(errors="replace") for arg in argv]
        if needle in args:
            found.append(int(entry.name))
            ports.update(_master_ports(args))
    for pid in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() and not _is_zombie(pid) for pid in found):
        if time.monotonic() > deadline:
            raise RoundError(f"processes {found} of {manifest.parent.name} did not die after SIGKILL")
        time.sleep(0.05)
    for port in ports:
        remove_shm_buffers(port)
    return found


def _master_ports(args: list[str]) -> list[int]:
    """The DeepSpeed master port named in a launcher's or rank's arguments (``--master_port[=]N``)."""
    ports = []
    for i, arg in enumerate(args):
        value = arg.split("=", 1)[1] if arg.startswith("--master_port=") else None
        if arg == "--master_port" and i + 1 < len(args):
            value = args[i + 1]
        if value is not None and value.isdigit():
            ports.append(int(value))
    return ports


def cancel_round(settings: HiveSettings, round_id: str) -> None:
    """Cancels round ``round_id``: the process running it stops it within a second or so, and a round that
    no process runs is cancelled here and now. Raises RoundNotFound, or RoundStateError for a round that
    already ended. ``hive round cancel`` and the dashboard both cancel through this."""
    request_cancel(settings, round_id)
    holder = lock_holder(settings.home)
    if holder is not None and holder.get("round") == round_id:
        return
    try:
        with round_lock(settings.home) as lock:
            cancel_interrupted(settings, round_id, lock)
    except RoundBusy as err:
        # Another process took the lock meanwhile: it honours the request before anything else.
        log.info("round %s: cancel requested; %s", round_id, err)


def cancel_interrupted(settings: HiveSettings, round_id: str, lock: RoundLock) -> RoundRecord:
    """Cancels an unfinished round that no process runs (the caller holds the round lock): its leftover
    processes are killed and it ends ``cancelled``; its learnings go to the next round."""
    book = RoundBook(settings.rounds_dir)
    record = get_round(book, round_id)
    if record.state not in UNFINISHED:
        return record
    return _end_unfinished(book, record, "cancelled", "cancelled by `hive round cancel` while interrupted")


def _end_unfinished(book: RoundBook, record: RoundRecord, state: RoundState, error: str) -> RoundRecord:
    kill_leftovers(book.path(record.id) / "manifest.json")
    end_round(book, record, state, error)
    log.warning("round %s %s: %s", record.id, state, error)
    return record


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def _watch_cancel(cancel_path: Path, cancel: threading.Event, done: threading.Event) -> None:
    while not done.wait(CANCEL_POLL_S):
        if cancel_path.exists():
            cancel.set()
            return


# -- the runner ----------------------------------------------------------------------------------------


def champion_core(settings: HiveSettings, registry: CoreRegistry) -> CoreFiles:
    """The current champion core, building and registering core v0 on a new hive."""
    version = registry.champion_version()
    if version is not None:
        return existing_core(settings, version)
    if registry.has_version(0):
        # A hive stopped between registering v0 and aliasing it: finish the job rather than build v0 again.
        registry.set_alias(CHAMPION, 0)
        return existing_core(settings, 0)
    core = build_core_v0(settings)
    registry.log_core(core.directory, core.version, core.sha256)
    registry.set_alias(CHAMPION, core.version)
    return core


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

    The caller MUST hold the round lock (``round_lock``) around ``resume_unfinished`` and ``open_and_run``.
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
        return _end_unfinished(self.book, record, state, error)

    def open_and_run(self, lock: RoundLock, trigger: str, on_progress: ProgressFn | None = None) -> RoundRecord:
        """Opens a round over the new learnings and runs it; raises RoundError when there are none."""
        base = champion_core(self.settings, self.registry)
        experiment = self.registry.experiment  # created below, with its artifacts under HIVE_HOME
        self.registry.experiment_id()
        record = open_round(self.settings, self.store, self.book, base, experiment, trigger)
        return self._run(record, lock, on_progress)

    def _run(self, record: RoundRecord, lock: RoundLock, on_progress: ProgressFn | None) -> RoundRecord:
        directory = self.book.path(record.id)
        lock.set_round(record.id)
        cancel, done = threading.Event(), threading.Event()
        watcher = threading.Thread(
            target=_watch_cancel, args=(directory / CANCEL_FILE, cancel, done), name="round-cancel", daemon=True
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
