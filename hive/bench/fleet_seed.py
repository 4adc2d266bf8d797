"""One seed of ``hive bench fleet``: specialists, the core's rounds and their ablations, merges, multitask, KD."""

from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.model import load_core
from agents.tokenizer import VOCAB_SIZE
from distill.manifest import write_learnings
from hive.bench.fleet_arms import CoreStart, merge_arm, publish_specialist, train_multitask, train_specialist
from hive.bench.recipe import arm_config, describe_recipe
from hive.bench.synthetic import core_signals
from hive.rounds.open import sample_replay, write_manifest
from streams import durable
from streams.events import Learning, TeacherSignal

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from hive.bench.fleet import FleetBenchPlan
    from hive.config import DistillSettings

PhaseFn = Callable[[str], None]
# Under a seed's directory: each final specialist, as its agent would save it (its learnings' claim checks).
SPECIALISTS = "specialists"
# The core and its two ablations: the same rounds, data and replay; only the loss weights differ.
VARIANTS: dict[str, dict[str, float]] = {
    "core": {},
    "core_kd_only": {"ce_weight": 0.0},
    "core_ce_only": {"kd_weight": 0.0},
}


@dataclass(frozen=True)
class KdArm:
    """One arm of the KD comparison: top-``k`` signals, with the residual bucket or renormalised, at a temperature."""

    k: int
    renormalise: bool = False
    temperature: float = 1.0

    @property
    def name(self) -> str:
        suffix = ("-renorm" if self.renormalise else "") + (f"-t{self.temperature:g}" if self.temperature != 1 else "")
        return f"top{self.k}{suffix}"

    def overrides(self) -> dict[str, Any]:
        return {"kd_residual": not self.renormalise, "temperature": self.temperature}


KD_ARM = re.compile(r"top(?P<k>[1-9]\d*)(?P<renorm>-renorm)?(?:-t(?P<t>\d+(?:\.\d+)?))?")


def parse_kd_arm(spec: str) -> KdArm:
    """``top32``, ``top16-renorm``, ``top16-t2``, ``top64-renorm-t2``: a KD comparison arm; anything else is refused."""
    match = KD_ARM.fullmatch(spec)
    if match is None:
        raise ValueError(f"KD arm {spec!r}: write topK, optionally -renorm and -tT (e.g. top32, top16-renorm-t2)")
    k, temperature = int(match["k"]), float(match["t"] or 1.0)
    if k > VOCAB_SIZE:
        raise ValueError(f"KD arm {spec!r}: k above the vocabulary ({VOCAB_SIZE})")
    if temperature <= 0:
        raise ValueError(f"KD arm {spec!r}: the temperature must be positive")
    return KdArm(k, match["renorm"] is not None, temperature)


def _mean(scores: dict[str, float]) -> float:
    return sum(scores.values()) / len(scores)


@dataclass
class SeedRun:
    """What one seed measured: accuracy per method and skill, the core's rounds, budgets and training streams."""

    seed: int
    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    forgetting: float = 0.0
    budget: dict[str, dict[str, Any]] = field(default_factory=dict)
    streams: dict[str, dict[str, set[str]]] = field(default_factory=dict)
    merge_params: dict[str, dict[str, float]] = field(default_factory=dict)
    kd_compare: dict[str, Any] = field(default_factory=dict)
    tuning: dict[str, Any] = field(default_factory=dict)
    wall_s: dict[str, float] = field(default_factory=dict)


RUN_FILE = "run.json"


def save_seed_run(run: SeedRun, path: Path, fingerprint: str) -> None:
    """Writes what a finished seed measured, whole, with the plan's fingerprint: ``--resume`` reads it back."""
    document = asdict(run) | {
        "streams": {arm: {skill: sorted(p) for skill, p in by.items()} for arm, by in run.streams.items()},
        "fingerprint": fingerprint,
    }
    durable.write_text(path, json.dumps(document))


def load_seed_run(path: Path, fingerprint: str) -> SeedRun | None:
    """The seed's saved run when it was measured under the same plan (``fingerprint``), else None."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        log.warning("%s cannot be read (%s): the seed runs again", path, err)
        return None
    if not isinstance(document, dict) or document.pop("fingerprint", None) != fingerprint:
        log.warning("%s was measured under another plan: the seed runs again", path)
        return None
    try:
        streams = {arm: {skill: set(p) for skill, p in by.items()} for arm, by in document.pop("streams").items()}
        return SeedRun(**document, streams=streams)
    except (TypeError, AttributeError, KeyError) as err:
        log.warning("%s is not a seed's run (%s): the seed runs again", path, err)
        return None


def _write_round(
    directory: Path,
    base_dir: Path,
    learnings: list[Learning],
    replay: list[Learning],
    skill_specs: list[str],
    distill: dict[str, Any],
    plan: FleetBenchPlan,
    specialists_dir: Path,
) -> Path:
    """One round of the real distill job, written as the hive writes it; returns its manifest. The job may follow
    the claim checks of the specialists saved under ``specialists_dir`` (``teacher="latest"``)."""
    directory.mkdir(parents=True, exist_ok=True)
    write_learnings(directory / "learnings.jsonl", learnings)
    replay_path = None
    if replay:
        replay_path = directory / "replay.jsonl"
        write_learnings(replay_path, replay)
    return write_manifest(
        directory,
        # Named by its trajectory too ("core_kd_only-round2"): rounds that share a launch are told apart in its errors.
        f"{directory.parent.name}-{directory.name}",
        base_dir,
        replay_path,
        skill_specs,
        distill,
        eval_={"tasks": plan.eval_tasks},
        adapters={"roots": [specialists_dir]},
    )


def _with_signal(learnings: list[Learning], teacher, k: int) -> list[Learning]:
    """The same learnings with the final specialist's signal at top-k: the KD comparison's only variable."""
    prompts = [lr.prompt for lr in learnings]
    answers = [lr.learned_answer() for lr in learnings]
    out = []
    for learning, (ids, lps) in zip(learnings, core_signals(teacher, prompts, answers, k, chunk=64), strict=True):
        over = learning.teacher.over if learning.teacher else "correction"
        signal = TeacherSignal(k=k, over=over, token_ids=ids, logprobs=lps)
        out.append(learning.model_copy(update={"teacher": signal}))
    return out


@dataclass(frozen=True)
class Curriculum:
    """What every trajectory of the core's rounds in one seed shares: skills arrive group by group, from core v0,
    with the specialists' learnings; earlier learnings are replayed."""

    seed: int
    groups: list[list[str]]
    learnings_of: dict[str, list[Learning]]
    spec_of: dict[str, str]
    core0_dir: Path
    workdir: Path


@dataclass(frozen=True)
class Trajectory:
    """One trajectory of the core's rounds: the directory it is written under, its distill settings and the loss
    weights it overrides (an ablation's)."""

    label: str
    distill: DistillSettings
    overrides: dict[str, float] = field(default_factory=dict)


@dataclass
class RoundsRun:
    """What a trajectory's rounds left: its final core, each round's report, the replayed prompts per skill, the
    rows per skill (new and replay) its jobs trained on, and each round's distill settings as the manifest gave
    them."""

    final_dir: Path
    rounds: list[dict[str, Any]] = field(default_factory=list)
    replayed: dict[str, set[str]] = field(default_factory=dict)
    rows: Counter[str] = field(default_factory=Counter)
    settings: list[dict[str, Any]] = field(default_factory=list)


def _rounds(
    trajectories: list[Trajectory], plan: FleetBenchPlan, course: Curriculum, phase: PhaseFn
) -> dict[str, RoundsRun]:
    """The continual rounds of every trajectory, side by side: round r of all of them is one launch of the distill
    job (``launch_jobs``), which trains them in turn in the same ranks. Returns each trajectory's run by label."""
    from distill.launch import launch_jobs

    names = [n for group in course.groups for n in group]
    runs = {t.label: RoundsRun(course.core0_dir, replayed={n: set() for n in names}) for t in trajectories}
    earlier: list[Learning] = []
    taught: list[str] = []
    for r, group in enumerate(course.groups):
        taught += group
        labels = ", ".join(t.label for t in trajectories)
        phase(f"  round {r + 1}/{len(course.groups)}: distilling {', '.join(group)} ({labels})")
        learnings = [lr for n in group for lr in course.learnings_of[n]]
        replays, manifests = [], []
        for t in trajectories:
            replay = sample_replay(earlier, t.distill.replay_size, seed=f"{course.seed}:round{r + 1}")
            distill = t.distill.for_round(r == 0) | {"seed": course.seed} | t.overrides
            directory = course.workdir / t.label / f"round{r + 1}"
            specs = [course.spec_of[n] for n in taught]
            specialists = course.workdir / SPECIALISTS
            base = runs[t.label].final_dir
            manifests.append(_write_round(directory, base, learnings, replay, specs, distill, plan, specialists))
            replays.append(replay)
        for t, replay, manifest, metrics in zip(trajectories, replays, manifests, launch_jobs(manifests), strict=True):
            run = runs[t.label]
            run.final_dir = manifest.parent / "out" / "core"
            for learning in replay:
                run.replayed[learning.skill].add(learning.prompt)
            for skill, counts in metrics["rows_per_skill"].items():
                run.rows[skill] += counts["new"] + counts["replay"]
            run.settings.append(t.distill.for_round(r == 0) | t.overrides)
            run.rounds.append(
                {
                    "round": r + 1,
                    "new_skills": group,
                    "learnings": len(learnings),
                    "replay": len(replay),
                    "eval": metrics["eval"],
                    "final_loss": metrics.get("final_loss"),
                    "rows_per_skill": metrics["rows_per_skill"],
                    "wall_s": metrics.get("wall_s"),
                }
            )
        earlier.extend(learnings)
    return runs


def _core_budget(plan: FleetBenchPlan, rows: Counter[str], settings: list[dict[str, Any]]) -> dict[str, Any]:
    recipes = [describe_recipe(arm_config(plan.distill, s["steps"], s["lr"], s["batch_size"])) for s in settings]
    return {
        "steps": sum(s["steps"] for s in settings),
        "rows_per_skill": dict(rows),
        "optimizer": "; ".join(dict.fromkeys(r["optimizer"] for r in recipes)),
        "schedule": "per round: " + "; ".join(dict.fromkeys(r["schedule"] for r in recipes)),
        "loss": {k: settings[0][k] for k in ("kd_weight", "ce_weight", "retention_weight")},
    }


def _tune_on_validation(
    plan: FleetBenchPlan, course: Curriculum, skills: list[object], start: CoreStart, phase: PhaseFn
) -> dict[str, Any]:
    """Runs the core's rounds at every (replay_size, continual_lr) of the plan's grid, side by side, and picks the
    pair with the best mean accuracy on validation prompts, never on test ones. Ties go to the earlier pair of the
    grid."""
    from hive.bench.fleet_arms import VALIDATION_SEED

    points = [
        {"replay_size": replay_size, "continual_lr": continual_lr}
        for replay_size in plan.replay_grid
        for continual_lr in plan.continual_lr_grid
    ]
    trials = [
        Trajectory(f"tune_replay{p['replay_size']}_lr{p['continual_lr']:g}", plan.distill.model_copy(update=p))
        for p in points
    ]
    runs = _rounds(trials, plan, course, phase)
    sweep = []
    for point, trial in zip(points, trials, strict=True):
        scores = start.evaluate(
            load_core(runs[trial.label].final_dir), skills, plan.val_tasks, seed=VALIDATION_SEED, split="validation"
        )
        sweep.append(point | {"validation": scores, "mean": sum(scores.values()) / len(scores)})
    best = max(sweep, key=lambda p: float(p["mean"]))  # type: ignore[arg-type]  # max keeps the first of equal means
    return {"seed": course.seed, "chosen": {k: best[k] for k in ("replay_size", "continual_lr")}, "sweep": sweep}


def run_seed(
    plan: FleetBenchPlan,
    seed: int,
    skills: list[object],
    start: CoreStart,
    workdir: Path,
    phase: PhaseFn,
    tune: bool = False,
) -> SeedRun:
    """Every arm of the bench for one seed, from the shared core v0 (``start``). With ``tune``, the core's
    ``replay_size`` and ``continual_lr`` are first chosen on validation prompts (``SeedRun.tuning``) and used by
    every variant."""
    from distill.launch import launch_jobs
    from hive.bench.fleet import MERGES, forgetting, multitask_steps, split_into_rounds

    run = SeedRun(seed)
    names = [s.name for s in skills]  # type: ignore[attr-defined]
    spec_of = dict(zip(names, plan.skills, strict=True))
    groups = split_into_rounds(names, plan.rounds)

    t = time.monotonic()
    specialist_recipe = arm_config(plan.distill, plan.specialist_steps, plan.lr, plan.batch_size)
    specialists = {}
    for i, skill in enumerate(skills):
        phase(f"  specialist {i + 1}/{len(skills)}: learning {names[i]} on the job ({plan.specialist_steps} steps)")
        specialists[names[i]] = train_specialist(
            start.model,
            skill,
            f"agent-{names[i]}",
            plan.specialist_steps,
            plan.batch_size,
            plan.publish_per_step,
            plan.lr,
            plan.topk,
            seed,
            specialist_recipe,
            start.codec,
        )
    for name, trained in specialists.items():
        publish_specialist(trained, workdir / SPECIALISTS / name)
    run.wall_s["specialists"] = time.monotonic() - t
    run.budget["specialist"] = {
        "steps": plan.specialist_steps,
        "rows_per_skill": {n: len(specialists[n].tasks) for n in names},
        **describe_recipe(specialist_recipe),
    }

    learnings_of = {n: specialists[n].learnings for n in names}
    course = Curriculum(seed, groups, learnings_of, spec_of, start.directory, workdir)
    if tune:
        t = time.monotonic()
        run.tuning = _tune_on_validation(plan, course, skills, start, phase)
        plan = replace(plan, distill=plan.distill.model_copy(update=run.tuning["chosen"]))
        run.wall_s["tuning"] = time.monotonic() - t
    variants = list(VARIANTS) if plan.ablations else ["core"]
    t = time.monotonic()
    trajectories = _rounds([Trajectory(v, plan.distill, VARIANTS[v]) for v in variants], plan, course, phase)
    for variant in variants:
        trajectory = trajectories[variant]
        run.accuracy[variant] = start.evaluate(load_core(trajectory.final_dir), skills, plan.eval_tasks)
        run.budget[variant] = _core_budget(plan, trajectory.rows, trajectory.settings)
    core = trajectories["core"]
    run.rounds = core.rounds
    taught_in = {n: r for r, group in enumerate(groups) for n in group}
    run.forgetting = forgetting([r["eval"] for r in core.rounds], taught_in)
    core_rows, replayed = dict(core.rows), core.replayed
    # The core and its ablations train side by side, one launch per round: their time is one figure.
    run.wall_s["rounds"] = time.monotonic() - t

    phase("  evaluating base and specialists on held-out tasks")
    run.accuracy["base"] = start.evaluate(start.model, skills, plan.eval_tasks)
    run.accuracy["specialist"] = {
        n: start.evaluate(specialists[n].model, [s], plan.eval_tasks)[n] for n, s in zip(names, skills, strict=True)
    }

    t = time.monotonic()
    weights = [specialists[n].weights() for n in names]  # a LoRA specialist's adapter merged into its core
    for method in MERGES:
        phase(f"  merging baseline: {method}")
        model, params = merge_arm(method, start.model, weights, skills, plan.val_tasks, start.codec)
        run.accuracy[method] = start.evaluate(model, skills, plan.eval_tasks)
        run.merge_params[method] = params
    run.wall_s["merges"] = time.monotonic() - t

    t = time.monotonic()
    steps = multitask_steps(core_rows, len(names), plan.distill.batch_size)
    phase(f"  multitask: {steps} steps, at least the core's rows of every skill")
    multitask_recipe = arm_config(plan.distill, steps, plan.distill.lr, plan.distill.batch_size)
    multitask = train_multitask(
        start.model,
        {n: specialists[n].tasks for n in names},
        steps,
        plan.distill.batch_size,
        seed,
        multitask_recipe,
        start.codec,
    )
    run.accuracy["multitask"] = start.evaluate(multitask.model, skills, plan.eval_tasks)
    run.budget["multitask"] = {
        "steps": steps,
        "rows_per_skill": dict(multitask.rows),
        **describe_recipe(multitask_recipe),
    }
    run.wall_s["multitask"] = time.monotonic() - t

    kd_prompts: dict[str, set[str]] = {n: set() for n in names}
    if plan.kd_compare_per_skill > 0:
        t = time.monotonic()
        arms = [KdArm(plan.topk), KdArm(VOCAB_SIZE), *(parse_kd_arm(v) for v in plan.kd_variants)]
        arms = list(dict.fromkeys(arms))
        phase(
            f"  KD comparison: one round over every skill per arm ({', '.join(a.name for a in arms)}), signals from "
            "the final specialists"
        )
        manifests = []
        for arm in arms:
            sample = []
            for n in names:
                pool = specialists[n].learnings[-plan.kd_compare_per_skill :]
                sample += _with_signal(pool, specialists[n].model, arm.k)
                kd_prompts[n].update(lr.prompt for lr in pool)
            distill = plan.distill.for_round(True) | {"seed": seed, "steps": plan.kd_compare_steps} | arm.overrides()
            specs = [spec_of[n] for n in names]
            directory = workdir / f"kd_{arm.name}"
            manifests.append(
                _write_round(directory, start.directory, sample, [], specs, distill, plan, workdir / SPECIALISTS)
            )
        for arm, metrics in zip(arms, launch_jobs(manifests), strict=True):
            run.kd_compare[arm.name] = metrics["eval"]
        full = _mean(run.kd_compare[KdArm(VOCAB_SIZE).name])
        # Full-vocabulary KD minus each arm's, mean accuracy: the default top-k's is the headline.
        run.kd_compare["gaps"] = {a.name: full - _mean(run.kd_compare[a.name]) for a in arms if a.k != VOCAB_SIZE}
        run.kd_compare["gap_topk_vs_full"] = run.kd_compare["gaps"][KdArm(plan.topk).name]
        run.wall_s["kd_compare"] = time.monotonic() - t

    run.streams = {
        "specialists": {n: {p for p, _ in specialists[n].tasks} for n in names},
        "learnings": {n: {lr.prompt for lr in specialists[n].learnings} for n in names},
        "replay": replayed,
        "multitask": multitask.prompts,
        "kd_compare": kd_prompts,
    }
    return run
