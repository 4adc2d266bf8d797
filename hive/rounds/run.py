"""Running a round: distill it under DeepSpeed, gate its figures, register and release a passing core."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable

from hive.config import HiveSettings
from hive.cores.files import core_dir, existing_core
from hive.cores.gate import decide
from hive.cores.registry import CoreRegistry
from hive.rounds.book import RoundBook, RoundFailed, RoundRecord, end_round
from hive.rounds.progress import ProgressFn

log = logging.getLogger(__name__)

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
    """Distills, gates, registers and releases a passing core.

    The distill job reports the candidate's per-skill accuracy (``eval``) and its base core's on the same
    held-out tasks (``base_eval``); the gate compares the two, and a job that reports no ``base_eval`` fails
    the round.

    Calling it again on a round that was interrupted resumes it: the distill job restarts from its last
    checkpoint, and a candidate already registered is not registered twice. ``release(version, record)``
    makes the registered core champion and publishes it; without it the core is only registered.
    The record ends ``released`` (registered, and released when ``release`` is given), ``rejected``
    (with the gate's reasons), ``cancelled`` (``cancel`` was set) or ``failed`` (with the error).
    ``after_job(record)`` runs once the distill job has ended, whether it succeeded or not, before the
    record is saved (the round runner quarantines what the job could not use).
    """
    # The launcher is a subprocess: the hive never imports the distill job's training code.
    from distill.launch import DistillCancelled, DistillError, launch_job

    started = time.monotonic()
    directory = book.path(record.id)
    registered = record.candidate_version is not None and registry.has_version(record.candidate_version)
    if not registered:
        record.state = "distilling"
        book.save(record)

        job_started = time.monotonic()
        try:
            metrics = launch_job(
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
            for k in (
                "steps",
                "first_loss",
                "final_loss",
                "tokens_per_s",
                "wall_s",
                "teacher_skipped",
                "unusable",
                "screen",
                "train_s",
            )
            if k in metrics
        }
        # The distill job as the hive waited for it: launcher, ranks, training, saving and evaluation. The round's
        # wall time beyond it is the hive's own part (opening, gating, registering, releasing).
        record.distill["job_s"] = round(time.monotonic() - job_started, 3)
        for item in metrics.get("screen", {}).get("excluded", []):
            log.warning(
                "round %s left out agent %s's %d learnings of %s: the base core agrees with %.2f of them, below %.2f",
                record.id,
                item["agent"],
                item["learnings"],
                item["skill"],
                item["agreement"],
                item["floor"],
            )
        record.eval = dict(metrics["eval"])
        if "base_eval" not in metrics:
            error = "the distill job reported no base_eval: the gate has no figures of the base core to compare with"
            end_round(book, record, "failed", error, started)
            raise RoundFailed(f"round {record.id} failed: {error}")
        # The job evaluated the base core (the champion the round started from) on the candidate's held-out
        # tasks: the hive compares two sets of figures and never loads a model itself.
        record.champion_eval = dict(metrics["base_eval"])
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
