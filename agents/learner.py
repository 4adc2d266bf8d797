"""On-the-job learning: the agent tunes its own copy of the core on the tasks it works."""

from __future__ import annotations

import copy
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch

from agents.codec import BYTE_CODEC, Codec, check_fits
from agents.lora import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    LoraSpec,
    Tuning,
    linear_targets,
    resolve_tuning,
    save_adapter,
    wrap,
)
from agents.model import WEIGHTS_FILE, file_sha256, generate, lm_loss, make_batch, save_core, topk_signal
from agents.skills import score_output
from agents.skills.splits import sample_tasks
from streams.events import ClaimCheck, Feedback, Learning, TeacherSignal

if TYPE_CHECKING:
    from transformers import PreTrainedModel


@dataclass(frozen=True)
class WorkedBatch:
    """One learning step's worth of work: the tasks, how many were right, and the learnings to publish."""

    tasks: list[tuple[str, str]]
    correct: int
    loss: float
    learnings: list[Learning]


class Specialist:
    """The core the agent runs plus what it learned on the job.

    ``tuning`` says how it learns (``agents.lora.resolve_tuning``): ``full`` tunes all weights of its own copy of
    the core (the tiny core's only mode; its "adapter" is then the whole model); ``lora`` trains a PEFT LoRA
    adapter (``lora``: rank, targets, learning rate) on a copy of the core whose own weights stay frozen; ``auto``
    is LoRA on a core with its own tokenizer, full on the byte core. On a core swap the adapter is reset: the new
    core already holds what the fleet learned. ``codec`` is the core's (``agents.codec.load_codec`` of its
    directory); the byte codec is the tiny core's, and a codec that does not match the core's vocabulary is
    refused here, before any step.
    """

    def __init__(
        self,
        core: PreTrainedModel,
        core_version: int,
        lr: float,
        topk: int,
        codec: Codec = BYTE_CODEC,
        tuning: Tuning = "auto",
        lora: LoraSpec | None = None,
    ) -> None:
        self.core_version = core_version
        self.lr = lr
        self.topk = topk
        self.steps = 0
        self.codec = codec
        self.tuning_setting = tuning
        self.lora = lora or LoraSpec()
        self.tuning = resolve_tuning(tuning, codec)
        self._reset(core)

    def _reset(self, core: PreTrainedModel) -> None:
        check_fits(self.codec, core)
        if self.tuning == "lora":
            # A fresh adapter on every core. Carrying an adapter over to a new core is issue #13's question.
            self.model = wrap(core, self.lora)
            lr = self.lora.lr if self.lora.lr is not None else self.lr
        else:
            self.model = copy.deepcopy(core)
            lr = self.lr
        self.model.train()
        self._params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer: torch.optim.Optimizer = torch.optim.AdamW(self._params, lr=lr, weight_decay=0.0)
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None

    def use_optimizer(
        self, optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    ) -> None:
        """Replaces the constant-lr AdamW with ``optimizer`` (over ``trainable()``) and an lr schedule stepped after
        every step: a benchmark gives every arm the distill job's recipe (``hive.bench.recipe``). A core swap
        returns to the default."""
        owned = {id(p) for p in self._params}
        given = [p for group in optimizer.param_groups for p in group["params"]]
        if len(given) != len(owned) or any(id(p) not in owned for p in given):
            raise ValueError("the optimizer must step exactly the specialist's trainable parameters")
        self.optimizer = optimizer
        self.scheduler = scheduler

    def trainable(self) -> list[torch.nn.Parameter]:
        """The parameters a learning step changes: the whole model's, or a LoRA adapter's."""
        return list(self._params)

    def swap_core(self, core: PreTrainedModel, version: int, codec: Codec | None = None) -> None:
        """Runs ``core`` from now on; ``codec`` only when the new core has another tokenizer than the old.

        A core that does not fit the codec (or the tuning) is refused (ValueError) before anything changes."""
        codec = codec or self.codec
        check_fits(codec, core)
        tuning = resolve_tuning(self.tuning_setting, codec)
        if tuning == "lora":
            linear_targets(core, self.lora.targets)
        self.codec = codec
        self.tuning = tuning
        self._reset(core)
        self.core_version = version
        self.steps = 0

    def save(self, directory: Path) -> str:
        """Writes what the specialist learned into ``directory``; returns the sha256 its claim check carries.

        LoRA: the adapter as PEFT writes it (``adapter_model.safetensors``, whose sha256 this is, and
        ``adapter_config.json``). Full: the whole model as a core (``model.safetensors``). Files of the other kind
        left from an earlier save are removed, so the directory holds one specialist.
        """
        stale = (WEIGHTS_FILE, "config.json") if self.tuning == "lora" else (ADAPTER_WEIGHTS, ADAPTER_CONFIG)
        for name in stale:
            (directory / name).unlink(missing_ok=True)
        if self.tuning == "lora":
            save_adapter(self.model, directory)
            return file_sha256(directory / ADAPTER_WEIGHTS)
        return save_core(self.model, directory)

    def answer(self, prompts: list[str]) -> list[str]:
        return generate(self.model, prompts, self.codec)

    def learn(self, prompts: list[str], answers: list[str]) -> float:
        """One optimizer step of cross-entropy on the verified answers; returns the loss."""
        self.model.train()
        loss = lm_loss(self.model, make_batch(prompts, answers, self.codec))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self._params, 1.0)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.steps += 1
        return float(loss.item())

    def teacher_signals(self, prompts: list[str], answers: list[str], overs: list[str]) -> list[TeacherSignal]:
        """The specialist's top-k log-probabilities along each answer: what the hive distills."""
        signals = topk_signal(self.model, prompts, answers, self.topk, self.codec)
        # The byte tokenizer is the one a signal without a name means: its signals stay as they always were.
        tokenizer = None if self.codec.fingerprint == BYTE_CODEC.fingerprint else self.codec.fingerprint
        return [
            TeacherSignal(k=self.topk, over=over, token_ids=ids, logprobs=lps, tokenizer=tokenizer)  # type: ignore[arg-type]
            for (ids, lps), over in zip(signals, overs, strict=True)
        ]

    def with_signals(self, learnings: Sequence[Learning]) -> list[Learning]:
        """The learnings with this specialist's teacher signal along each one's verified answer.

        A learning keeps its id. One with nothing verified to follow (a low reward and no
        correction) is returned as it is.
        """
        targets = [(i, verified_answer(learning)) for i, learning in enumerate(learnings)]
        chosen = [(i, answer) for i, answer in targets if answer is not None]
        result = list(learnings)
        if not chosen:
            return result
        signals = self.teacher_signals(
            [learnings[i].prompt for i, _ in chosen],
            [text for _, (text, _) in chosen],
            [over for _, (_, over) in chosen],
        )
        for (i, _), signal in zip(chosen, signals, strict=True):
            result[i] = learnings[i].model_copy(update={"teacher": signal})
        return result


def verified_answer(learning: Learning) -> tuple[str, Literal["completion", "correction"]] | None:
    """The answer worth learning, and which text it is; None when nothing in the feedback is verified.

    The completion when it earned the full reward, else the correction when there is one.
    """
    feedback = learning.feedback
    if feedback.reward is not None and feedback.reward >= 1.0:
        return learning.completion, "completion"
    if feedback.correction is not None:
        return feedback.correction, "correction"
    return None


def make_learning(
    agent_id: str,
    skill: str,
    core_version: int,
    prompt: str,
    completion: str,
    reward: float | None = None,
    correction: str | None = None,
    adapter: ClaimCheck | None = None,
) -> Learning:
    """A new learning; its id is made here, once, and every re-send reuses it (the hive dedupes by it)."""
    return Learning(
        id=uuid.uuid4(),
        agent_id=agent_id,
        skill=skill,
        core_version=core_version,
        prompt=prompt,
        completion=completion,
        feedback=Feedback(reward=reward, correction=correction),
        adapter=adapter,
    )


def work_batch(
    specialist: Specialist,
    skill: object,
    agent_id: str,
    rng: random.Random,
    batch_size: int,
    publish: int,
    adapter: ClaimCheck | None = None,
) -> WorkedBatch:
    """Works a batch of tasks on the job: answer, get feedback, learn, and pick learnings to share.

    Feedback is the skill's score plus the reference answer as a verified correction. After the
    step, the specialist's top-k signal along the verified answer is attached: what the hive distills.
    """
    tasks = sample_tasks(skill, rng, "train", batch_size)  # never a prompt that evaluation holds out
    prompts = [p for p, _ in tasks]
    references = [a for _, a in tasks]
    completions = specialist.answer(prompts)
    rewards = [score_output(skill, p, a, c) for p, a, c in zip(prompts, references, completions, strict=True)]
    loss = specialist.learn(prompts, references)
    chosen = rng.sample(range(batch_size), min(publish, batch_size))
    # The reference is a verified correction; when the agent's own completion already earned the full
    # reward, the signal follows the completion instead (see ``verified_answer``).
    learnings = [
        make_learning(
            agent_id,
            skill.name,  # type: ignore[attr-defined]
            specialist.core_version,
            prompts[i],
            completions[i],
            reward=rewards[i],
            correction=references[i],
            adapter=adapter,
        )
        for i in chosen
    ]
    return WorkedBatch(tasks, sum(1 for r in rewards if r >= 1.0), loss, specialist.with_signals(learnings))
