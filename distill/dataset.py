"""The round's learnings as training examples, a per-agent balanced sampler, and the collate."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from agents.codec import BYTE_CODEC, Codec
from agents.model import Batch, make_batch
from distill.manifest import read_learnings
from distill.teachers import AdapterTeachers, Dropped
from streams.events import ClaimCheck, Learning


@dataclass(frozen=True)
class Example:
    """One learning ready for training.

    ``teacher_ids``/``teacher_logprobs`` have one row per answer token plus its end token (in the ids of the
    base core's codec), or are None. ``verified``
    marks an answer the job confirmed (a correction, or a completion with reward 1), which gets
    cross-entropy.
    """

    prompt: str
    answer: str
    agent_id: str
    skill: str
    teacher_ids: list[list[int]] | None = None
    teacher_logprobs: list[list[float]] | None = None
    verified: bool = False
    learning_id: str = ""  # the learning it came from; empty for examples built by hand


# What each reason that drops a whole learning means, for the unusable list the hive quarantines from.
DROP_DETAILS = {
    "too_long": "prompt and answer exceed the core's {positions} positions",
    "no_signal": "neither a teacher signal nor a verified answer: nothing to learn from",
    "teacher_out_of_vocab": "its teacher signal names token ids beyond the core's vocabulary, and no verified answer",
    "teacher_misaligned": "its teacher signal does not line up with the answer, and no verified answer",
    "teacher_other_tokenizer": "its teacher signal names the ids of another tokenizer than the core's, "
    "and no verified answer",
}


@dataclass
class LoadReport:
    """What a load kept and why it dropped the rest, so a round can say what it trained on.

    ``skipped`` counts every reason met (a dropped learning, or a signal dropped from a kept one);
    ``teacher_skipped`` the claim checks that gave no teacher, by reason; ``dropped`` lists each learning
    not trained on, with its reason.
    """

    kept: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    teacher_skipped: Counter[str] = field(default_factory=Counter)
    dropped: list[Dropped] = field(default_factory=list)


def example_from_learning(
    learning: Learning, codec: Codec, require_signal: bool = True
) -> tuple[Example | None, str | None]:
    """Turns a learning into an example, or returns ``(None, reason)`` when it carries nothing to learn.

    ``codec`` is the base core's: lengths and teacher alignment are counted in its ids. ``require_signal=False``
    keeps learnings with neither a teacher nor a verified answer: a replay batch needs only the text, since its
    target is the previous core's own distribution.
    """
    answer = learning.learned_answer()
    answer_ids = codec.answer_ids(answer)
    width = len(codec.prompt_ids(learning.prompt)) + len(answer_ids)
    if width > codec.max_positions:
        return None, "too_long"
    feedback = learning.feedback
    verified = (feedback.correction is not None and answer == feedback.correction) or (
        feedback.correction is None and feedback.reward == 1.0
    )
    ids = lps = None
    reason = None
    if learning.teacher is not None:
        if (learning.teacher.tokenizer or BYTE_CODEC.fingerprint) != codec.fingerprint:
            # Ids of another tokenizer name other tokens: mixed in, they would teach nonsense. Drop the signal.
            reason = "teacher_other_tokenizer"
        elif any(t >= codec.vocab_size for row in learning.teacher.token_ids for t in row):
            # Ids beyond the core's vocabulary cannot be scored; one such learning must not fail the round.
            reason = "teacher_out_of_vocab"
        elif len(learning.teacher.token_ids) == len(answer_ids):
            ids, lps = learning.teacher.token_ids, learning.teacher.logprobs
        else:
            # Positions that do not line up with the answer would teach the wrong tokens; drop only the signal.
            reason = "teacher_misaligned"
    if ids is None and not verified and require_signal:
        return None, reason or "no_signal"
    example = Example(learning.prompt, answer, learning.agent_id, learning.skill, ids, lps, verified, str(learning.id))
    return example, reason


def build_examples(
    learnings: Sequence[Learning],
    codec: Codec,
    require_signal: bool = True,
    teachers: AdapterTeachers | None = None,
    latest: dict[str, ClaimCheck] | None = None,
) -> tuple[list[Example], LoadReport]:
    """Turns learnings into examples in ``codec``'s ids (the base core's); with ``teachers``, a learning that
    ships no signal but names its adapter gets one computed from that adapter (or is dropped when the adapter
    fails its sha256). With ``latest`` (agent id -> its newest claim check, ``distill.teachers.newest_claim_checks``)
    too, every learning of those agents is first re-scored by that claim check (``AdapterTeachers.latest``).

    The report counts every reason met, including teacher signals dropped from examples that were kept.
    """
    report = LoadReport()
    items = list(learnings)
    if teachers is not None:
        if teachers.codec.fingerprint != codec.fingerprint:
            raise ValueError(
                f"the teachers' core {teachers.base_core} tokenizes as {teachers.codec.fingerprint}, "
                f"the examples as {codec.fingerprint}: signals would not line up with the labels"
            )
        if latest is not None:
            relabelled = teachers.latest(items, latest)
            items = relabelled.learnings
            report.teacher_skipped.update(relabelled.reasons)
        filled = teachers.fill(items)
        items = filled.learnings
        report.skipped.update(filled.reasons)
        report.teacher_skipped.update(filled.reasons)
        report.dropped.extend(filled.dropped)
    examples: list[Example] = []
    for learning in items:
        example, reason = example_from_learning(learning, codec, require_signal)
        if reason is not None:
            report.skipped[reason] += 1
        if example is not None:
            examples.append(example)
        elif reason is not None:
            detail = DROP_DETAILS[reason].format(positions=codec.max_positions) if reason in DROP_DETAILS else reason
            report.dropped.append(Dropped(str(learning.id), reason, detail))
    report.kept = len(examples)
    return examples, report


def load_examples(
    path: Path, codec: Codec, require_signal: bool = True, teachers: AdapterTeachers | None = None
) -> tuple[list[Example], LoadReport]:
    """``build_examples`` over the learnings of a round's learnings file (see ``distill.manifest.read_learnings``)."""
    return build_examples(read_learnings(path), codec, require_signal, teachers)


class BalancedSampler:
    """Draws each batch item by picking an agent uniformly, then one of its examples uniformly.

    A chatty agent therefore gets the same share of every batch as a quiet one. Draws depend only on
    ``(seed, rank, step)``, so data-parallel ranks see different data and a resumed run sees the same
    batches as an uninterrupted one.
    """

    def __init__(self, agent_ids: Sequence[str], seed: int = 0, rank: int = 0) -> None:
        if not agent_ids:
            raise ValueError("BalancedSampler needs at least one example")
        by_agent: dict[str, list[int]] = {}
        for index, agent in enumerate(agent_ids):
            by_agent.setdefault(agent, []).append(index)
        # Sorted, so that the same data gives the same draws whatever order the file lists it in.
        self.agents = sorted(by_agent)
        self._by_agent = by_agent
        self.seed = seed
        self.rank = rank

    def batch(self, step: int, size: int) -> list[int]:
        """The example indices of this rank's batch at ``step``."""
        rng = random.Random(f"balanced:{self.seed}:{self.rank}:{step}")
        return [rng.choice(self._by_agent[rng.choice(self.agents)]) for _ in range(size)]

    def __iter__(self) -> Iterator[int]:
        """An endless stream of single draws, step by step; handy for measuring shares."""
        step = 0
        while True:
            yield from self.batch(step, 64)
            step += 1


@dataclass
class TrainBatch:
    """A model batch plus the per-position targets of every loss part.

    Position tensors are flattened in the order of ``batch.labels[:, 1:] != -100`` (row by row, left to
    right), the same order as ``answer_logits(model, batch)[positions]``.
    """

    batch: Batch
    positions: torch.Tensor  # (B, T-1) bool
    targets: torch.Tensor  # (P,) long: the label token at each position
    teacher_ids: torch.Tensor  # (P, k) long; 0 where padded
    teacher_logprobs: torch.Tensor  # (P, k) float; -inf where padded or where the row has no teacher
    has_teacher: torch.Tensor  # (P,) bool: the position's row carries a teacher signal
    verified: torch.Tensor  # (P,) bool: the position's row is a verified answer (cross-entropy)
    tokens: int  # non-padding tokens in the batch


def collate(examples: Sequence[Example], codec: Codec) -> TrainBatch:
    """Builds ``make_batch(prompts, answers, codec)`` and aligns each row's teacher rows with its label positions."""
    batch = make_batch([e.prompt for e in examples], [e.answer for e in examples], codec)
    positions = batch.labels[:, 1:] != -100
    targets = batch.labels[:, 1:][positions]
    counts = positions.sum(dim=1).tolist()
    k = max((len(e.teacher_ids[0]) for e in examples if e.teacher_ids), default=1)
    total = int(targets.numel())
    teacher_ids = torch.zeros((total, k), dtype=torch.long)
    teacher_lps = torch.full((total, k), float("-inf"))
    has_teacher = torch.zeros(total, dtype=torch.bool)
    verified = torch.zeros(total, dtype=torch.bool)
    start = 0
    for example, count in zip(examples, counts, strict=True):
        stop = start + count
        if example.teacher_ids is not None and example.teacher_logprobs is not None:
            if len(example.teacher_ids) != count:
                raise ValueError(
                    f"teacher signal has {len(example.teacher_ids)} positions, the answer {count}: {example.prompt!r}"
                )
            width = len(example.teacher_ids[0])
            teacher_ids[start:stop, :width] = torch.tensor(example.teacher_ids, dtype=torch.long)
            teacher_lps[start:stop, :width] = torch.tensor(example.teacher_logprobs, dtype=torch.float32)
            has_teacher[start:stop] = True
        verified[start:stop] = example.verified
        start = stop
    return TrainBatch(
        batch=batch,
        positions=positions,
        targets=targets,
        teacher_ids=teacher_ids,
        teacher_logprobs=teacher_lps,
        has_teacher=has_teacher,
        verified=verified,
        tokens=int(batch.attention_mask.sum()),
    )
