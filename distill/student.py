"""The student a round trains (the whole core, or a LoRA adapter on it) and the previous core retention pulls to."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from agents.codec import Codec
from agents.lora import resolve_tuning, wrap
from agents.model import load_core
from distill.data import Data
from distill.manifest import Manifest

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def load_student(manifest: Manifest, codec: Codec) -> PreTrainedModel:
    """The round's base core in train mode: as it is for ``tuning="full"``, wrapped in a fresh PEFT LoRA adapter
    for ``tuning="lora"``, where only the adapter's parameters are trainable and the frozen base stays inside.

    Raises ValueError for ``lora`` on the tiny byte core, which learns only by full fine-tuning, and for a LoRA
    target that is tied to the input embeddings.
    """
    params = manifest.distill
    core = load_core(manifest.base_core)
    if resolve_tuning(params.tuning, codec) == "lora":
        check_untied_targets(core, params.lora_targets)
        # PEFT draws lora_A at random from torch's global generator, whose state depends on what the process did
        # before; seeded here, every rank, every run and the plain loop start from the same adapter (an unseeded
        # one made ZeRO-2 and ZeRO-3 runs of the same round diverge after two steps). The global generator is left
        # as it was.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(params.seed)
            # wrap() copies the core it adapts; this one is dropped, so the copy is the only one kept.
            core = wrap(core, params.lora_spec())
    core.train()
    return core


def check_untied_targets(core: Any, targets: list[str]) -> None:
    """Raises ValueError when a LoRA target is the output layer of a core that ties it to the input embeddings
    (SmolLM2 does): merging an adapter there would change the embeddings as well, and the released core would
    not be the model that was trained."""
    output, embeddings = core.get_output_embeddings(), core.get_input_embeddings()
    if output is None or embeddings is None or output.weight is not embeddings.weight:
        return
    names = [name for name, module in core.named_modules() if module is output]
    tied = [target for target in targets if any(name == target or name.endswith("." + target) for name in names)]
    if tied:
        raise ValueError(
            f"LoRA target {tied[0]!r} is this core's output layer, tied to its input embeddings "
            "(tie_word_embeddings); merging an adapter into it would change the embeddings too: leave it out of "
            "lora_targets"
        )


def trainable_parameters(student: torch.nn.Module) -> list[torch.nn.Parameter]:
    """What the optimizer steps: every parameter of a full student, only the adapter's of a LoRA one."""
    return [p for p in student.parameters() if p.requires_grad]


def is_lora(model: Any) -> bool:
    """True for a student that ``load_student`` wrapped in a LoRA adapter (a PEFT model)."""
    from peft import PeftModel

    return isinstance(model, PeftModel)


class AdapterOff:
    """The previous core of a LoRA student: the student's own frozen base, called with its adapter disabled.

    The base's weights never change in the LoRA arm, so they are exactly the core the round started from, and
    retention needs no second copy of the model. Called like a model (``answer_logits`` takes it); it runs in
    eval mode, as any reference model does, and the student's mode is restored after.
    """

    def __init__(self, student: Any) -> None:
        self.student = student

    def __call__(self, **kwargs: Any) -> Any:
        was_training = self.student.training
        self.student.eval()
        try:
            with self.student.disable_adapter():
                return self.student(**kwargs)
        finally:
            self.student.train(was_training)


def load_previous_core(manifest: Manifest, data: Data, student: Any) -> Any:
    """What retention pulls towards, frozen, or None when the round has no retention: for a LoRA student its own
    base (``AdapterOff``), for a full one a second copy of the round's base core in eval mode."""
    if data.replay_sampler is None or manifest.distill.retention_weight <= 0:
        return None
    if is_lora(student):
        return AdapterOff(student)
    previous = load_core(manifest.base_core)
    previous.eval()  # the teacher runs in eval() under no_grad
    previous.requires_grad_(False)
    return previous
