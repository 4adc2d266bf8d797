"""Teacher signals recomputed from an agent's adapter claim check, for learnings that ship none."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from safetensors import SafetensorError

from agents.claim_check import adapter_path
from agents.model import MAX_POSITIONS, WEIGHTS_FILE, file_sha256, load_core, topk_signal
from agents.tokenizer import ByteTokenizer
from streams.events import MAX_TOPK, Learning, TeacherSignal

if TYPE_CHECKING:
    from transformers import PreTrainedModel

# Answers scored per forward pass of a specialist.
SIGNAL_BATCH = 64


@dataclass(frozen=True)
class _Specialist:
    sha256: str
    model: PreTrainedModel


class AdapterTeachers:
    """Scores learned answers with the specialists their adapter claim checks name.

    Each URI is read, hashed and loaded once. A learning is only ever scored by weights whose sha256
    equals its claim check: on a mismatch the learning is dropped (``adapter_sha_mismatch``), never
    trained on. A claim check that cannot be followed (not ``file://``, missing, unreadable) drops only
    the signal, as a misaligned teacher does; the learning may still teach by its verified answer.
    """

    def __init__(self, k: int) -> None:
        if k < 1:
            raise ValueError(f"top-k must be at least 1, got {k}")
        self.k = k
        self._cache: dict[str, _Specialist | str] = {}
        self._tok = ByteTokenizer()

    @property
    def loaded(self) -> list[str]:
        """The URIs whose specialist is loaded, in the order they were first met."""
        return [uri for uri, entry in self._cache.items() if isinstance(entry, _Specialist)]

    def _specialist(self, uri: str) -> _Specialist | str:
        """The loaded specialist of ``uri``, or the reason it cannot be used."""
        if uri not in self._cache:
            self._cache[uri] = self._load(uri)
        return self._cache[uri]

    @staticmethod
    def _load(uri: str) -> _Specialist | str:
        directory = adapter_path(uri)
        if directory is None:
            return "adapter_unsupported_uri"
        weights = directory / WEIGHTS_FILE
        if not weights.is_file() or not (directory / "config.json").is_file():
            return "adapter_missing"
        sha = file_sha256(weights)
        try:
            model = load_core(directory)
        except (OSError, ValueError, SafetensorError):
            # A config or weights file that cannot be read; the round goes on without this teacher.
            return "adapter_unreadable"
        model.requires_grad_(False)
        return _Specialist(sha, model)

    def fill(self, learnings: list[Learning]) -> tuple[list[Learning], Counter[str]]:
        """Returns the learnings to train on, each one without a teacher but with an adapter now carrying
        one, and the reasons met: ``adapter_sha_mismatch`` for each dropped learning, and the reason for
        each signal that could not be computed."""
        reasons: Counter[str] = Counter()
        kept: list[Learning | None] = list(learnings)
        pending: dict[str, list[int]] = {}
        for index, learning in enumerate(learnings):
            if learning.teacher is not None or learning.adapter is None:
                continue
            specialist = self._specialist(learning.adapter.uri)
            if isinstance(specialist, str):
                reasons[specialist] += 1
            elif specialist.sha256 != learning.adapter.sha256:
                reasons["adapter_sha_mismatch"] += 1
                kept[index] = None
            elif self._fits(learning):
                pending.setdefault(learning.adapter.uri, []).append(index)
            # A learning too long for the core keeps no signal; the dataset counts it as too_long.
        for uri, indices in pending.items():
            specialist = self._specialist(uri)
            assert isinstance(specialist, _Specialist)
            for start in range(0, len(indices), SIGNAL_BATCH):
                chunk = indices[start : start + SIGNAL_BATCH]
                for index, signal in zip(
                    chunk, self._signals(specialist.model, [learnings[i] for i in chunk]), strict=True
                ):
                    kept[index] = learnings[index].model_copy(update={"teacher": signal})
        return [learning for learning in kept if learning is not None], reasons

    def _fits(self, learning: Learning) -> bool:
        answer = learning.learned_answer()
        return len(self._tok.prompt_ids(learning.prompt)) + len(self._tok.answer_ids(answer)) <= MAX_POSITIONS

    def _signals(self, model: PreTrainedModel, learnings: list[Learning]) -> list[TeacherSignal]:
        k = min(self.k, MAX_TOPK, int(model.config.vocab_size))
        answers = [learning.learned_answer() for learning in learnings]
        rows = topk_signal(model, [learning.prompt for learning in learnings], answers, k)
        # The signal follows the learned answer: the correction when there is one, as learned_answer() says.
        return [
            TeacherSignal(
                k=k,
                over="correction" if lr.feedback.correction is not None else "completion",
                token_ids=ids,
                logprobs=lps,
            )
            for lr, (ids, lps) in zip(learnings, rows, strict=True)
        ]
