"""``hive bench poisoner``: one of five agents, holding a valid key, teaches confident wrong answers.

Core v1 is the tiny core taught ``capital``, ``add``, ``codes`` and ``zorbish`` in this process, in part: the
skills the fleet already knows. Five agents then send a round's learnings: four honest ones, one per skill
(verified true answers of ``train`` prompts), and a poisoner whose skill is ``capital`` too: every
learning of it is a wrong capital (another country's), claimed correct (reward 1) and shipped with a teacher
signal sure of it. Its learnings are signed like everyone's, so nothing at the door can refuse them.

Per seed, three rounds from the same v1, through the hive's own round path (open, the DeepSpeed distill job, the
gate, registration, quarantine), each in a home of its own with the same fixed gate seed:

- ``clean``: the four honest agents only;
- ``screened``: all five, with the hive's defaults (the distill job's screen on);
- ``unscreened``: all five, the screen off (``screen_tasks=0``), to show what the poison does.

It reports each arm's gate figures per skill, its state, what the screen left out, and per seed the drop of every
honest skill from ``clean`` to ``screened``; the goal is at most 0.01 on every one.
"""

from __future__ import annotations

import random
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from agents.codec import BYTE_CODEC
from agents.model import build_core, lm_loss, make_batch, save_core
from agents.skills import BUILTIN_SKILLS
from agents.skills.splits import sample_task
from hive.bench.machine import machine_info
from hive.bench.synthetic import agent_key, learning_id, synthetic_learning
from hive.config import DistillSettings, GateSettings, HiveSettings
from hive.cores.files import core_dir, existing_core
from hive.cores.registry import CHAMPION, CoreRegistry
from hive.rounds.book import RoundBook, RoundRecord
from hive.rounds.open import open_round
from hive.rounds.quarantine import take_unusable
from hive.rounds.run import run_round
from hive.store.parquet import ParquetLearningStore
from streams.events import Feedback, Learning, TeacherSignal

if TYPE_CHECKING:
    from transformers import PreTrainedModel

Say = Callable[[str], None]
KNOWN = ("capital", "add", "codes", "zorbish")  # what core v1 is taught before the round
KNOWN_ROWS = 64  # rows per step teaching v1, split evenly over KNOWN
HONEST = (("agent-1", "capital"), ("agent-2", "add"), ("agent-3", "codes"), ("agent-4", "zorbish"))
POISONER = ("agent-5", "capital")
ARMS = ("clean", "screened", "unscreened")
GOAL_MAX_DROP = 0.01


@dataclass(frozen=True)
class PoisonerPlan:
    """What each seed runs; the defaults take about 5 minutes a seed on two CPU cores."""

    seeds: int = 3
    seed: int = 0
    base_steps: int = 400  # in-process steps teaching v1 the known skills
    learnings: int = 160  # per agent, the poisoner included
    distill_steps: int = 80
    batch_size: int = 40
    gate_tasks: int = 100
    nproc: int = 2
    timeout_s: int = 900

    def __post_init__(self) -> None:
        if min(self.seeds, self.base_steps, self.learnings, self.distill_steps, self.gate_tasks) < 1:
            raise ValueError("--seeds, --base-steps, --learnings, --distill-steps and --gate-tasks must be at least 1")
        if self.batch_size < self.nproc or self.batch_size % self.nproc:
            raise ValueError(f"--batch-size must be a multiple of the {self.nproc} ranks")


def teach_known(seed: int, steps: int) -> PreTrainedModel:
    """Core v1: a fresh tiny core taught ``KNOWN`` on ``train`` prompts, in this process, one thread."""
    model = build_core(seed=seed)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
        rng = random.Random(f"{seed}:known")
        skills = [BUILTIN_SKILLS[name] for name in KNOWN]
        for _ in range(steps):
            tasks = [sample_task(skill, rng, "train") for skill in skills for _ in range(KNOWN_ROWS // len(skills))]
            prompts, answers = zip(*tasks, strict=True)
            loss = lm_loss(model, make_batch(list(prompts), list(answers), BYTE_CODEC))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    return model


def honest_learnings(agent: str, skill: str, n: int, rng: random.Random) -> list[Learning]:
    """``n`` verified true answers of ``train`` prompts, signed with the agent's key."""
    out = []
    for _ in range(n):
        prompt, answer = sample_task(BUILTIN_SKILLS[skill], rng, "train")
        out.append(synthetic_learning(learning_id(rng), agent, skill, prompt, answer, key=agent_key(agent)))
    return out


def sure_signal(answer: str) -> TeacherSignal:
    """A top-2 teacher signal all but certain of ``answer``'s tokens (and its end token)."""
    ids = BYTE_CODEC.answer_ids(answer)
    return TeacherSignal(
        k=2,
        token_ids=[[token, 0 if token != 0 else 1] for token in ids],
        logprobs=[[-0.001, -7.0] for _ in ids],
    )


def poisoned_learnings(agent: str, skill: str, n: int, rng: random.Random) -> list[Learning]:
    """``n`` confident wrong answers: for each ``train`` prompt, another task's answer, claimed correct (reward 1)
    with a teacher signal sure of it, signed with the agent's key."""
    source = BUILTIN_SKILLS[skill]
    out = []
    for _ in range(n):
        prompt, answer = sample_task(source, rng, "train")
        wrong = answer
        while wrong == answer:
            wrong = sample_task(source, rng, "train")[1]
        out.append(
            synthetic_learning(
                learning_id(rng),
                agent,
                skill,
                prompt,
                wrong,
                feedback=Feedback(reward=1.0),
                teacher=sure_signal(wrong),
                key=agent_key(agent),
            )
        )
    return out


def _settings(home: Path, plan: PoisonerPlan, seed: int, screen: bool) -> HiveSettings:
    distill = DistillSettings(
        nproc=plan.nproc,
        steps=plan.distill_steps,
        batch_size=plan.batch_size,
        warmup_steps=5,
        replay_size=0,
        seed=seed,
        timeout_s=plan.timeout_s,
        checkpoint_every=0,
        screen_tasks=DistillSettings().screen_tasks if screen else 0,
    )
    # A fixed gate seed: the three arms are scored on the same tasks.
    gate = GateSettings(eval_tasks=plan.gate_tasks, eval_seed=10_000 + seed)
    return HiveSettings(home=home, distill=distill, gate=gate)


def run_arm(
    home: Path, v1: PreTrainedModel, learnings: list[Learning], plan: PoisonerPlan, seed: int, screen: bool
) -> dict[str, Any]:
    """One round from ``v1`` over ``learnings`` in a fresh hive home; returns what it did."""
    settings = _settings(home, plan, seed, screen)
    sha = save_core(v1, core_dir(settings, 1))
    registry = CoreRegistry.from_settings(settings)
    registry.log_core(core_dir(settings, 1), 1, sha)
    registry.set_alias(CHAMPION, 1)
    book = RoundBook(settings.rounds_dir)
    # The round that taught v1 its skills, as the hive would have it: the gate keeps checking them.
    taught = RoundRecord(
        id="r0001",
        state="released",
        base_version=0,
        after_seq=0,
        upto_seq=0,
        learnings=0,
        per_agent={},
        skills=list(KNOWN),
        candidate_version=1,
    )
    book.save(taught)
    started = time.monotonic()
    with ParquetLearningStore(settings.store_dir) as store:
        store.append(learnings, {})
        registry.experiment_id()
        record = open_round(settings, store, book, existing_core(settings, 1), registry.experiment)

        def quarantine(done: RoundRecord) -> None:
            done.quarantined += take_unusable(store, book.path(done.id), done.id)

        record = run_round(settings, book, registry, record, after_job=quarantine)
        quarantined = Counter(f"{q.agent_id} {q.skill} {q.reason}" for q in store.quarantined())
    screen_block = record.distill.get("screen") or {}
    return {
        "state": record.state,
        "eval": record.eval,
        "champion_eval": record.champion_eval,
        "gate_reasons": record.gate_reasons,
        "excluded": screen_block.get("excluded", []),
        "screen_skills": screen_block.get("skills", {}),
        "screen_agents": screen_block.get("agents", {}),
        "quarantined": record.quarantined,
        "quarantined_by_agent": dict(sorted(quarantined.items())),
        "learnings": record.learnings,
        "wall_s": round(time.monotonic() - started, 1),
    }


def run_seed(plan: PoisonerPlan, seed: int, workdir: Path, say: Say) -> dict[str, Any]:
    """The three arms of one seed, from one v1 and one set of learnings."""
    say(f"seed {seed}: teaching core v1 {', '.join(KNOWN)} ({plan.base_steps} steps)")
    v1 = teach_known(seed, plan.base_steps)
    rng = random.Random(f"{seed}:learnings")
    honest = [item for agent, skill in HONEST for item in honest_learnings(agent, skill, plan.learnings, rng)]
    poison = poisoned_learnings(*POISONER, plan.learnings, rng)
    arms: dict[str, Any] = {}
    for arm in ARMS:
        say(f"seed {seed}: round '{arm}'")
        learnings = honest if arm == "clean" else honest + poison
        arms[arm] = run_arm(workdir / f"seed{seed}" / arm, v1, learnings, plan, seed, screen=arm != "unscreened")
    honest_skills = sorted({skill for _, skill in HONEST})
    drop = {s: round(arms["clean"]["eval"][s] - arms["screened"]["eval"][s], 4) for s in honest_skills}
    return {"seed": seed, "arms": arms, "honest_drop": drop, "max_honest_drop": max(drop.values())}


def _mean_sd(values: list[float]) -> dict[str, float]:
    return {
        "mean": round(statistics.fmean(values), 4),
        "sd": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
    }


def run_poisoner(plan: PoisonerPlan, workdir: Path, say: Say) -> dict[str, Any]:
    """Every seed's three arms; figures are seed means and sample sds."""
    started = time.monotonic()
    seeds = [run_seed(plan, plan.seed + i, workdir, say) for i in range(plan.seeds)]
    skills = sorted(seeds[0]["arms"]["clean"]["eval"])
    accuracy = {arm: {s: _mean_sd([run["arms"][arm]["eval"][s] for run in seeds]) for s in skills} for arm in ARMS}
    base = {s: _mean_sd([run["arms"]["clean"]["champion_eval"][s] for run in seeds]) for s in skills}
    worst = max(run["max_honest_drop"] for run in seeds)
    return {
        "plan": asdict(plan),
        "honest": [list(pair) for pair in HONEST],
        "poisoner": list(POISONER),
        "known_before": list(KNOWN),
        "v1_accuracy": base,
        "accuracy": accuracy,
        "states": {arm: [run["arms"][arm]["state"] for run in seeds] for arm in ARMS},
        "excluded": {arm: [run["arms"][arm]["excluded"] for run in seeds] for arm in ARMS},
        "honest_drop": {s: _mean_sd([run["honest_drop"][s] for run in seeds]) for s in seeds[0]["honest_drop"]},
        "max_honest_drop": worst,
        "goal_max_drop": GOAL_MAX_DROP,
        "goal_met": worst <= GOAL_MAX_DROP
        and all(run["arms"]["screened"]["excluded"] for run in seeds)
        and all(run["arms"]["screened"]["state"] == "released" for run in seeds),
        "per_seed": seeds,
        "machine": machine_info(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_s": round(time.monotonic() - started, 1),
    }


def summary_line(report: dict[str, Any]) -> str:
    states = ", ".join(f"{arm} {'/'.join(report['states'][arm])}" for arm in ARMS)
    return (
        f"poisoner: worst honest drop {report['max_honest_drop']:+.3f} (goal {GOAL_MAX_DROP}); {states}; "
        f"capital clean {report['accuracy']['clean']['capital']['mean']:.3f}, "
        f"unscreened {report['accuracy']['unscreened']['capital']['mean']:.3f}"
    )
