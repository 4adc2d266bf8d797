"""Distillation rounds: open one over new learnings, run it under DeepSpeed, gate it, register it."""

from __future__ import annotations

import contextlib
import json
import logging
import random
import re
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError

from agents.evaluation import evaluate_skills
from agents.model import load_core
from agents.skills import SkillLoadError, load_skills, skill_catalog
from hive.config import HiveSettings
from hive.cores.files import CoreFiles, core_dir, existing_core
from hive.cores.gate import decide
from hive.cores.registry import CoreRegistry
from hive.rounds.quarantine import quarantine
from hive.store.interface import LearningStore, Quarantined
from streams import durable
from streams.events import Learning

log = logging.getLogger(__name__)

RoundState = Literal["open", "distilling", "released", "rejected", "failed", "cancelled", "skipped"]
# A round in one of these states is unfinished: running, or interrupted and waiting to resume.
UNFINISHED: tuple[RoundState, ...] = ("open", "distilling")
# A round in one of these states took its learnings for good: the next round starts after its range.
# ``skipped`` is a failed round that an operator moved past (`hive round skip`).
COVERING: tuple[RoundState, ...] = ("released", "rejected", "skipped")
ROUND_FILE = "round.json"
# Where the bytes of a round.json that could not be read are kept when the book rewrites it.
TORN_SUFFIX = ".torn"
UNREADABLE = "unreadable round.json"
_ROUND_ID = re.compile(r"r\d{4,}")
ProgressFn = Callable[[int, int, float], None]


class RoundError(RuntimeError):
    """A round that cannot be opened or run, with the reason."""


class RoundFailed(RoundError):
    """A round that ran and failed: its round.json holds the reason (state ``failed``, ``error``)."""


class NoNewLearnings(RoundError):
    """Nothing to distill: no learning arrived since the last round took its share."""


@dataclass
class RoundRecord:
    """One round's bookkeeping, kept as ``round.json`` in the round's directory."""

    id: str
    state: RoundState
    base_version: int
    after_seq: int
    upto_seq: int
    learnings: int
    per_agent: dict[str, int]
    skills: list[str]
    created_at: float = field(default_factory=time.time)
    candidate_version: int | None = None
    eval: dict[str, float] = field(default_factory=dict)
    champion_eval: dict[str, float] = field(default_factory=dict)
    gate_reasons: list[str] = field(default_factory=list)
    distill: dict = field(default_factory=dict)
    wall_s: float = 0.0
    error: str | None = None
    # Why the round was opened: the schedule's triggers that fired, or "manual".
    trigger: str = ""
    # How often a restarted hive resumed it after an interruption.
    resumes: int = 0
    ended_at: float | None = None
    # How many learnings this round quarantined (a skill the hive cannot load, one the distill job could
    # not use): they are left out of every later round.
    quarantined: int = 0


_RECORD: TypeAdapter[RoundRecord] = TypeAdapter(RoundRecord)


def parse_record(data: bytes, round_id: str) -> RoundRecord:
    """Round ``round_id``'s record from the bytes of its round.json; ValueError says what is wrong with them.

    A field this hive does not know (one a later version added, or dropped since) is ignored; a field of
    the wrong type, a missing one or an unknown state is an error.
    """
    try:
        record = _RECORD.validate_json(data)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'the file'}: {e['msg']}" for e in err.errors()[:3])
        raise ValueError(problems) from err
    if record.id != round_id:
        raise ValueError(f"it names round {record.id!r}, not {round_id!r}")
    return record


class RoundBook:
    """The rounds of one hive, one directory each under ``HIVE_HOME/rounds``.

    Reading never raises for one round's bad file: a round.json that is missing, torn or of the wrong
    shape reads as a ``failed`` round whose error starts with "unreadable round.json", so that every
    reader (the scheduler, ``hive round list``, the dashboard) goes on.
    """

    def __init__(self, directory: Path) -> None:
        # Not created here: readers (`hive round list`, the dashboard) must not leave folders behind.
        self.directory = directory

    def path(self, round_id: str) -> Path:
        return self.directory / round_id

    def save(self, record: RoundRecord) -> None:
        """Replaces the round's round.json atomically and durably; an unreadable one is kept aside first."""
        target = self.path(record.id) / ROUND_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        self._keep_torn(record.id)
        durable.write_text(target, json.dumps(asdict(record), indent=2))

    def _keep_torn(self, round_id: str) -> None:
        target = self.path(round_id) / ROUND_FILE
        torn = target.with_name(ROUND_FILE + TORN_SUFFIX)
        try:
            data = target.read_bytes()
        except FileNotFoundError:
            return
        try:
            parse_record(data, round_id)
        except ValueError:
            if not torn.exists():
                # The first bad bytes are the evidence of what happened; a later rewrite must not lose them.
                durable.write_bytes(torn, data)

    def ids(self) -> list[str]:
        """The ids of the rounds on record, oldest first: every ``rNNNN`` directory, with or without a
        readable round.json."""
        if not self.directory.is_dir():
            return []
        found = [p.name for p in self.directory.iterdir() if _ROUND_ID.fullmatch(p.name) and p.is_dir()]
        return sorted(found, key=lambda round_id: int(round_id[1:]))

    def all(self) -> list[RoundRecord]:
        return [self._load(round_id) for round_id in self.ids()]

    def get(self, round_id: str) -> RoundRecord | None:
        """Round ``round_id``'s record, or None when no round has that id (a path such as ``../x`` included)."""
        return self._load(round_id) if round_id in self.ids() else None

    def _load(self, round_id: str) -> RoundRecord:
        path = self.path(round_id) / ROUND_FILE
        try:
            return parse_record(path.read_bytes(), round_id)
        except FileNotFoundError:
            problem = "the file is missing"
        except OSError as err:
            problem = f"cannot read it: {err}"
        except ValueError as err:
            problem = str(err)
        return self._unreadable(round_id, problem)

    def _unreadable(self, round_id: str, problem: str) -> RoundRecord:
        """A failed record for a round whose round.json cannot be read, its learnings' range taken from its
        manifest when that can be read (else 0..0, a range that covers and blocks nothing)."""
        directory = self.path(round_id)
        after = upto = 0
        try:
            manifest = json.loads((directory / "manifest.json").read_text())
            seqs = manifest.get("store_range") or manifest.get("lineage") or {}
            after, upto = int(seqs["after_seq"]), int(seqs["upto_seq"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            after = upto = 0  # the manifest cannot tell either: the range stays unknown
        try:
            created = (directory / ROUND_FILE).stat().st_mtime
        except OSError:
            created = directory.stat().st_mtime if directory.exists() else time.time()
        return RoundRecord(
            id=round_id,
            state="failed",
            base_version=0,
            after_seq=after,
            upto_seq=upto,
            learnings=0,
            per_agent={},
            skills=[],
            created_at=created,
            error=f"{UNREADABLE}: {problem}; its learnings go to the next round",
        )

    def repair(self) -> list[RoundRecord]:
        """Rewrites every unreadable round.json as the failed record it reads as (its bytes kept in
        ``round.json.torn``), so that it stays failed with a time it ended. Only the round lock's holder
        may call it; returns the rounds rewritten."""
        repaired = []
        for record in self.all():
            if record.error is not None and record.error.startswith(UNREADABLE) and record.ended_at is None:
                record.ended_at = time.time()
                self.save(record)
                log.warning("round %s: %s; recorded it as failed", record.id, record.error)
                repaired.append(record)
        return repaired

    def next_id(self) -> str:
        """One above the highest round id: an id is never given twice, even when a round's file is lost."""
        numbers = [int(round_id[1:]) for round_id in self.ids()]
        return f"r{max(numbers, default=0) + 1:04d}"

    def covered_seq(self) -> int:
        """The highest learning seq that a round has already taken in (released, rejected or skipped)."""
        done = [r.upto_seq for r in self.all() if r.state in COVERING]
        return max(done, default=0)

    def taught_skills(self) -> list[str]:
        """Every skill a released core was ever taught: the gate checks all of them."""
        return sorted({s for r in self.all() if r.state == "released" for s in r.skills})

    def failed_streak(self, after_seq: int) -> list[RoundRecord]:
        """The failed rounds, newest first, that tried the learnings after ``after_seq`` since a round last
        took any in: a streak that only a round ending otherwise (or a skip) breaks.

        A failed round that quarantined learnings does not count: the next one runs without them, so it
        is not the same try again. Cancelled rounds are an operator's choice and count neither way.
        """
        streak = []
        for record in reversed(self.all()):
            if record.state in ("cancelled", *UNFINISHED):
                continue
            if record.state != "failed" or record.after_seq != after_seq:
                break
            if record.upto_seq > record.after_seq and not record.quarantined:
                streak.append(record)
        return streak


def sample_replay(earlier: list[Learning], size: int, seed: str) -> list[Learning]:
    """A seeded sample of ``size`` earlier learnings (or all of them, if fewer), balanced per skill.

    Each skill gets an equal share; a skill with fewer learnings than its share gives the rest to the
    others. The sample keeps the store's order, so the same store and seed give the same file.
    """
    if size <= 0 or not earlier:
        return []
    rng = random.Random(f"replay:{seed}")
    by_skill: dict[str, list[int]] = {}
    for index, learning in enumerate(earlier):
        by_skill.setdefault(learning.skill, []).append(index)
    pools = {skill: rng.sample(indices, len(indices)) for skill, indices in sorted(by_skill.items())}
    chosen: list[int] = []
    while len(chosen) < size and pools:
        # One round-robin pass takes one learning per skill still holding some.
        for skill in list(pools):
            if len(chosen) == size:
                break
            chosen.append(pools[skill].pop())
            if not pools[skill]:
                del pools[skill]
    return [earlier[i] for i in sorted(chosen)]


def open_round(
    settings: HiveSettings,
    store: LearningStore,
    book: RoundBook,
    base: CoreFiles,
    experiment: str,
    trigger: str = "",
) -> RoundRecord:
    """Takes every learning stored since the last round into a new round, with its manifest.

    Learnings no round can use are quarantined first, never failing the round: a skill the hive cannot
    load (``unknown_skill``) or a stored JSON that no longer parses (``unreadable``). Raises
    NoNewLearnings when none is left; learnings quarantined before are left out of the round and its replay.

    ``experiment`` must already exist with its artifact location under HIVE_HOME: a job that had
    to create it would put its artifacts in ``./mlruns`` of the round directory.
    """
    after = book.covered_seq()
    upto = store.max_seq()
    rows, unreadable = store.read_checked(after_seq=after, upto_seq=upto)
    taught = book.taught_skills()
    catalog = skill_catalog(settings.skills)
    lost = [s for s in taught if s not in catalog]
    if lost:
        # Not the learnings' fault: the gate must check every skill a released core was taught.
        raise RoundError(
            f"earlier rounds taught skills the hive cannot load now: {', '.join(lost)}; "
            "add their module:attr to HIVE_SKILLS so rounds can evaluate them"
        )
    unknown = [
        Quarantined(
            str(learning.id),
            seq,
            learning.agent_id,
            learning.skill,
            "unknown_skill",
            f"the hive cannot load skill {learning.skill!r}: add its module:attr to HIVE_SKILLS",
        )
        for seq, learning in rows
        if learning.skill not in catalog
    ]
    taken = [(seq, learning) for seq, learning in rows if learning.skill in catalog]
    round_id = book.next_id() if taken else None
    quarantined = quarantine(store, [*unreadable, *unknown], round_id)
    if not taken:
        held = f" ({quarantined} quarantined now)" if quarantined else ""
        raise NoNewLearnings(f"no new learnings after seq {after}{held}")
    learnings = [learning for _, learning in taken]
    assert round_id is not None
    record = RoundRecord(
        id=round_id,
        state="open",
        base_version=base.version,
        after_seq=after,
        upto_seq=upto,
        learnings=len(learnings),
        per_agent=dict(sorted(Counter(learning.agent_id for learning in learnings).items())),
        skills=sorted({learning.skill for learning in learnings} | set(taught)),
        trigger=trigger,
        quarantined=quarantined,
    )
    # round.json first: a crash while the files below are written leaves a round that the next start
    # fails with a reason ("manifest.json is missing"), never a directory that no record names.
    book.save(record)
    with failing_round(book, record):
        directory = book.path(record.id)
        write_learnings(directory / "learnings.jsonl", learnings)
        replay = None
        if after > 0 and settings.distill.replay_size > 0:
            # Earlier rounds' learnings, so the core keeps being taught what it already knows.
            earlier = _replayable(store, book, after, record.id)
            sample = sample_replay(earlier, settings.distill.replay_size, f"{settings.distill.seed}:{record.id}")
            if sample:
                replay = directory / "replay.jsonl"
                write_learnings(replay, sample)
        # The distill job reads the file's n-th line as seq after+n: only a whole range has that lineage.
        whole = [seq for seq, _ in taken] == list(range(after + 1, upto + 1))
        write_manifest(
            directory,
            record.id,
            base.directory,
            replay,
            [catalog[s] for s in record.skills],
            settings.distill.for_round(first=base.version == 0),
            eval_={"tasks": settings.gate.eval_tasks, "seed": settings.gate.eval_seed},
            mlflow={"tracking_uri": settings.mlflow_uri, "experiment": experiment, "run_name": record.id},
            lineage={"after_seq": after, "upto_seq": upto} if whole else None,
            store_range={"after_seq": after, "upto_seq": upto},
            adapters=settings.adapters_manifest(),
        )
    return record


def _replayable(store: LearningStore, book: RoundBook, after: int, round_id: str) -> list[Learning]:
    """The learnings up to seq ``after`` a replay may sample: none quarantined, none of a skipped round
    (an operator skipped it because its learnings could not be distilled). An unreadable one is quarantined."""
    rows, unreadable = store.read_checked(after_seq=0, upto_seq=after)
    quarantine(store, unreadable, round_id)
    skipped = [(r.after_seq, r.upto_seq) for r in book.all() if r.state == "skipped"]
    return [learning for seq, learning in rows if not any(lo < seq <= hi for lo, hi in skipped)]


@contextlib.contextmanager
def failing_round(book: RoundBook, record: RoundRecord, started: float | None = None) -> Iterator[None]:
    """Isolates one round: any unexpected exception in the block (a bug, bad data: TypeError, KeyError,
    ValueError, ...) ends ``record`` failed with that error, is logged with its traceback, and comes out as
    RoundFailed, so that the service goes on. A RoundError passes as it is."""
    try:
        yield
    except RoundError:
        raise
    except Exception as err:
        log.exception("round %s failed", record.id)
        error = f"unexpected {type(err).__name__}: {err} (the traceback is in the hive's log)"
        end_round(book, record, "failed", error, started)
        raise RoundFailed(f"round {record.id} failed: {error}") from err


def write_manifest(
    directory: Path,
    round_id: str,
    base_core: Path,
    replay: Path | None,
    skill_specs: list[str],
    distill: dict[str, Any],
    eval_: dict[str, Any],
    mlflow: dict[str, Any] | None = None,
    lineage: dict[str, int] | None = None,
    store_range: dict[str, int] | None = None,
    adapters: dict[str, Any] | None = None,
) -> Path:
    """Writes ``directory/manifest.json`` for the distill job, over ``directory/learnings.jsonl``, durably.

    ``store_range`` is the hive's own record of the seqs the round took (the job ignores it): a round.json
    lost to a crash is rebuilt as failed with that range.
    """
    manifest = {
        "round_id": round_id,
        "base_core": str(base_core.resolve()),
        "out_dir": str((directory / "out").resolve()),
        "learnings": str((directory / "learnings.jsonl").resolve()),
        "replay": str(replay.resolve()) if replay is not None else None,
        "skills": skill_specs,
        "distill": distill,
        "eval": eval_,
        "mlflow": mlflow,
        "lineage": lineage,
        "adapters": adapters,
    }
    if store_range is not None:
        manifest["store_range"] = store_range
    path = directory / "manifest.json"
    durable.write_text(path, json.dumps(manifest, indent=2))
    return path


def write_learnings(path: Path, learnings: list[Learning]) -> None:
    """Writes one Learning per line, atomically and durably."""
    durable.write_lines(path, [learning.model_dump_json() for learning in learnings])


ReleaseFn = Callable[[int, "RoundRecord"], None]
JobEndFn = Callable[["RoundRecord"], None]


def next_core_version(settings: HiveSettings, registry: CoreRegistry) -> int:
    """One above every core the hive has, registered or on disk: a version is never made twice, even
    after a rollback made an older core champion again."""
    registered = [row["core_version"] for row in registry.list_versions() if row["core_version"] is not None]
    on_disk = [int(p.name[1:]) for p in settings.cores_dir.glob("v*") if p.name[1:].isdigit()]
    return max([*registered, *on_disk], default=-1) + 1


def run_round(
    settings: HiveSettings,
    book: RoundBook,
    registry: CoreRegistry,
    record: RoundRecord,
    on_progress: ProgressFn | None = None,
    release: ReleaseFn | None = None,
    cancel: threading.Event | None = None,
    after_job: JobEndFn | None = None,
) -> RoundRecord:
    """Distills, evaluates the champion on the same held-out tasks, gates, registers and releases a passing core.

    Calling it again on a round that was interrupted resumes it: the distill job restarts from its last
    checkpoint, and a candidate already registered is not registered twice. ``release(version, record)``
    makes the registered core champion and publishes it; without it the core is only registered.
    The record ends ``released`` (registered, and released when ``release`` is given), ``rejected``
    (with the gate's reasons), ``cancelled`` (``cancel`` was set) or ``failed`` (with the error).
    ``after_job(record)`` runs once the distill job has ended, whether it succeeded or not, before the
    record is saved (the round runner quarantines what the job could not use).
    """
    # The launcher is a subprocess: the hive never imports the distill job's training code.
    from distill.launch import DistillCancelled, DistillError
    from distill.launch import run_round as launch

    started = time.monotonic()
    directory = book.path(record.id)
    registered = record.candidate_version is not None and registry.has_version(record.candidate_version)
    if not registered:
        record.state = "distilling"
        book.save(record)

        try:
            metrics = launch(
                directory / "manifest.json",
                on_progress=on_progress,
                timeout_s=settings.distill.timeout_s,
                cancel=cancel,
            )
        except DistillCancelled:
            return end_round(book, record, "cancelled", "cancelled by `hive round cancel`", started)
        except DistillError as err:
            if after_job is not None:
                after_job(record)
            end_round(book, record, "failed", f"{err}\n{err.log_tail[-2000:]}", started)
            raise RoundFailed(f"round {record.id} failed: {err}") from err
        if after_job is not None:
            after_job(record)
        record.distill = {
            k: metrics[k]
            for k in ("steps", "first_loss", "final_loss", "tokens_per_s", "wall_s", "teacher_skipped", "unusable")
            if k in metrics
        }
        record.eval = dict(metrics["eval"])
        try:
            skills = load_skills([skill_catalog(settings.skills)[s] for s in record.skills])
        except (SkillLoadError, KeyError) as err:
            end_round(book, record, "failed", f"cannot load the round's skills: {err}", started)
            raise RoundFailed(f"round {record.id} failed: {record.error}") from err
        champion = load_core(core_dir(settings, record.base_version))
        record.champion_eval = evaluate_skills(champion, skills, settings.gate.eval_tasks, settings.gate.eval_seed)
        decision = decide(record.eval, record.champion_eval, settings.gate.max_regression)
        record.gate_reasons = decision.reasons
        if not decision.passed:
            log.warning("round %s rejected: %s", record.id, "; ".join(decision.reasons))
            return end_round(book, record, "rejected", None, started)
        if cancel is not None and cancel.is_set():
            return end_round(book, record, "cancelled", "cancelled by `hive round cancel` before registration", started)
        version = next_core_version(settings, registry)
        target = core_dir(settings, version)
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(directory / "out" / "core", target)
        core = existing_core(settings, version)
        # Saved before registering: a hive killed after log_core finds the version and does not register twice.
        record.candidate_version = version
        book.save(record)
        registry.log_core(
            core.directory,
            version,
            core.sha256,
            metrics={f"eval_{k}": v for k, v in record.eval.items()},
            run_id=metrics.get("mlflow_run_id"),  # the core's artifacts sit beside the run that trained it
            round_id=record.id,
        )
    assert record.candidate_version is not None
    if release is not None:
        try:
            release(record.candidate_version, record)
        except Exception as err:
            # Whatever the registry or the broker raised, the round must not be left looking unfinished.
            error = (
                f"core v{record.candidate_version} passed the gate and is registered, but its release failed: "
                f"{err!r}; release it with `hive core promote {record.candidate_version}`"
            )
            end_round(book, record, "failed", error, started)
            raise RoundFailed(f"round {record.id}: {error}") from err
    return end_round(book, record, "released", None, started)


def end_round(
    book: RoundBook, record: RoundRecord, state: RoundState, error: str | None, started: float | None = None
) -> RoundRecord:
    """Ends the record in ``state`` (with ``error``) and saves it; ``started`` (monotonic) adds this run's
    time to ``wall_s``."""
    record.state, record.error = state, error
    if started is not None:
        record.wall_s += time.monotonic() - started
    record.ended_at = time.time()
    book.save(record)
    return record
