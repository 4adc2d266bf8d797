"""One seed of ``hive bench fleet``: specialists, the core's rounds and their ablations, merges, multitask, KD."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.model import load_core
from agents.tokenizer import VOCAB_SIZE
from distill.manifest import write_learnings
from hive.bench.fleet_arms import CoreStart, merge_arm, publish_specialist, train_multitask, train_specialist
from hive.bench.recipe import arm_config, describe_recipe
from hive.bench.synthetic import core_signals
from hive.rounds.open import sample_replay, write_manifest
from streams.events import Learning, TeacherSignal

if TYPE_CHECKING:
    from hive.bench.fleet import FleetBenchPlan

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


def _distill(
    directory: Path,
    base_dir: Path,
    learnings: list[Learning],
    replay: list[Learning],
    skill_specs: list[str],
    plan: FleetBenchPlan,
    seed: int,
    first: bool,
    overrides: dict[str, Any],
    specialists_dir: Path,
) -> tuple[Path, dict[str, Any]]:
    """One round of the real distill job, under the DeepSpeed launcher; it may follow the claim checks of the
    specialists saved under ``specialists_dir``."""
    from distill.launch import launch_job

    directory.mkdir(parents=True, exist_ok=True)
    write_learnings(directory / "learnings.jsonl", learnings)
    replay_path = None
    if replay:
        replay_path = directory / "replay.jsonl"
        write_learnings(replay_path, replay)
    distill = plan.distill.for_round(first) | {"seed": seed} | overrides
    manifest = write_manifest(
        directory,
        directory.name,
        base_dir,
        replay_path,
        skill_specs,
        distill,
        eval_={"tasks": plan.eval_tasks},
        # The specialists' claim checks, followed under teacher="latest" (publish_specialist).
        adapters={"roots": [specialists_dir]},
    )
    return directory / "out" / "core", launch_job(manifest)


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


def _rounds(
    variant: str,
    plan: FleetBenchPlan,
    seed: int,
    groups: list[list[str]],
    learnings_of: dict[str, list[Learning]],
    spec_of: dict[str, str],
    core0_dir: Path,
    workdir: Path,
    phase: PhaseFn,
    label: str | None = None,
) -> tuple[Path, list[dict[str, Any]], dict[str, set[str]], Counter[str], list[dict[str, Any]]]:
    """The continual rounds of one variant: skills arrive group by group, earlier learnings replayed. ``label``
    names its directory and progress lines (default: the variant).

    Returns the final core, the rounds, the replayed prompts per skill, the rows per skill (new and replay) that
    the jobs trained on, and each round's distill settings as the manifest gave them.
    """
    names = [n for group in groups for n in group]
    base_dir = core0_dir
    earlier: list[Learning] = []
    replayed: dict[str, set[str]] = {n: set() for n in names}
    rows: Counter[str] = Counter()
    rounds: list[dict[str, Any]] = []
    settings: list[dict[str, Any]] = []
    taught: list[str] = []
    for r, group in enumerate(groups):
        taught += group
        phase(f"  {label or variant} round {r + 1}/{len(groups)}: distilling {', '.join(group)}")
        learnings = [lr for n in group for lr in learnings_of[n]]
        replay = sample_replay(earlier, plan.distill.replay_size, seed=f"{seed}:round{r + 1}")
        for learning in replay:
            replayed[learning.skill].add(learning.prompt)
        base_dir, metrics = _distill(
            workdir / (label or variant) / f"round{r + 1}",
            base_dir,
            learnings,
            replay,
            [spec_of[n] for n in taught],
            plan,
            seed,
            first=r == 0,
            overrides=VARIANTS[variant],
            specialists_dir=workdir / SPECIALISTS,
        )
        for skill, counts in metrics["rows_per_skill"].items():
            rows[skill] += counts["new"] + counts["replay"]
        settings.append(plan.distill.for_round(r == 0) | VARIANTS[variant])
        rounds.append(
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
    return base_dir, rounds, replayed, rows, settings


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
    plan: FleetBenchPlan,
    seed: int,
    skills: list[object],
    groups: list[list[str]],
    learnings_of: dict[str, list[Learning]],
    spec_of: dict[str, str],
    start: CoreStart,
    workdir: Path,
    phase: PhaseFn,
) -> dict[str, Any]:
    """Runs the core's rounds at every (replay_size, continual_lr) of the plan's grid and picks the pair with the
    best mean accuracy on validation prompts, never on test ones. Ties go to the earlier pair of the grid."""
    from hive.bench.fleet_arms import VALIDATION_SEED

    sweep = []
    for replay_size in plan.replay_grid:
        for continual_lr in plan.continual_lr_grid:
            point = {"replay_size": replay_size, "continual_lr": continual_lr}
            trial = replace(plan, distill=plan.distill.model_copy(update=point))
            label = f"tune_replay{replay_size}_lr{continual_lr:g}"
            final_dir, *_ = _rounds(
                "core", trial, seed, groups, learnings_of, spec_of, start.directory, workdir, phase, label
            )
            scores = start.evaluate(
                load_core(final_dir), skills, plan.val_tasks, seed=VALIDATION_SEED, split="validation"
            )
            sweep.append(point | {"validation": scores, "mean": sum(scores.values()) / len(scores)})
    best = max(sweep, key=lambda p: float(p["mean"]))  # type: ignore[arg-type]  # max keeps the first of equal means
    return {"seed": seed, "chosen": {k: best[k] for k in ("replay_size", "continual_lr")}, "sweep": sweep}


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
    if tune:
        t = time.monotonic()
        run.tuning = _tune_on_validation(plan, seed, skills, groups, learnings_of, spec_of, start, workdir, phase)
        plan = replace(plan, distill=plan.distill.model_copy(update=run.tuning["chosen"]))
        run.wall_s["tuning"] = time.monotonic() - t
    variants = list(VARIANTS) if plan.ablations else ["core"]
    core_rows: dict[str, int] = {}
    replayed: dict[str, set[str]] = {}
    for variant in variants:
        t = time.monotonic()
        final_dir, rounds, replay_prompts, rows, settings = _rounds(
            variant, plan, seed, groups, learnings_of, spec_of, start.directory, workdir, phase
        )
        run.accuracy[variant] = start.evaluate(load_core(final_dir), skills, plan.eval_tasks)
        run.budget[variant] = _core_budget(plan, rows, settings)
        if variant == "core":
            run.rounds = rounds
            curves = [r["eval"] for r in rounds]
            taught_in = {n: r for r, group in enumerate(groups) for n in group}
            run.forgetting = forgetting(curves, taught_in)
            core_rows, replayed = dict(rows), replay_prompts
        run.wall_s[variant] = time.monotonic() - t

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
        for arm in dict.fromkeys(arms):
            phase(f"  KD comparison: one round over every skill, {arm.name}, signals from the final specialists")
            sample = []
            for n in names:
                pool = specialists[n].learnings[-plan.kd_compare_per_skill :]
                sample += _with_signal(pool, specialists[n].model, arm.k)
                kd_prompts[n].update(lr.prompt for lr in pool)
            _, metrics = _distill(
                workdir / f"kd_{arm.name}",
                start.directory,
                sample,
                [],
                [spec_of[n] for n in names],
                plan,
                seed,
                first=True,
                overrides={"steps": plan.kd_compare_steps} | arm.overrides(),
                specialists_dir=workdir / SPECIALISTS,
            )
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
