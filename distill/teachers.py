"""Teacher signals recomputed from an agent's adapter claim check, for learnings that ship none."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from agents.claim_check import MAX_BYTES_FACTOR, SHA_MISMATCH, ClaimCheckError, load_adapter
from agents.codec import BYTE_CODEC, Codec, load_codec
from agents.model import WEIGHTS_FILE, load_core, topk_signal
from streams.events import MAX_TOPK, ClaimCheck, Learning, TeacherSignal

if TYPE_CHECKING:
    from transformers import PreTrainedModel

# Answers scored per forward pass of a specialist.
SIGNAL_BATCH = 64


@dataclass(frozen=True)
class Dropped:
    """A learning the job will not train on: its id, a short reason, and what was wrong."""

    id: str
    reason: str
    detail: str


@dataclass
class Filled:
    """What ``AdapterTeachers.fill`` returns: the learnings to go on with, and what it met on the way.

    ``reasons`` counts, per learning, each claim check that gave no signal (``adapter_*``, the sha256
    mismatch included); ``dropped`` lists the learnings removed (a sha256 mismatch) with their reason.
    """

    learnings: list[Learning]
    reasons: Counter[str] = field(default_factory=Counter)
    dropped: list[Dropped] = field(default_factory=list)


class AdapterTeachers:
    """Scores learned answers with the specialists their adapter claim checks name.

    A claim check is followed only into a directory under one of ``roots`` (``resolve_adapter``). Its weights
    file is read once, at most ``max_bytes`` of it (a bigger file is never read), and hashed; only bytes whose
    sha256 equals the claim check are loaded, so the hash covers exactly what is loaded. Safetensors only, never
    pickle. The teacher is always the base core (``base_core``, the round's own) with the agent's weights:
    - full weights (``model.safetensors``, the tiny core's specialists) are loaded strictly: the agent's
      ``config.json`` is never read, and a tensor missing, extra or of another shape refuses the teacher;
    - a PEFT LoRA adapter (``adapter_model.safetensors`` plus ``adapter_config.json``, a pretrained core's) has
      its config checked as data (``adapter_bad_config``) and exactly one ``lora_A``/``lora_B`` pair per targeted
      linear layer of the base, then is merged into a copy of the base.
    Signals are in the ids of the base core's codec (``load_codec(base_core)``) and name its tokenizer.

    A learning whose weights fail the sha256 is dropped (``adapter_sha_mismatch``), never trained on. Any
    other failure (``adapter_unsupported_uri``, ``adapter_outside_roots``, ``adapter_missing``,
    ``adapter_too_large``, ``adapter_unreadable``, ``adapter_bad_config``, ``adapter_shape_mismatch``) drops only
    the signal: the learning keeps its verified answer and any signal it shipped. Nothing here raises for a bad
    claim check.
    """

    def __init__(self, k: int, base_core: Path, roots: list[Path], max_bytes: int | None = None) -> None:
        if k < 1:
            raise ValueError(f"top-k must be at least 1, got {k}")
        self.k = k
        self.base_core = base_core
        self.roots = list(roots)
        self._max_bytes = max_bytes
        # (uri, claimed sha256) -> the teacher, or the error that refused it.
        self._cache: dict[tuple[str, str], PreTrainedModel | ClaimCheckError] = {}
        self._base: PreTrainedModel | None = None
        self._codec: Codec | None = None

    @property
    def codec(self) -> Codec:
        """The base core's codec, loaded on first use."""
        if self._codec is None:
            self._codec = load_codec(self.base_core)
        return self._codec

    @property
    def max_bytes(self) -> int:
        """The largest weights file read: the configured cap, else a few times the base core's weights file."""
        if self._max_bytes is None:
            self._max_bytes = MAX_BYTES_FACTOR * (self.base_core / WEIGHTS_FILE).stat().st_size
        return self._max_bytes

    @property
    def loaded(self) -> list[str]:
        """The URIs whose specialist is loaded, in the order they were first met."""
        return list(dict.fromkeys(uri for (uri, _), entry in self._cache.items() if not isinstance(entry, Exception)))

    @property
    def failures(self) -> dict[str, ClaimCheckError]:
        """Each claim check URI that gave no teacher, with why (the last error met for it)."""
        return {uri: entry for (uri, _), entry in self._cache.items() if isinstance(entry, ClaimCheckError)}

    def _teacher(self, uri: str, sha256: str) -> PreTrainedModel | ClaimCheckError:
        key = (uri, sha256)
        if key not in self._cache:
            try:
                self._cache[key] = self._load(uri, sha256)
            except ClaimCheckError as err:
                self._cache[key] = err
        return self._cache[key]

    def _load(self, uri: str, sha256: str) -> PreTrainedModel:
        return load_adapter(uri, sha256, self._base_model(), self.roots, self.max_bytes)

    def _base_model(self) -> PreTrainedModel:
        if self._base is None:
            self._base = load_core(self.base_core)
        return self._base

    def fill(self, learnings: list[Learning]) -> Filled:
        """Gives each learning without a teacher but with an adapter a signal from that adapter.

        Returns the learnings to train on (a sha256 mismatch removed), the reasons met and the dropped ones.
        """
        result = Filled([])
        kept: list[Learning | None] = list(learnings)
        pending: dict[tuple[str, str], list[int]] = {}
        for index, learning in enumerate(learnings):
            if learning.teacher is not None or learning.adapter is None:
                continue
            key = (learning.adapter.uri, learning.adapter.sha256)
            teacher = self._teacher(*key)
            if isinstance(teacher, ClaimCheckError):
                result.reasons[teacher.reason] += 1
                if teacher.reason == SHA_MISMATCH:
                    kept[index] = None
                    result.dropped.append(Dropped(str(learning.id), teacher.reason, teacher.detail))
            elif self._fits(learning):
                pending.setdefault(key, []).append(index)
            # A learning too long for the core keeps no signal; the dataset counts it as too_long.
        for key, indices in pending.items():
            model = self._cache[key]
            assert not isinstance(model, Exception)
            self._rescore(model, learnings, indices, kept)
        result.learnings = [learning for learning in kept if learning is not None]
        return result

    def latest(self, learnings: list[Learning], newest: dict[str, ClaimCheck] | None = None) -> Filled:
        """Re-scores every learning of an agent with that agent's newest claim check, replacing any signal it
        shipped. ``newest`` (``newest_claim_checks``) is taken from ``learnings`` unless given: the job takes it
        from the round's learnings and its replay together, so that both follow the agent as it is now.

        An agent whose newest claim check gives no teacher keeps every learning as it came (its reason is counted
        as ``latest_<reason>``, per learning); so does a learning too long for the core. Nothing is dropped here.
        """
        newest = newest_claim_checks(learnings) if newest is None else newest
        result = Filled(list(learnings))
        for agent_id, check in newest.items():
            indices = [i for i, lr in enumerate(learnings) if lr.agent_id == agent_id and self._fits(lr)]
            if not indices:
                continue
            teacher = self._teacher(check.uri, check.sha256)
            if isinstance(teacher, ClaimCheckError):
                result.reasons[f"latest_{teacher.reason}"] += len(indices)
                continue
            self._rescore(teacher, learnings, indices, result.learnings)  # type: ignore[arg-type]
        return result

    def _rescore(
        self, model: PreTrainedModel, learnings: list[Learning], indices: list[int], out: list[Learning | None]
    ) -> None:
        """Puts into ``out[i]`` learning ``i`` with ``model``'s signal, for each of ``indices``, in batches."""
        for start in range(0, len(indices), SIGNAL_BATCH):
            chunk = indices[start : start + SIGNAL_BATCH]
            for index, signal in zip(chunk, self._signals(model, [learnings[i] for i in chunk]), strict=True):
                out[index] = learnings[index].model_copy(update={"teacher": signal})

    def _fits(self, learning: Learning) -> bool:
        answer = learning.learned_answer()
        codec = self.codec
        return len(codec.prompt_ids(learning.prompt)) + len(codec.answer_ids(answer)) <= codec.max_positions

    def _signals(self, model: PreTrainedModel, learnings: list[Learning]) -> list[TeacherSignal]:
        k = min(self.k, MAX_TOPK, int(model.config.vocab_size))
        answers = [learning.learned_answer() for learning in learnings]
        rows = topk_signal(model, [learning.prompt for learning in learnings], answers, k, self.codec)
        # The ids are the base core's codec's; a signal without a name means the byte tokenizer's (streams.events).
        tokenizer = None if self.codec.fingerprint == BYTE_CODEC.fingerprint else self.codec.fingerprint
        # The signal follows the learned answer: the correction when there is one, as learned_answer() says.
        return [
            TeacherSignal(
                k=k,
                over="correction" if lr.feedback.correction is not None else "completion",
                token_ids=ids,
                logprobs=lps,
                tokenizer=tokenizer,
            )
            for lr, (ids, lps) in zip(learnings, rows, strict=True)
        ]


def newest_claim_checks(learnings: list[Learning]) -> dict[str, ClaimCheck]:
    """Per agent, the claim check of its newest learning that names one: the latest ``created_at``, the later
    in the list breaking ties."""
    newest: dict[str, tuple[datetime, int, ClaimCheck]] = {}
    for index, learning in enumerate(learnings):
        if learning.adapter is None:
            continue
        key = (learning.created_at, index)
        if learning.agent_id not in newest or key > newest[learning.agent_id][:2]:
            newest[learning.agent_id] = (learning.created_at, index, learning.adapter)
    return {agent_id: check for agent_id, (_, _, check) in newest.items()}
