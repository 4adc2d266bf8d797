"""The round's screen: an agent whose learnings contradict what the base core reliably knows is left out.

An agent holding a valid key can still send confident wrong answers, or teacher signals that point at wrong
tokens. The hive cannot check answers against a truth it does not have, but the base core (the champion the
round starts from) is a witness where it is competent: on a skill whose validation answers it predicts well,
honest learnings mostly agree with it, and an agent that disagrees far more than the base's own error rate is
teaching the fleet something the core knows to be false. Its learnings of that skill are left out before any
step trains on them, listed in ``unusable.jsonl`` with the figures, and the hive quarantines them, so that no
later round replays them.

A skill the base does not know yet (a new one) cannot be judged this way and is not screened; the gate still
compares the candidate with the champion on every skill. A poisoner that keeps its disagreement within the
margin (a small share of wrong answers) passes the screen; the gate is then the defence.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from agents.codec import Codec
from agents.evaluation import held_out_tasks
from agents.model import position_logits
from agents.skills.splits import SkillSplitError
from distill.dataset import Dropped, Example, collate
from distill.manifest import DistillParams

SCREEN_BATCH = 64
REASON = "disagrees_with_base"


@dataclass
class ScreenResult:
    """The examples kept, the learnings left out (as the unusable list names them), and the figures."""

    kept: list[Example]
    dropped: list[Dropped] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Agreement:
    """At how many answer positions the model's own top token, fed the answer so far, is what training would pull
    it towards there: by CE, the answer's token where an example is verified; by KD, the teacher's top token where
    it ships a signal. Each channel apart: a position trained both ways counts in both."""

    ce: int = 0
    ce_positions: int = 0
    kd: int = 0
    kd_positions: int = 0

    def share(self) -> float | None:
        """The lower of the two channels' shares (None without positions): a lie in either channel shows."""
        shares = [a / n for a, n in ((self.ce, self.ce_positions), (self.kd, self.kd_positions)) if n]
        return min(shares) if shares else None


def target_agreement(model, examples: Sequence[Example], codec: Codec) -> Agreement:
    """The model's ``Agreement`` with the examples' training targets."""
    ce = ce_n = kd = kd_n = 0
    for start in range(0, len(examples), SCREEN_BATCH):
        tb = collate(examples[start : start + SCREEN_BATCH], codec)
        with torch.no_grad():
            predicted = position_logits(model, tb.batch, tb.positions).argmax(dim=-1)
        teacher_top = tb.teacher_ids.gather(1, tb.teacher_logprobs.argmax(dim=-1, keepdim=True)).squeeze(1)
        ce += int((tb.verified & (predicted == tb.targets)).sum())
        ce_n += int(tb.verified.sum())
        kd += int((tb.has_teacher & (predicted == teacher_top)).sum())
        kd_n += int(tb.has_teacher.sum())
    return Agreement(ce, ce_n, kd, kd_n)


def screen_examples(
    model,
    examples: list[Example],
    skills: Sequence[object],
    codec: Codec,
    params: DistillParams,
    seed: int,
) -> ScreenResult:
    """Leaves out each (agent, skill) group of ``examples`` that disagrees with ``model`` (the base core) on a
    skill it knows; see the module's doc and ``DistillParams.screen_*``. ``seed`` (the round's evaluation seed,
    secret and rotating) draws the validation tasks and each group's sample, so an agent cannot know which of
    its learnings are scored. Deterministic for a seed: every rank reaches the same decision."""
    if params.screen_tasks == 0:
        return ScreenResult(examples, report={"enabled": False})
    groups: dict[tuple[str, str], list[Example]] = {}
    for example in examples:
        groups.setdefault((example.agent_id, example.skill), []).append(example)
    by_name = {skill.name: skill for skill in skills}  # type: ignore[attr-defined]
    was_training = model.training
    model.eval()
    reference: dict[str, dict[str, Any]] = {}
    for name in sorted({skill for _, skill in groups}):
        if name not in by_name:
            reference[name] = {"known": False, "reason": "the round has no evaluation tasks for this skill"}
            continue
        try:
            tasks = held_out_tasks(by_name[name], params.screen_tasks, seed, split="validation")
        except SkillSplitError as err:
            # The gate meets the same skill on its test split and says so; the screen only has no witness.
            reference[name] = {"known": False, "reason": f"no validation tasks: {err}"}
            continue
        truth = [Example(prompt, answer, "", name, verified=True) for prompt, answer in tasks]
        share = target_agreement(model, truth, codec).share()
        known = share is not None and share >= params.screen_min_known
        reference[name] = {"agreement": share, "known": known, "tasks": len(tasks)}
    agents: dict[str, dict[str, Any]] = {}
    excluded: list[dict[str, Any]] = []
    left_out: set[tuple[str, str]] = set()
    for (agent, skill), group in sorted(groups.items()):
        ref = reference[skill]
        entry: dict[str, Any] = {"learnings": len(group), "screened": bool(ref["known"])}
        agents.setdefault(agent, {})[skill] = entry
        if not ref["known"]:
            continue
        rng = random.Random(f"{seed}:screen:{agent}:{skill}")
        sample = rng.sample(group, min(params.screen_sample, len(group)))
        agreement = target_agreement(model, sample, codec)
        share = agreement.share()
        entry |= {"agreement": share, "scored": len(sample)}
        entry |= {
            f"agreement_{channel}": round(hits / n, 4)
            for channel, hits, n in (
                ("ce", agreement.ce, agreement.ce_positions),
                ("kd", agreement.kd, agreement.kd_positions),
            )
            if n
        }
        floor = ref["agreement"] - params.screen_margin
        if share is not None and share < floor:
            entry["excluded"] = True
            left_out.add((agent, skill))
            excluded.append(
                {"agent": agent, "skill": skill, "learnings": len(group), "agreement": share, "floor": floor}
            )
    model.train(was_training)
    kept = [e for e in examples if (e.agent_id, e.skill) not in left_out]
    dropped: list[Dropped] = []
    for item in excluded:
        detail = (
            f"agent {item['agent']}'s learnings of {item['skill']}: the base core agrees with "
            f"{item['agreement']:.2f} of their target tokens, below {item['floor']:.2f} (its agreement with the "
            f"skill's validation answers, {reference[item['skill']]['agreement']:.2f}, minus the margin "
            f"{params.screen_margin})"
        )
        group = groups[(item["agent"], item["skill"])]
        dropped.extend(Dropped(e.learning_id, REASON, detail) for e in group if e.learning_id)
    report = {
        "enabled": True,
        "min_known": params.screen_min_known,
        "margin": params.screen_margin,
        "skills": reference,
        "agents": agents,
        "excluded": excluded,
    }
    return ScreenResult(kept, dropped, report)
