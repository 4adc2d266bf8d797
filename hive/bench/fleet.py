"""``hive bench fleet``: does the distilled core absorb every specialist, keep what it knew, and beat merging?"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agents.evaluation import evaluate_skills
from agents.model import build_core, load_core, save_core
from agents.skills import load_skills
from agents.skills.splits import kind_of
from agents.tokenizer import VOCAB_SIZE
from distill.manifest import write_learnings
from hive.bench.contamination import count_contamination, held_out_prompts
from hive.bench.fleet_arms import merge_arm, train_multitask, train_specialist
from hive.bench.machine import machine_info
from hive.bench.synthetic import core_signals
from hive.config import DistillSettings
from hive.rounds.open import sample_replay, write_manifest
from streams.events import Learning, TeacherSignal

METHODS = ("base", "specialist", "core", "weight_average", "task_arithmetic", "ties", "multitask")
PhaseFn = Callable[[str], None]


@dataclass(frozen=True)
class FleetBenchPlan:
    """What the benchmark runs; the defaults finish in well under 30 minutes on a 2-core CPU."""

    skills: list[str]
    rounds: int = 3
    specialist_steps: int = 400
    batch_size: int = 32
    publish_per_step: int = 8
    lr: float = 3e-3
    topk: int = 16
    # Rounds use the hive's own distill settings, so the bench measures what a deployment runs.
    distill: DistillSettings = field(default_factory=lambda: DistillSettings(steps=400))
    eval_tasks: int = 100
    val_tasks: int = 50
    kd_compare_per_skill: int = 800
    # Long enough that both arms approach their ceiling, so the gap measures the signal, not the noise
    # of two half-trained runs (at 400 steps the two arms differed by 0.045 with morse still at 0.7).
    kd_compare_steps: int = 800
    seed: int = 0

    @property
    def multitask_steps(self) -> int:
        # The same optimizer steps as the core gets over all its rounds: the comparison is per step.
        return self.distill.steps * self.rounds


def split_into_rounds(names: list[str], rounds: int) -> list[list[str]]:
    """Skills arrive over ``rounds`` rounds, new specialists joining later; the first takes any extra."""
    if rounds < 1 or rounds > len(names):
        raise ValueError(f"{len(names)} skills cannot arrive over {rounds} rounds: need 1 <= rounds <= skills")
    extra = len(names) - rounds
    groups = [names[: extra + 1]]
    groups += [[n] for n in names[extra + 1 :]]
    return groups


def _distill(
    workdir: Path,
    name: str,
    base_dir: Path,
    learnings: list[Learning],
    replay: list[Learning],
    skill_specs: list[str],
    plan: FleetBenchPlan,
    first: bool,
    steps: int | None = None,
) -> tuple[Path, dict[str, Any]]:
    """One round of the real distill job, under the DeepSpeed launcher."""
    from distill.launch import launch_job

    directory = workdir / name
    directory.mkdir(parents=True, exist_ok=True)
    write_learnings(directory / "learnings.jsonl", learnings)
    replay_path = None
    if replay:
        replay_path = directory / "replay.jsonl"
        write_learnings(replay_path, replay)
    distill = plan.distill.for_round(first) | {"seed": plan.seed, "steps": steps or plan.distill.steps}
    manifest = write_manifest(
        directory, name, base_dir, replay_path, skill_specs, distill, eval_={"tasks": plan.eval_tasks}
    )
    metrics = launch_job(manifest)
    return directory / "out" / "core", metrics


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


def _mean(scores: dict[str, float]) -> float:
    return sum(scores.values()) / len(scores)


def _forgetting(curves: list[dict[str, float]], taught_in: dict[str, int]) -> float:
    """The largest drop of any skill below its accuracy in the round that taught it, over later rounds."""
    worst = 0.0
    for skill, first in taught_in.items():
        learned = curves[first][skill]
        for later in curves[first + 1 :]:
            worst = max(worst, learned - later[skill])
    # Accuracies are multiples of 1/tasks: 0.99 - 0.97 must read 0.02, not 0.020000000000000018.
    return round(worst, 9)


def fresh_workdir(workdir: Path) -> None:
    """Empties the bench's own directory: a run never meets an earlier run's rounds or checkpoints there."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)


def run_fleet_bench(plan: FleetBenchPlan, workdir: Path, phase: PhaseFn) -> dict[str, Any]:
    """Runs every arm on the same specialists and held-out tasks, and returns the report.

    ``workdir`` is the bench's own: it is emptied first, so that no round resumes another run's checkpoint.
    """
    started = time.monotonic()
    wall: dict[str, float] = {}
    skills = load_skills(plan.skills)
    names = [s.name for s in skills]  # type: ignore[attr-defined]
    spec_of = dict(zip(names, plan.skills, strict=True))
    groups = split_into_rounds(names, plan.rounds)
    fresh_workdir(workdir)

    core0 = build_core(seed=plan.seed)
    core0_dir = workdir / "core_v0"
    save_core(core0, core0_dir)

    t = time.monotonic()
    specialists = {}
    for i, skill in enumerate(skills):
        phase(f"specialist {i + 1}/{len(skills)}: learning {names[i]} on the job ({plan.specialist_steps} steps)")
        specialists[names[i]] = train_specialist(
            core0,
            skill,
            f"agent-{names[i]}",
            plan.specialist_steps,
            plan.batch_size,
            plan.publish_per_step,
            plan.lr,
            plan.topk,
            plan.seed,
        )
    wall["specialists"] = time.monotonic() - t

    t = time.monotonic()
    rounds: list[dict[str, Any]] = []
    curves: list[dict[str, float]] = []
    taught_in: dict[str, int] = {}
    base_dir = core0_dir
    earlier: list[Learning] = []
    replayed: dict[str, set[str]] = {n: set() for n in names}
    for r, group in enumerate(groups):
        for name in group:
            taught_in[name] = r
        taught = [n for n in names if n in taught_in]
        phase(f"round {r + 1}/{len(groups)}: distilling {', '.join(group)} (taught so far: {', '.join(taught)})")
        learnings = [lr for n in group for lr in specialists[n].learnings]
        replay = sample_replay(earlier, plan.distill.replay_size, seed=f"{plan.seed}:round{r + 1}")
        for learning in replay:
            replayed[learning.skill].add(learning.prompt)
        base_dir, metrics = _distill(
            workdir,
            f"round{r + 1}",
            base_dir,
            learnings,
            replay,
            [spec_of[n] for n in taught],
            plan,
            first=r == 0,
        )
        curves.append(dict(metrics["eval"]))
        rounds.append(
            {
                "round": r + 1,
                "new_skills": group,
                "learnings": len(learnings),
                "replay": len(replay),
                "eval": metrics["eval"],
                "final_loss": metrics.get("final_loss"),
                "wall_s": metrics.get("wall_s"),
            }
        )
        earlier.extend(learnings)
    core = load_core(base_dir)
    wall["core_rounds"] = time.monotonic() - t

    accuracy: dict[str, dict[str, float]] = {}
    phase("evaluating base, specialists and the core on held-out tasks")
    accuracy["base"] = evaluate_skills(core0, skills, plan.eval_tasks)
    accuracy["specialist"] = {
        n: evaluate_skills(specialists[n].model, [s], plan.eval_tasks)[n] for n, s in zip(names, skills, strict=True)
    }
    accuracy["core"] = evaluate_skills(core, skills, plan.eval_tasks)

    t = time.monotonic()
    merge_params: dict[str, dict[str, float]] = {}
    for method in ("weight_average", "task_arithmetic", "ties"):
        phase(f"merging baseline: {method}")
        model, params = merge_arm(method, core0, [specialists[n].model for n in names], skills, plan.val_tasks)
        accuracy[method] = evaluate_skills(model, skills, plan.eval_tasks)
        merge_params[method] = params
    wall["merges"] = time.monotonic() - t

    t = time.monotonic()
    phase(f"multitask upper bound: {plan.multitask_steps} steps on all raw tasks")
    multitask, multitask_prompts = train_multitask(
        core0, [specialists[n].tasks for n in names], plan.multitask_steps, plan.distill.batch_size, plan.lr, plan.seed
    )
    accuracy["multitask"] = evaluate_skills(multitask, skills, plan.eval_tasks)
    wall["multitask"] = time.monotonic() - t

    kd_compare: dict[str, Any] = {}
    kd_prompts: dict[str, set[str]] = {n: set() for n in names}
    if plan.kd_compare_per_skill > 0:
        t = time.monotonic()
        for k in (plan.topk, VOCAB_SIZE):
            phase(f"KD comparison: one round over every skill with top-{k} signals from the final specialists")
            sample = []
            for n in names:
                pool = specialists[n].learnings[-plan.kd_compare_per_skill :]
                sample += _with_signal(pool, specialists[n].model, k)
                kd_prompts[n].update(lr.prompt for lr in pool)
            _, metrics = _distill(
                workdir,
                f"kd_top{k}",
                core0_dir,
                sample,
                [],
                [spec_of[n] for n in names],
                plan,
                first=True,
                steps=plan.kd_compare_steps,
            )
            kd_compare[f"top{k}"] = metrics["eval"]
        kd_compare["gap_topk_vs_full"] = _mean(kd_compare[f"top{VOCAB_SIZE}"]) - _mean(kd_compare[f"top{plan.topk}"])
        wall["kd_compare"] = time.monotonic() - t

    contamination = count_contamination(
        skills,
        {n: held_out_prompts(s, plan.eval_tasks, plan.val_tasks) for n, s in zip(names, skills, strict=True)},
        {
            "specialists": {n: {p for p, _ in specialists[n].tasks} for n in names},
            "learnings": {n: {lr.prompt for lr in specialists[n].learnings} for n in names},
            "replay": replayed,
            "multitask": dict(zip(names, multitask_prompts, strict=True)),
            "kd_compare": kd_prompts,
        },
    )
    ratios = {n: accuracy["core"][n] / accuracy["specialist"][n] for n in names if accuracy["specialist"][n] > 0}
    mean_of = {m: _mean(accuracy[m]) for m in METHODS}
    best_merge = max(("weight_average", "task_arithmetic", "ties"), key=lambda m: mean_of[m])
    wall["total"] = time.monotonic() - started
    return {
        "skills": names,
        "split": {n: kind_of(s) for n, s in zip(names, skills, strict=True)},
        "contamination": {n: c["overlap"] for n, c in contamination.items()},
        "contamination_detail": contamination,
        "methods": list(METHODS),
        "accuracy": accuracy,
        "mean_accuracy": mean_of,
        "absorption": sum(ratios.values()) / len(ratios) if ratios else None,
        "absorption_min": min(ratios.values()) if ratios else None,
        "absorption_per_skill": ratios,
        "forgetting": _forgetting(curves, taught_in),
        "core_minus_best_merge": mean_of["core"] - mean_of[best_merge],
        "best_merge": best_merge,
        "core_minus_multitask": mean_of["core"] - mean_of["multitask"],
        "merge_params": merge_params,
        "kd_compare": kd_compare,
        "rounds": rounds,
        "plan": asdict(plan) | {"distill": plan.distill.model_dump()},
        "wall_s": {k: round(v, 1) for k, v in wall.items()},
        "machine": machine_info(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
