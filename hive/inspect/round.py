"""``hive inspect round``: what each agent contributed to a round, and leave-one-agent-out attribution."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from distill.manifest import LearningsError, read_learnings, write_learnings
from hive.inspect.common import InspectInputError, InspectStateError
from hive.rounds.book import RoundBook, RoundRecord
from hive.rounds.open import write_manifest
from hive.rounds.progress import ProgressFn

# Rounds whose candidate was evaluated: the only ones with a full eval to attribute against.
EVALUATED = ("released", "rejected")
LOO_DIR = "loo"
METRICS = "metrics.json"
# Figures a round made before the distill job wrote per-agent metrics lacks; shown as n/a.
AGENT_FIGURES = ("weight", "kd_before", "kd_after", "ce_before", "ce_after")


def load_round(book: RoundBook, round_id: str) -> RoundRecord:
    """The round's record; InspectInputError for a round that does not exist, InspectStateError for one
    whose round.json cannot be read."""
    try:
        record = book.get(round_id)
    except (OSError, json.JSONDecodeError, TypeError) as err:
        raise InspectStateError(f"cannot read {book.path(round_id) / 'round.json'}: {err}") from err
    if record is None:
        raise InspectInputError(f"unknown round {round_id!r}; known: {', '.join(book.ids()) or 'none'}")
    return record


def read_metrics(path: Path) -> dict[str, Any] | None:
    """A distill job's metrics.json, or None when the job never finished."""
    if not path.is_file():
        return None
    try:
        metrics = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise InspectStateError(f"cannot read {path}: {err}") from err
    if not isinstance(metrics, dict):
        raise InspectStateError(f"{path} does not hold a metrics object")
    return metrics


def agent_skills(learnings: Path) -> dict[str, dict[str, int]]:
    """Agent -> skill -> how many of the round's learnings (learnings.jsonl) the agent sent for it."""
    counts: dict[str, Counter[str]] = {}
    if not learnings.is_file():
        return {}
    try:
        items = read_learnings(learnings)
    except LearningsError as err:
        raise InspectStateError(str(err)) from err
    for learning in items:
        counts.setdefault(learning.agent_id, Counter())[learning.skill] += 1
    return {agent: dict(sorted(c.items())) for agent, c in sorted(counts.items())}


def round_contributions(book: RoundBook, record: RoundRecord) -> dict[str, Any]:
    """Per agent: learnings used, teacher weight, KD loss before and after, skills and accuracy deltas.

    Figures missing from a round made before the distill job reported them are None (shown as n/a).
    """
    directory = book.path(record.id)
    metrics = read_metrics(directory / "out" / METRICS) or {}
    per_agent_metrics: dict[str, dict[str, Any]] = metrics.get("per_agent") or {}
    skills_of = agent_skills(directory / "learnings.jsonl")
    evals = {
        skill: {
            "champion": record.champion_eval.get(skill),
            "candidate": record.eval.get(skill),
            "delta": _delta(record.eval.get(skill), record.champion_eval.get(skill)),
        }
        for skill in record.skills
    }
    agents: dict[str, Any] = {}
    for agent in sorted(set(record.per_agent) | set(skills_of) | set(per_agent_metrics)):
        figures = per_agent_metrics.get(agent, {})
        taught = skills_of.get(agent, {})
        agents[agent] = {
            "learnings": record.per_agent.get(agent, 0),
            "examples": figures.get("learnings"),
            **{name: figures.get(name) for name in AGENT_FIGURES},
            "skills": taught,
            "deltas": {skill: evals[skill]["delta"] for skill in taught if skill in evals},
        }
    return {
        "round": record.id,
        "state": record.state,
        "base_version": record.base_version,
        "candidate_version": record.candidate_version,
        "learnings": record.learnings,
        "skills": list(record.skills),
        "eval": evals,
        "per_agent_metrics": bool(per_agent_metrics),
        "agents": agents,
        "leave_one_out": None,
    }


def _delta(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else after - before


@dataclass(frozen=True)
class LooRun:
    """One leave-one-agent-out distillation: ``source`` is ``distilled``, ``cached`` (an earlier run's
    metrics reused) or ``base`` (no learnings were left, so the core would have stayed the base core)."""

    agent: str
    source: str
    steps: int
    eval: dict[str, float]


# The directory of the baseline run over all of the round's learnings; no agent id starts with "_".
REFERENCE = "_all"


def loo_directory(book: RoundBook, record: RoundRecord, agent: str) -> Path:
    return book.path(record.id) / LOO_DIR / agent


def write_loo_round(book: RoundBook, record: RoundRecord, agent: str, steps: int) -> Path | None:
    """Writes ``rounds/R/loo/<agent>/`` (the round's learnings without the agent's, the same replay, and a
    manifest with the round's settings) and returns its manifest; None when no learnings are left.

    The manifest has no MLflow section, so leave-one-out runs stay out of the registry's experiment, and
    no lineage, since the filtered file is not a contiguous range of the store.
    """
    source = book.path(record.id)
    try:
        manifest = json.loads((source / "manifest.json").read_text())
        learnings = read_learnings(source / "learnings.jsonl")
    except (OSError, json.JSONDecodeError, LearningsError) as err:
        raise InspectStateError(f"round {record.id}: cannot read its manifest or learnings: {err}") from err
    kept = [learning for learning in learnings if learning.agent_id != agent]
    if not kept:
        return None
    directory = loo_directory(book, record, agent)
    directory.mkdir(parents=True, exist_ok=True)
    write_learnings(directory / "learnings.jsonl", kept)
    distill = dict(manifest["distill"])
    distill["steps"] = steps
    # DeepSpeed's warmup schedulers need warmup within the run; a shortened run keeps the round's otherwise.
    distill["warmup_steps"] = min(int(distill.get("warmup_steps", 0)), steps)
    replay = manifest.get("replay")
    return write_manifest(
        directory,
        f"{record.id}-loo-{agent}",
        Path(manifest["base_core"]),
        Path(replay) if replay else None,
        list(manifest["skills"]),
        distill,
        eval_=manifest["eval"],
        mlflow=None,
        lineage=None,
        # The same claim checks as the round follows, or its adapter teachers would vanish from the comparison.
        adapters=manifest.get("adapters"),
    )


def round_steps(book: RoundBook, record: RoundRecord) -> int:
    """The distill steps the round itself ran."""
    if record.distill.get("steps"):
        return int(record.distill["steps"])
    try:
        return int(json.loads((book.path(record.id) / "manifest.json").read_text())["distill"]["steps"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise InspectStateError(f"round {record.id}: cannot read its distill steps: {err}") from err


def leave_one_out(
    book: RoundBook,
    record: RoundRecord,
    steps: int | None = None,
    on_agent: Callable[[str, str], None] | None = None,
    on_progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Distills the round once per agent without that agent's learnings, and attributes accuracy to it.

    ``attribution[agent][skill]`` = the baseline's eval minus the leave-one-out eval on the same held-out tasks:
    what the core would lose without that agent. The baseline (``reference``) is the round itself when
    ``steps`` is the round's, else one more run of all its learnings at ``steps``.
    A finished run with the same steps is reused (``cached``).
    ``on_agent(agent, source)`` is called before each agent (source ``run``, ``cached`` or ``base``).
    Raises InspectInputError for a round that was never evaluated, InspectStateError for a run that fails.
    """
    if record.state not in EVALUATED or not record.eval:
        raise InspectInputError(
            f"round {record.id} is {record.state}: leave-one-out needs a round whose candidate was evaluated "
            f"({' or '.join(EVALUATED)})"
        )
    round_steps_ = round_steps(book, record)
    steps = steps or round_steps_
    agents = sorted(record.per_agent) or sorted(agent_skills(book.path(record.id) / "learnings.jsonl"))
    runs: dict[str, LooRun] = {}
    for agent in agents:
        runs[agent] = _loo_run(book, record, agent, steps, on_agent, on_progress)
    # At the round's own steps the round itself is the baseline. At other steps it is not: a shorter run
    # knows less of every skill, which would be read as every agent's contribution. So the baseline is
    # then one more run, of all the round's learnings at the same steps.
    if steps == round_steps_:
        reference = LooRun(REFERENCE, "round", steps, dict(record.eval))
    else:
        reference = _loo_run(book, record, REFERENCE, steps, on_agent, on_progress)
    attribution = {
        agent: {skill: _delta(reference.eval.get(skill), run.eval.get(skill)) for skill in record.skills}
        for agent, run in runs.items()
    }
    return {
        "steps": steps,
        "reference": asdict(reference),
        "runs": {agent: asdict(run) for agent, run in runs.items()},
        "attribution": attribution,
    }


def _loo_run(
    book: RoundBook,
    record: RoundRecord,
    agent: str,
    steps: int,
    on_agent: Callable[[str, str], None] | None,
    on_progress: ProgressFn | None,
) -> LooRun:
    """The round distilled without ``agent``'s learnings (with all of them for REFERENCE), or its cached result."""
    # The launcher is a subprocess: the hive never imports the distill job's training code.
    from distill.launch import DistillError, launch_job

    directory = loo_directory(book, record, agent)
    cached = read_metrics(directory / "out" / METRICS)
    if cached is not None and cached.get("steps") == steps and set(record.skills) <= set(cached.get("eval", {})):
        _call(on_agent, agent, "cached")
        return LooRun(agent, "cached", steps, dict(cached["eval"]))
    # A stale or half-finished run (other steps, a crash) must not be resumed into this one.
    shutil.rmtree(directory / "out", ignore_errors=True)
    manifest = write_loo_round(book, record, agent, steps)
    if manifest is None:
        _call(on_agent, agent, "base")
        return LooRun(agent, "base", 0, dict(record.champion_eval))
    _call(on_agent, agent, "run")
    try:
        metrics = launch_job(manifest, on_progress=on_progress)
    except DistillError as err:
        raise InspectStateError(f"leave-one-out of {agent} in round {record.id} failed: {err}") from err
    return LooRun(agent, "distilled", steps, dict(metrics["eval"]))


def _call(callback: Callable[[str, str], None] | None, agent: str, source: str) -> None:
    if callback is not None:
        callback(agent, source)
