"""On-the-job learning: the agent tunes its own copy of the core on the tasks it works."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from agents.model import generate, lm_loss, make_batch, topk_signal
from streams.events import Feedback, TeacherSignal

if TYPE_CHECKING:
    from transformers import PreTrainedModel


@dataclass(frozen=True)
class Experience:
    """One worked task: what was asked, what the agent said, and what the job said back."""

    prompt: str
    completion: str
    feedback: Feedback
    teacher: TeacherSignal


class Specialist:
    """The core the agent runs plus what it learned on the job.

    For the tiny core the agent tunes all weights; its "adapter" is the difference from the core.
    On a core swap the adapter is reset: the new core already holds what the fleet learned.
    """

    def __init__(self, core: PreTrainedModel, core_version: int, lr: float, topk: int) -> None:
        self.core_version = core_version
        self.lr = lr
        self.topk = topk
        self.steps = 0
        self._reset(core)

    def _reset(self, core: PreTrainedModel) -> None:
        self.model = copy.deepcopy(core)
        self.model.train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=0.0)

    def swap_core(self, core: PreTrainedModel, version: int) -> None:
        self._reset(core)
        self.core_version = version
        self.steps = 0

    def answer(self, prompts: list[str]) -> list[str]:
        return generate(self.model, prompts)

    def learn(self, prompts: list[str], answers: list[str]) -> float:
        """One optimizer step of cross-entropy on the verified answers; returns the loss."""
        self.model.train()
        loss = lm_loss(self.model, make_batch(prompts, answers))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.steps += 1
        return float(loss.item())

    def teacher_signals(self, prompts: list[str], answers: list[str], overs: list[str]) -> list[TeacherSignal]:
        """The specialist's top-k log-probabilities along each answer: what the hive distills."""
        signals = topk_signal(self.model, prompts, answers, self.topk)
        return [
            TeacherSignal(k=self.topk, over=over, token_ids=ids, logprobs=lps)  # type: ignore[arg-type]
            for (ids, lps), over in zip(signals, overs, strict=True)
        ]
