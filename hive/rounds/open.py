"""Opening a round: the learnings it takes, its replay sample, and the files the distill job reads."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from agents.skills import load_skill, skill_catalog
from agents.skills.splits import held_out_split
from distill.manifest import (
    AdapterParams,
    DistillParams,
    EvalParams,
    Lineage,
    Manifest,
    MlflowParams,
    write_learnings,
)
from hive.config import HiveSettings
from hive.cores.files import CoreFiles
from hive.rounds.book import NoNewLearnings, RoundBook, RoundError, RoundRecord, failing_round
from hive.rounds.gate_seed import round_eval_seed
from hive.rounds.quarantine import quarantine
from hive.rounds.share import cap_agents
from hive.store.interface import Indexed, LearningStore, Quarantined
from streams import durable


class OfSkill(Protocol):
    @property
    def skill(self) -> str: ...


Item = TypeVar("Item", bound=OfSkill)


def sample_replay(earlier: Sequence[Item], size: int, seed: str) -> list[Item]:
    """A seeded sample of ``size`` earlier learnings (or all of them, if fewer), balanced per skill; they may be
    learnings or their ``Indexed`` entries, which sample alike.

    Each skill gets an equal share; a skill with fewer learnings than its share gives the rest to the
    others. The sample keeps the store's order, so the same store and seed give the same file.
    """
    if size <= 0 or not earlier:
        return []
    rng = random.Random(f"replay:{seed}")
    by_skill: dict[str, list[int]] = {}
    for index, learning in enumerate(earlier):
        by_skill.setdefault(learning.skill, []).append(index)
    pools = {skill: rng.sample(indices, len(indices)) for skill, indices in sorted(by_skill.items())}
    chosen: list[int] = []
    while len(chosen) < size and pools:
        # One round-robin pass takes one learning per skill still holding some.
        for skill in list(pools):
            if len(chosen) == size:
                break
            chosen.append(pools[skill].pop())
            if not pools[skill]:
                del pools[skill]
    return [earlier[i] for i in sorted(chosen)]


def open_round(
    settings: HiveSettings,
    store: LearningStore,
    book: RoundBook,
    base: CoreFiles,
    experiment: str,
    trigger: str = "",
) -> RoundRecord:
    """Takes every learning stored since the last round into a new round, with its manifest.

    No agent is more than ``HIVE_DISTILL__MAX_AGENT_SHARE`` of the round, nor of its replay: past it, a seeded
    sample of its own is kept (``hive.rounds.share``; the round records the rest as ``capped``). Learnings no
    round can use are quarantined first, never failing the round: a skill the hive cannot
    load (``unknown_skill``), a stored JSON that no longer parses (``unreadable``), or a prompt that evaluation
    holds out (``held_out_prompt``: stored before ingest refused those). Raises
    NoNewLearnings when none is left; learnings quarantined before are left out of the round and its replay.

    ``experiment`` must already exist with its artifact location under HIVE_HOME: a job that had
    to create it would put its artifacts in ``./mlruns`` of the round directory.
    """
    after = book.covered_seq()
    upto = store.max_seq()
    rows, unreadable = store.read_checked(after_seq=after, upto_seq=upto)
    taught = book.taught_skills()
    catalog = skill_catalog(settings.skills)
    lost = [s for s in taught if s not in catalog]
    if lost:
        # Not the learnings' fault: the gate must check every skill a released core was taught.
        raise RoundError(
            f"earlier rounds taught skills the hive cannot load now: {', '.join(lost)}; "
            "add their module:attr to HIVE_SKILLS so rounds can evaluate them"
        )
    unknown = [
        Quarantined(
            str(learning.id),
            seq,
            learning.agent_id,
            learning.skill,
            "unknown_skill",
            f"the hive cannot load skill {learning.skill!r}: add its module:attr to HIVE_SKILLS",
        )
        for seq, learning in rows
        if learning.skill not in catalog
    ]
    known = [(seq, learning) for seq, learning in rows if learning.skill in catalog]
    skills = {name: load_skill(catalog[name]) for name in {learning.skill for _, learning in known}}
    # Ingest refuses these since held-out splits exist; a store from before them may still hold some.
    held_out = {
        seq: Quarantined(
            str(learning.id),
            seq,
            learning.agent_id,
            learning.skill,
            "held_out_prompt",
            f"the prompt is in skill {learning.skill!r}'s {split} split, which evaluation holds out",
        )
        for seq, learning in known
        if (split := held_out_split(skills[learning.skill], learning.prompt)) is not None
    }
    taken = [(seq, learning) for seq, learning in known if seq not in held_out]
    round_id = book.next_id() if taken else None
    quarantined = quarantine(store, [*unreadable, *unknown, *held_out.values()], round_id)
    if not taken:
        held = f" ({quarantined} quarantined now)" if quarantined else ""
        raise NoNewLearnings(f"no new learnings after seq {after}{held}")
    assert round_id is not None
    share_seed = f"{settings.distill.seed}:{round_id}"
    kept, capped = cap_agents([learning for _, learning in taken], settings.distill.max_agent_share, share_seed)
    if capped:
        kept_ids = {learning.id for learning in kept}
        taken = [(seq, learning) for seq, learning in taken if learning.id in kept_ids]
    learnings = [learning for _, learning in taken]
    record = RoundRecord(
        id=round_id,
        state="open",
        base_version=base.version,
        after_seq=after,
        upto_seq=upto,
        learnings=len(learnings),
        per_agent=dict(sorted(Counter(learning.agent_id for learning in learnings).items())),
        skills=sorted({learning.skill for learning in learnings} | set(taught)),
        trigger=trigger,
        quarantined=quarantined,
        capped=capped,
    )
    # round.json first: a crash while the files below are written leaves a round that the next start
    # fails with a reason ("manifest.json is missing"), never a directory that no record names.
    book.save(record)
    with failing_round(book, record):
        directory = book.path(record.id)
        write_learnings(directory / "learnings.jsonl", learnings)
        replay = None
        if after > 0 and settings.distill.replay_size > 0:
            # Earlier rounds' learnings, so the core keeps being taught what it already knows.
            # Sampled from the catalog's index of the history; only the sampled learnings are read.
            earlier = _replayable(store, book, after)
            # Capped before sampling: what earlier caps left out of their rounds must not come back by replay.
            earlier, _ = cap_agents(earlier, settings.distill.max_agent_share, f"replay:{share_seed}")
            chosen = sample_replay(earlier, settings.distill.replay_size, f"{settings.distill.seed}:{record.id}")
            rows, unreadable = store.read_seqs([entry.seq for entry in chosen])
            quarantine(store, unreadable, record.id)
            sample = [learning for _, learning in rows]
            if sample:
                replay = directory / "replay.jsonl"
                write_learnings(replay, sample)
        # The distill job reads the file's n-th line as seq after+n: only a whole range has that lineage.
        whole = [seq for seq, _ in taken] == list(range(after + 1, upto + 1))
        write_manifest(
            directory,
            record.id,
            base.directory,
            replay,
            [catalog[s] for s in record.skills],
            settings.distill.for_round(first=base.version == 0),
            eval_=EvalParams(tasks=settings.gate.eval_tasks, seed=round_eval_seed(settings, record.id)),
            mlflow=MlflowParams(tracking_uri=settings.mlflow_uri, experiment=experiment, run_name=record.id),
            lineage=Lineage(after_seq=after, upto_seq=upto) if whole else None,
            store_range=Lineage(after_seq=after, upto_seq=upto),
            adapters=settings.adapters_manifest(),
        )
    return record


def _replayable(store: LearningStore, book: RoundBook, after: int) -> list[Indexed]:
    """The index entries of the learnings up to seq ``after`` a replay may sample: none quarantined, none of a
    skipped round (an operator skipped it because its learnings could not be distilled), none of a rejected round
    (the gate refused what they taught: replaying them would teach it again)."""
    skipped = [(r.after_seq, r.upto_seq) for r in book.all() if r.state in ("skipped", "rejected")]
    return [entry for entry in store.index(0, after) if not any(lo < entry.seq <= hi for lo, hi in skipped)]


def write_manifest(
    directory: Path,
    round_id: str,
    base_core: Path,
    replay: Path | None,
    skill_specs: list[str],
    distill: DistillParams | dict[str, Any],
    eval_: EvalParams | dict[str, Any],
    mlflow: MlflowParams | dict[str, Any] | None = None,
    lineage: Lineage | dict[str, int] | None = None,
    store_range: Lineage | dict[str, int] | None = None,
    adapters: AdapterParams | dict[str, Any] | None = None,
) -> Path:
    """Writes the job's ``distill.manifest.Manifest`` as ``directory/manifest.json``, over
    ``directory/learnings.jsonl``, durably; pydantic's ValidationError says what the job would refuse.

    ``store_range`` is the hive's own record of the seqs the round took (the job ignores it): a round.json
    lost to a crash is rebuilt as failed with that range.
    """
    manifest = Manifest(
        round_id=round_id,
        base_core=base_core.resolve(),
        out_dir=(directory / "out").resolve(),
        learnings=(directory / "learnings.jsonl").resolve(),
        replay=replay.resolve() if replay is not None else None,
        skills=skill_specs,
        distill=DistillParams.model_validate(distill),
        eval=EvalParams.model_validate(eval_),
        mlflow=None if mlflow is None else MlflowParams.model_validate(mlflow),
        lineage=None if lineage is None else Lineage.model_validate(lineage),
        store_range=None if store_range is None else Lineage.model_validate(store_range),
        adapters=AdapterParams() if adapters is None else AdapterParams.model_validate(adapters),
    )
    path = directory / "manifest.json"
    durable.write_text(path, manifest.model_dump_json(indent=2))
    return path
