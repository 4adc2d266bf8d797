"""``hive bench fleet``: does the distilled core absorb every specialist, keep what it knew, and beat merging?

Every arm starts from the same core v0 (on ``tiny``, a base pretrained on skills that no arm is evaluated on),
trains with the same optimizer and schedule (``hive.bench.recipe``), learns only from train prompts and is scored on
the same test prompts (``agents.skills.splits``). Each seed runs every arm; figures are means and sample sds.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agents.codec import load_codec
from agents.model import build_core, load_core, save_core
from agents.skills import load_skills
from agents.skills.splits import kind_of
from hive.bench.contamination import count_contamination, held_out_prompts
from hive.bench.fleet_arms import CoreStart, pretrain_base
from hive.bench.fleet_seed import RUN_FILE, SeedRun, load_seed_run, parse_kd_arm, run_seed, save_seed_run
from hive.bench.fleet_stats import comparison, mean_sd, per_skill_mean_sd, ratios, summary
from hive.bench.machine import machine_info
from hive.bench.recipe import arm_config, describe_recipe
from hive.config import DistillSettings
from hive.cores.pretrained import TINY, core_source
from streams import durable

METHODS = (
    "base",
    "specialist",
    "core",
    "core_kd_only",
    "core_ce_only",
    "weight_average",
    "task_arithmetic",
    "ties",
    "multitask",
)
MERGES = ("weight_average", "task_arithmetic", "ties")
# Skills the tiny base is pretrained on: string transformations that share the byte vocabulary with the built-in
# skills, none of them evaluated, so the arms start from a model that has learned something, not random weights.
BASE_SKILLS = (
    "agents.skills.text:Reverse",
    "agents.skills.text:Upper",
    "agents.skills.text:Shift",
    "agents.skills.text:Double",
)
# The default fleet: three generalize skills the tiny core learns in a few hundred steps, and one recall skill,
# reported apart.
DEFAULT_SKILLS = ("capital", "zorbish", "swap", "next")
PhaseFn = Callable[[str], None]
# Beside the tiny core's shared base in the bench's directory: the plan it was pretrained for and its prompts.
BASE_FILE = "core_v0-base.json"
# Distill steps per round of the tiny core's plan (its DistillSettings default, and for_model's).
TINY_DISTILL_STEPS = 200


@dataclass(frozen=True)
class FleetBenchPlan:
    """What the benchmark runs, per seed (the defaults' cost on a 2-core CPU: docs/researcher-guide.md).

    ``batch_size`` is every arm's rows per step: the specialists', the core's (``distill.batch_size`` is replaced by
    it; replay rows come on top, as in a deployment), the multitask arm's and the base's.
    """

    skills: list[str]
    rounds: int = 3
    specialist_steps: int = 200
    batch_size: int = 32
    publish_per_step: int = 8
    lr: float = 3e-3
    topk: int = 16
    # Rounds use the hive's own distill settings, so the bench measures what a deployment runs.
    distill: DistillSettings = field(default_factory=lambda: DistillSettings(steps=TINY_DISTILL_STEPS))
    eval_tasks: int = 100
    val_tasks: int = 50
    # Learnings per skill in the top-k vs full-vocabulary KD comparison; 0 (the default) skips it: it is a question
    # of its own, measured by its own run (docs/researcher-guide.md).
    kd_compare_per_skill: int = 0
    kd_compare_steps: int = 800
    # KD comparison arms beside top-k and full-vocabulary KD (hive.bench.fleet_seed.parse_kd_arm): top32,
    # top16-renorm, top16-t2, ...
    kd_variants: tuple[str, ...] = ()
    seed: int = 0
    seeds: int = 3
    base_skills: list[str] = field(default_factory=lambda: list(BASE_SKILLS))
    # 0 is the random-init regime: a labelled extra, never the headline (see the researcher guide).
    base_steps: int = 600
    ablations: bool = True
    # Core v0: "tiny" (built, then pretrained on the base skills) or a pretrained model as HIVE_MODEL__PATH names
    # one (``smollm2-135m``, a directory), whose specialists, multitask arm and rounds tune LoRA adapters.
    model: str = TINY
    # --tune: the first seed picks the core's replay size and continual lr on validation prompts from this grid;
    # every seed then uses them. Without it they are the hive's settings.
    tune: bool = False
    replay_grid: tuple[int, ...] = (1024, 4096)
    # Up to the first round's lr: the later rounds' swap lagged at 1e-3 (docs/benchmarks.md, 2026-12-01).
    continual_lr_grid: tuple[float, ...] = (3e-4, 1e-3, 3e-3)

    @classmethod
    def for_model(cls, model: str, distill: dict[str, Any] | None = None, **given: Any) -> FleetBenchPlan:
        """The plan for ``model``: the tiny core's defaults, or a pretrained model's (``PRETRAINED``), with every
        field in ``given`` and every distill setting in ``distill`` replacing its default."""
        if model == TINY:
            tiny = DistillSettings(**({"steps": TINY_DISTILL_STEPS} | (distill or {})))
            return cls(model=model, distill=tiny, **given)
        fields = PRETRAINED | {"base_skills": []} | given
        return cls(model=model, distill=DistillSettings(**(PRETRAINED_DISTILL | (distill or {}))), **fields)

    def __post_init__(self) -> None:
        if self.model != TINY:
            if self.base_steps:
                raise ValueError(f"--base-steps: {self.model} is pretrained already; it is the shared start")
            if self.kd_compare_per_skill:
                raise ValueError(f"--kd-compare runs on tiny only: full-vocabulary signals of {self.model} are huge")
        if self.batch_size < 1 or self.batch_size % self.distill.nproc:
            ranks = self.distill.nproc
            raise ValueError(f"--batch-size {self.batch_size} must split evenly over {ranks} distill ranks")
        # One batch for every arm: the core's rounds train on the same rows per step as the specialists.
        object.__setattr__(self, "distill", self.distill.model_copy(update={"batch_size": self.batch_size}))

    def seed_list(self) -> list[int]:
        return [self.seed + i for i in range(self.seeds)]


# A pretrained core's plan (FleetBenchPlan.for_model): LoRA learns in tens of steps what the tiny core needs hundreds
# for, and each step costs about 100 times more (docs/benchmarks.md). The pretrained model is the shared start, so
# nothing is pretrained first; there is no KD comparison. At 60 distill steps of 8 rows a round, the core had not
# learned its first two skills (capital 0.04, zorbish 0.00 after round 1), so rounds take 120. Every round tunes a
# fresh LoRA adapter on the core, so a later round has no already-taught adapter to protect with a lower lr: it
# learns at lr too (replay and retention guard the earlier skills). The ablations, three times the rounds, are
# off by default to keep one seed within an hour; --ablations runs them.
PRETRAINED: dict[str, Any] = {
    "specialist_steps": 60,
    "batch_size": 8,
    "lr": 2e-3,
    "eval_tasks": 50,
    "val_tasks": 25,
    "base_steps": 0,
    "ablations": False,
}
# A round of SmolLM2 with replay takes about 10 minutes on 2 idle cores; the hive's 900 s limit failed one under load
# an hour into a 3-seed run. The limit only guards against a hung job.
PRETRAINED_DISTILL: dict[str, Any] = {
    "steps": 120,
    "lr": 2e-3,
    "continual_lr": 2e-3,
    "warmup_steps": 5,
    "timeout_s": 3600,
}


def split_into_rounds(names: list[str], rounds: int) -> list[list[str]]:
    """Skills arrive over ``rounds`` rounds, new specialists joining later; the first takes any extra."""
    if rounds < 1 or rounds > len(names):
        raise ValueError(f"{len(names)} skills cannot arrive over {rounds} rounds: need 1 <= rounds <= skills")
    extra = len(names) - rounds
    groups = [names[: extra + 1]]
    groups += [[n] for n in names[extra + 1 :]]
    return groups


def forgetting(curves: list[dict[str, float]], taught_in: dict[str, int]) -> float:
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


def multitask_steps(core_rows: dict[str, int], skills: int, batch_size: int) -> int:
    """Steps that give the multitask arm at least the core's rows of every skill (replay counted): each of its
    batches holds ``batch_size // skills`` rows of every skill, or one more."""
    per_step = batch_size // skills
    if per_step < 1:
        raise ValueError(f"a multitask batch of {batch_size} cannot hold a row of each of {skills} skills")
    return max(1, math.ceil(max(core_rows.values()) / per_step))


def plan_fingerprint(plan: FleetBenchPlan) -> str:
    """What makes a saved seed this plan's: every setting but which seeds run."""
    # The time limit only bounds a round; it changes nothing a round computes.
    settings = asdict(plan) | {"distill": plan.distill.model_dump(mode="json", exclude={"timeout_s"})}
    settings.pop("seed")
    settings.pop("seeds")
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def run_fleet_bench(
    plan: FleetBenchPlan, workdir: Path, phase: PhaseFn, model_cache: Path | None = None, resume: bool = False
) -> dict[str, Any]:
    """Runs every arm for every seed on the same core v0 and held-out tasks, and returns the report.

    ``workdir`` is the bench's own: it is emptied first, so that no round resumes another run's checkpoint.
    With ``resume`` it is kept instead: each seed's figures are saved (``seed<N>/run.json``) as soon as the seed
    ends, and a seed already measured under the same plan (every setting but which seeds) is read back, not run
    again; a seed that was cut short starts over, and so does the tiny core's base unless it was saved whole.
    A long run can so be spread over several sittings. A pretrained ``plan.model`` is found as
    ``HIVE_MODEL__PATH`` is, built-in ones in ``model_cache`` (ModelSourceError or CoreDirError before anything is
    trained).
    """
    started = time.monotonic()
    if plan.seeds < 1:
        raise ValueError("--seeds must be at least 1")
    skills = load_skills(plan.skills)
    names = [s.name for s in skills]  # type: ignore[attr-defined]
    base_skills = load_skills(plan.base_skills) if plan.base_steps > 0 else []
    shared = sorted({s.name for s in base_skills} & set(names))  # type: ignore[attr-defined]
    if shared:
        raise ValueError(f"the base is pretrained on skills the bench evaluates: {', '.join(shared)}")
    split_into_rounds(names, plan.rounds)  # refuses an impossible plan before any training
    for variant in plan.kd_variants:
        parse_kd_arm(variant)
    # Drawing the held-out prompts first refuses, before any training, a generalize skill too small to split.
    held_out = {n: held_out_prompts(s, plan.eval_tasks, plan.val_tasks) for n, s in zip(names, skills, strict=True)}
    source = None if plan.model == TINY else core_source(plan.model, model_cache or Path("."))
    fingerprint = plan_fingerprint(plan)
    if resume:
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        fresh_workdir(workdir)

    t = time.monotonic()
    base_prompts: set[str] = set()
    base_recipe = arm_config(plan.distill, plan.base_steps or 1, plan.distill.lr, plan.distill.batch_size)
    if source is not None:
        phase(f"core v0: {plan.model} from {source}")
        start = CoreStart(load_core(source), source, load_codec(source))
    else:
        base_file = workdir / BASE_FILE
        saved_base = _saved_base(base_file, fingerprint, plan.seed) if resume else None
        if saved_base is not None:
            phase(f"core v0: the shared base saved in {workdir / 'core_v0'}")
            core0, base_prompts = load_core(workdir / "core_v0"), saved_base
        else:
            core0 = build_core(seed=plan.seed)
            if plan.base_steps > 0:
                names_text = ", ".join(s.name for s in base_skills)  # type: ignore[attr-defined]
                phase(f"pretraining the shared base on {names_text} ({plan.base_steps} steps)")
                core0, base_prompts = pretrain_base(
                    core0, base_skills, plan.base_steps, plan.distill.batch_size, plan.seed, base_recipe
                )
            save_core(core0, workdir / "core_v0")
            document = {"fingerprint": fingerprint, "seed": plan.seed, "prompts": sorted(base_prompts)}
            durable.write_text(base_file, json.dumps(document))
        start = CoreStart(core0, workdir / "core_v0")
    base_s = time.monotonic() - t

    runs: list[SeedRun] = []
    tuning: dict[str, Any] = {}
    for i, seed in enumerate(plan.seed_list()):
        tune = plan.tune and i == 0
        seed_dir = workdir / f"seed{seed}"
        saved = load_seed_run(seed_dir / RUN_FILE, fingerprint) if resume else None
        if saved is not None:
            phase(f"seed {seed} ({i + 1}/{plan.seeds}): measured before, read from {seed_dir / RUN_FILE}")
            runs.append(saved)
        else:
            phase(f"seed {seed} ({i + 1}/{plan.seeds})")
            if seed_dir.exists():
                shutil.rmtree(seed_dir)  # a seed cut short starts over: nothing of it is trusted
            runs.append(run_seed(plan, seed, skills, start, seed_dir, phase, tune))
            save_seed_run(runs[-1], seed_dir / RUN_FILE, fingerprint)
        if tune:
            tuning = runs[-1].tuning
            plan = replace(plan, distill=plan.distill.model_copy(update=tuning["chosen"]))

    contamination = [
        count_contamination(skills, held_out, run.streams | {"base": {n: base_prompts for n in names}}) for run in runs
    ]
    report = summarise(plan, names, [kind_of(s) for s in skills], runs, contamination)
    base_eval = start.evaluate(load_core(start.directory), skills, plan.eval_tasks)
    report["base_pretraining"] = {
        "skills": [s.name for s in base_skills],  # type: ignore[attr-defined]
        "steps": plan.base_steps,
        "rows": plan.base_steps * plan.distill.batch_size,
        "recipe": describe_recipe(base_recipe) if plan.base_steps > 0 else None,
        "wall_s": round(base_s, 1),
        "eval_on_bench_skills": base_eval,
    }
    report["tuning"] = tuning or {
        "chosen": None,
        "note": "not tuned in this run (--tune): replay_size and continual_lr are the hive's settings, in plan.distill",
    }
    report["wall_s"]["base"] = round(base_s, 1)
    report["wall_s"]["total"] = round(time.monotonic() - started, 1)
    report["plan"] = asdict(plan) | {"distill": plan.distill.model_dump()}
    report["machine"] = machine_info()
    report["date"] = datetime.now(UTC).isoformat(timespec="seconds")
    return report


def _saved_base(path: Path, fingerprint: str, seed: int) -> set[str] | None:
    """The prompts the saved shared base was pretrained on, when it was saved whole for this plan and seed."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(document, dict) or document.get("fingerprint") != fingerprint or document.get("seed") != seed:
        return None
    return set(document.get("prompts", []))


def _mean_accuracy(scores: dict[str, float], names: list[str]) -> float:
    return sum(scores[n] for n in names) / len(names)


def summarise(
    plan: FleetBenchPlan,
    names: list[str],
    kinds: list[str],
    runs: list[SeedRun],
    contamination: list[dict[str, dict[str, Any]]],
) -> dict[str, Any]:
    """Seed means and sds of every figure, the headline ones on ``generalize`` skills, recall ones apart."""
    methods = [m for m in METHODS if all(m in run.accuracy for run in runs)]
    accuracy, accuracy_sd = {}, {}
    for method in methods:
        accuracy[method], accuracy_sd[method] = per_skill_mean_sd([run.accuracy[method] for run in runs])
    kind_of_skill = dict(zip(names, kinds, strict=True))
    groups = {"all": names} | {k: [n for n in names if kind_of_skill[n] == k] for k in ("generalize", "recall")}

    def figures(group: list[str]) -> dict[str, Any]:
        if not group:
            return {}
        out: dict[str, Any] = {"skills": group}
        for label, method in (("absorption", "core"), ("absorption_kd_only", "core_kd_only")):
            if method not in methods:
                continue
            per_seed = [ratios(run.accuracy[method], run.accuracy["specialist"], group) for run in runs]
            if all(per_seed):
                out[label] = summary([sum(r.values()) / len(r) for r in per_seed])
                out[f"{label}_min"] = summary([min(r.values()) for r in per_seed])
        means = {m: [_mean_accuracy(run.accuracy[m], group) for run in runs] for m in methods}
        best = [max(MERGES, key=lambda m: means[m][i]) for i in range(len(runs))]
        out["best_merge_per_seed"] = best
        out["core_minus_best_merge"] = comparison([means["core"][i] - means[b][i] for i, b in enumerate(best)])
        core, multitask = means["core"], means["multitask"]
        out["core_minus_multitask"] = comparison([c - m for c, m in zip(core, multitask, strict=True)])
        if "core_kd_only" in methods:
            out["kd_only_minus_ce_only"] = comparison(
                [k - c for k, c in zip(means["core_kd_only"], means["core_ce_only"], strict=True)]
            )
        out["mean_accuracy"] = {m: summary(v) for m, v in means.items()}
        return out

    by_kind = {label: figures(group) for label, group in groups.items()}
    headline = by_kind["generalize"] or by_kind["all"]
    forget = mean_sd([run.forgetting for run in runs])
    rounds = []
    for r, first in enumerate(runs[0].rounds):
        evals = [run.rounds[r]["eval"] for run in runs]
        mean, sd = per_skill_mean_sd(evals)
        rounds.append({**first, "eval": mean, "eval_sd": sd, "eval_per_seed": evals})
    kd: dict[str, Any] = {}
    if all(run.kd_compare for run in runs):
        gaps = [run.kd_compare["gap_topk_vs_full"] for run in runs]
        gap, gap_sd = mean_sd(gaps)
        arms = runs[0].kd_compare["gaps"]
        kd = {
            "gap_topk_vs_full": gap,
            "gap_sd": gap_sd,
            # Per arm: full-vocabulary KD minus the arm, seed mean and sd (0 or below: as good as full).
            "gaps": {arm: summary([run.kd_compare["gaps"][arm] for run in runs]) for arm in arms},
            "per_seed": [run.kd_compare for run in runs],
        }
    wall: dict[str, float] = {}
    for run in runs:
        for key, value in run.wall_s.items():
            wall[key] = round(wall.get(key, 0.0) + value, 1)
    return {
        "skills": names,
        "model": plan.model,
        "seeds": plan.seed_list(),
        "split": kind_of_skill,
        "methods": methods,
        "accuracy": accuracy,
        "accuracy_sd": accuracy_sd,
        "mean_accuracy": {m: _mean_accuracy(accuracy[m], names) for m in methods},
        # The headline figures, on generalize skills (all skills when none generalizes), as seed means.
        "absorption": headline.get("absorption", {}).get("mean"),
        "absorption_sd": headline.get("absorption", {}).get("sd"),
        "absorption_min": headline.get("absorption_min", {}).get("mean"),
        "absorption_kd_only": headline.get("absorption_kd_only", {}).get("mean"),
        "absorption_kd_only_min": headline.get("absorption_kd_only_min", {}).get("mean"),
        "forgetting": forget[0],
        "forgetting_sd": forget[1],
        "core_minus_best_merge": headline["core_minus_best_merge"]["mean"],
        "core_minus_multitask": headline["core_minus_multitask"]["mean"],
        "by_kind": by_kind,
        "ablations": {m: accuracy[m] for m in ("core_kd_only", "core_ce_only") if m in methods},
        "contamination": {n: max(c[n]["overlap"] for c in contamination) for n in names},
        "contamination_detail": contamination[0],
        "budget": runs[0].budget,
        "kd_compare": kd,
        "merge_params": [run.merge_params for run in runs],
        "rounds": rounds,
        "per_seed": [
            {"seed": run.seed, "accuracy": run.accuracy, "forgetting": run.forgetting, "budget": run.budget}
            for run in runs
        ],
        "wall_s": wall,
    }
