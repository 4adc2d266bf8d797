"""Distillation rounds: open one over new learnings, run it under DeepSpeed, gate it, register it."""

from __future__ import annotations

import json
import logging
import random
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from agents.evaluation import evaluate_skills
from agents.model import load_core
from agents.skills import SkillLoadError, load_skills, skill_catalog
from hive.config import HiveSettings
from hive.cores import CoreFiles, core_dir, existing_core
from hive.gate import decide
from hive.registry import CoreRegistry
from hive.store import LearningStore
from streams.events import Learning

log = logging.getLogger(__name__)

RoundState = Literal["open", "distilling", "released", "rejected", "failed", "cancelled"]
# A round in one of these states is unfinished: running, or interrupted and waiting to resume.
UNFINISHED: tuple[RoundState, ...] = ("open", "distilling")
ProgressFn = Callable[[int, int, float], None]


class RoundError(RuntimeError):
    """A round that cannot be opened or run, with the reason."""


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


_RECORD_FIELDS = frozenset(f.name for f in fields(RoundRecord))


class RoundBook:
    """The rounds of one hive, one directory each under ``HIVE_HOME/rounds``."""

    def __init__(self, directory: Path) -> None:
        # Not created here: readers (`hive round list`, the dashboard) must not leave folders behind.
        self.directory = directory

    def path(self, round_id: str) -> Path:
        return self.directory / round_id

    def save(self, record: RoundRecord) -> None:
        target = self.path(record.id) / "round.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(record), indent=2))
        tmp.replace(target)

    def ids(self) -> list[str]:
        """The ids of the rounds on record, oldest first."""
        return [p.parent.name for p in sorted(self.directory.glob("r*/round.json"))]

    def all(self) -> list[RoundRecord]:
        return [self._load(round_id) for round_id in self.ids()]

    def get(self, round_id: str) -> RoundRecord | None:
        """Round ``round_id``'s record, or None when no round has that id (a path such as ``../x`` included)."""
        return self._load(round_id) if round_id in self.ids() else None

    def _load(self, round_id: str) -> RoundRecord:
        saved = json.loads((self.path(round_id) / "round.json").read_text())
        # A field this hive does not know (one a later version added, or dropped since) is left out.
        return RoundRecord(**{k: v for k, v in saved.items() if k in _RECORD_FIELDS})

    def next_id(self) -> str:
        return f"r{len(self.ids()) + 1:04d}"

    def covered_seq(self) -> int:
        """The highest learning seq that a round has already taken in (released or rejected)."""
        done = [r.upto_seq for r in self.all() if r.state in ("released", "rejected")]
        return max(done, default=0)

    def taught_skills(self) -> list[str]:
        """Every skill a released core was ever taught: the gate checks all of them."""
        return sorted({s for r in self.all() if r.state == "released" for s in r.skills})


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
    settings: HiveSettings, store: LearningStore, book: RoundBook, base: CoreFiles, experiment: str
) -> RoundRecord:
    """Takes every learning stored since the last round into a new round, with its manifest.

    ``experiment`` must already exist with its artifact location under HIVE_HOME: a job that had
    to create it would put its artifacts in ``./mlruns`` of the round directory.
    """
    after = book.covered_seq()
    upto = store.max_seq()
    learnings = store.read(after_seq=after, upto_seq=upto)
    if not learnings:
        raise NoNewLearnings(f"no new learnings after seq {after}")
    skills = sorted({lr.skill for lr in learnings} | set(book.taught_skills()))
    catalog = skill_catalog(settings.skills)
    unknown = [s for s in skills if s not in catalog]
    if unknown:
        raise RoundError(
            f"learnings name skills the hive cannot load: {', '.join(unknown)}; "
            "add their module:attr to HIVE_SKILLS so rounds can evaluate them"
        )
    record = RoundRecord(
        id=book.next_id(),
        state="open",
        base_version=base.version,
        after_seq=after,
        upto_seq=upto,
        learnings=len(learnings),
        per_agent=store.per_agent_counts(after_seq=after, upto_seq=upto),
        skills=skills,
    )
    directory = book.path(record.id)
    directory.mkdir(parents=True, exist_ok=True)
    write_learnings(directory / "learnings.jsonl", learnings)
    replay = None
    if after > 0 and settings.distill.replay_size > 0:
        # Earlier rounds' learnings, so the core keeps being taught what it already knows.
        earlier = store.read(after_seq=0, upto_seq=after)
        sample = sample_replay(earlier, settings.distill.replay_size, f"{settings.distill.seed}:{record.id}")
        if sample:
            replay = directory / "replay.jsonl"
            write_learnings(replay, sample)
    write_manifest(
        directory,
        record.id,
        base.directory,
        replay,
        [catalog[s] for s in record.skills],
        settings.distill.for_round(first=base.version == 0),
        eval_={"tasks": settings.gate.eval_tasks, "seed": settings.gate.eval_seed},
        mlflow={"tracking_uri": settings.mlflow_uri, "experiment": experiment, "run_name": record.id},
        lineage={"after_seq": after, "upto_seq": upto},
        adapters=settings.adapters_manifest(),
    )
    book.save(record)
    return record


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
    adapters: dict[str, Any] | None = None,
) -> Path:
    """Writes ``directory/manifest.json`` for the distill job, over ``directory/learnings.jsonl``."""
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
    path = directory / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2))
    return path


def write_learnings(path: Path, learnings: list[Learning]) -> None:
    with path.open("w") as fh:
        for learning in learnings:
            fh.write(learning.model_dump_json() + "\n")


ReleaseFn = Callable[[int, "RoundRecord"], None]


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
) -> RoundRecord:
    """Distills, evaluates the champion on the same held-out tasks, gates, registers and releases a passing core.

    Calling it again on a round that was interrupted resumes it: the distill job restarts from its last
    checkpoint, and a candidate already registered is not registered twice. ``release(version, record)``
    makes the registered core champion and publishes it; without it the core is only registered.
    The record ends ``released`` (registered, and released when ``release`` is given), ``rejected``
    (with the gate's reasons), ``cancelled`` (``cancel`` was set) or ``failed`` (with the error).
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
            end_round(book, record, "failed", f"{err}\n{err.log_tail[-2000:]}", started)
            raise RoundError(f"round {record.id} failed: {err}") from err
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
            raise RoundError(f"round {record.id} failed: {record.error}") from err
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
            raise RoundError(f"round {record.id}: {error}") from err
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
