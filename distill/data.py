"""The round's data as one rank of the distill job loads it: examples, replay, samplers and lineage."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.codec import BYTE_CODEC, Codec, load_codec
from distill.dataset import BalancedSampler, Example, LoadReport, build_examples
from distill.lineage import learning_ids_text, round_lineage
from distill.manifest import Manifest, read_learnings
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
