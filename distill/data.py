"""The round's data as one rank of the distill job loads it: examples, replay, samplers and lineage."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agents.codec import BYTE_CODEC, Codec, load_codec
from distill.dataset import BalancedSampler, Example, LoadReport, build_examples
from distill.lineage import learning_ids_text, round_lineage
from distill.manifest import Manifest, read_learnings
from distill.screen import REASON, ScreenResult, screen_examples
from distill.teachers import AdapterTeachers, newest_claim_checks
from streams import durable

# Replay draws use their own stream, so adding replay data never changes which learnings a step sees.
REPLAY_SEED_OFFSET = 1_000_003
# The round's learnings the job did not train on, one JSON object per line; the hive quarantines them.
UNUSABLE = "unusable.jsonl"


@dataclass
class Data:
    examples: list[Example]
    report: LoadReport
    sampler: BalancedSampler
    replay: list[Example]
    replay_sampler: BalancedSampler | None
    lineage: dict[str, Any]  # lineage.json
    learning_ids: str  # learning_ids.txt
    replay_ids: list[str] = field(default_factory=list)
    # The base core's codec, which every example's ids are in; load_data always sets it (the byte default is
    # the tiny core's, for Data built by hand).
    codec: Codec = BYTE_CODEC
    screen: dict[str, Any] = field(default_factory=dict)  # metrics.json's screen block (distill.screen)


def screen_data(data: Data, base, skills: list[Any], manifest: Manifest, rank: int) -> Data:
    """The round's data after the screen (``distill.screen``), with ``base`` (the student before any step, which is
    still the base core: a LoRA adapter starts as a no-op) as the witness of what the base core knows."""
    result = screen_examples(base, data.examples, skills, data.codec, manifest.distill, manifest.eval.seed)
    return screened(data, result, manifest.distill.seed, rank, manifest.out_dir)


def screened(data: Data, result: ScreenResult, seed: int, rank: int, out_dir: Path) -> Data:
    """``data`` with only the examples the screen kept, sampled afresh, and the learnings it left out added to
    the unusable list; rank 0 rewrites ``unusable.jsonl``. Raises ValueError when nothing is left to train on."""
    report = LoadReport(
        kept=len(result.kept),
        skipped=data.report.skipped + Counter({REASON: len(result.dropped)} if result.dropped else {}),
        teacher_skipped=data.report.teacher_skipped,
        dropped=[*data.report.dropped, *result.dropped],
    )
    if rank == 0 and result.dropped:
        write_unusable(out_dir / UNUSABLE, report)
    if not result.kept:
        raise ValueError("the screen left out every learning of the round: nothing to train on")
    sampler = BalancedSampler([e.agent_id for e in result.kept], seed=seed, rank=rank)
    return replace(data, examples=result.kept, report=report, sampler=sampler, screen=result.report)


def load_data(manifest: Manifest, rank: int) -> Data:
    """Reads the round's learnings (and replay) into examples; rank 0 writes ``unusable.jsonl`` first, so the
    learnings the job cannot use are listed even when that leaves it nothing to train on."""
    params = manifest.distill
    learnings = read_learnings(manifest.learnings)
    lineage = round_lineage(learnings, manifest.lineage)  # fails before training on a file that is not the range
    codec = load_codec(manifest.base_core)
    teachers = AdapterTeachers(params.topk, manifest.base_core, manifest.adapters.roots, manifest.adapters.max_bytes)
    replay_learnings = read_learnings(manifest.replay) if manifest.replay is not None else []
    # "latest": the round's learnings and its replay both follow each agent's newest claim check among them.
    latest = newest_claim_checks(replay_learnings + learnings) if params.teacher == "latest" else None
    examples, report = build_examples(learnings, codec, teachers=teachers, latest=latest)
    if rank == 0:
        manifest.out_dir.mkdir(parents=True, exist_ok=True)
        write_unusable(manifest.out_dir / UNUSABLE, report)
        for uri, err in teachers.failures.items():
            print(f"distill: no teacher from claim check {uri}: {err.reason}: {err.detail}", flush=True)
    if not examples:
        raise ValueError(f"{manifest.learnings} holds no learning with a teacher signal or a verified answer")
    sampler = BalancedSampler([e.agent_id for e in examples], seed=params.seed, rank=rank)
    replay: list[Example] = []
    replay_sampler = None
    if manifest.replay is not None:
        # Replay learnings keep teaching as they did in their own round: KD where they ship a signal, CE
        # where their answer is verified, so earlier skills stay trained, not only held in place. With
        # retention on, those with neither still serve the KL to the previous core. Their own adapters are not
        # followed: an agent's specialist has usually moved on since, and would fail its old claim check; under
        # "latest" they are re-scored by the agent's newest one.
        if latest:
            replay_learnings = teachers.latest(replay_learnings, latest).learnings
        replay, _ = build_examples(replay_learnings, codec, require_signal=params.retention_weight == 0)
        if replay:
            # Drawn per skill, not per agent: the hive sampled the replay set balanced per skill.
            replay_sampler = BalancedSampler(
                [e.skill for e in replay], seed=params.seed + REPLAY_SEED_OFFSET, rank=rank
            )
    return Data(
        examples,
        report,
        sampler,
        replay,
        replay_sampler,
        lineage,
        learning_ids_text(learnings),
        [str(learning.id) for learning in replay_learnings],
        codec,
    )


def write_unusable(path: Path, report: LoadReport) -> None:
    """One ``{"id", "reason", "detail"}`` line per learning not trained on, written whole and durably."""
    durable.write_lines(
        path, [json.dumps({"id": d.id, "reason": d.reason, "detail": d.detail}, sort_keys=True) for d in report.dropped]
    )
