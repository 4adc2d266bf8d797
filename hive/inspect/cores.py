"""``hive inspect diff`` and ``probe``: two cores on held-out tasks, and models side by side on one prompt."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from agents.codec import BYTE_CODEC, Codec, HFCodec
from agents.evaluation import TaskOutput, skill_outputs
from agents.model import generate
from agents.tokenizer import BOS_ID, EOS_ID, PAD_ID, SEP_ID
from hive.inspect.common import InspectInputError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

SPECIAL_TOKENS = {PAD_ID: "<pad>", BOS_ID: "<bos>", EOS_ID: "<eos>", SEP_ID: "<sep>"}


def which_right(score_a: float, score_b: float) -> str:
    """``A`` or ``B`` for the better-scored output, else ``both`` (both fully right) or ``neither``."""
    if score_a > score_b:
        return "A"
    if score_b > score_a:
        return "B"
    return "both" if score_a >= 1.0 else "neither"


def compare_outputs(outputs_a: list[TaskOutput], outputs_b: list[TaskOutput], examples: int) -> dict[str, Any]:
    """One skill's accuracy under A and B on the same tasks, and up to ``examples`` tasks whose outputs differ."""
    if [o.prompt for o in outputs_a] != [o.prompt for o in outputs_b]:
        raise ValueError("compare_outputs needs both cores' outputs on the same tasks, in the same order")
    n = len(outputs_a)
    acc_a = sum(o.score for o in outputs_a) / n if n else 0.0
    acc_b = sum(o.score for o in outputs_b) / n if n else 0.0
    differing = [(a, b) for a, b in zip(outputs_a, outputs_b, strict=True) if a.output != b.output]
    return {
        "a": acc_a,
        "b": acc_b,
        "delta": acc_b - acc_a,
        "tasks": n,
        "differing": len(differing),
        "examples": [
            {
                "prompt": a.prompt,
                "reference": a.reference,
                "output_a": a.output,
                "output_b": b.output,
                "score_a": a.score,
                "score_b": b.score,
                "right": which_right(a.score, b.score),
            }
            for a, b in differing[:examples]
        ],
    }


def diff_cores(
    model_a: PreTrainedModel,
    model_b: PreTrainedModel,
    skills: list[object],
    tasks: int,
    seed: int,
    examples: int = 3,
    on_skill: Callable[[str], None] | None = None,
    codecs: tuple[Codec, Codec] = (BYTE_CODEC, BYTE_CODEC),
) -> dict[str, dict[str, Any]]:
    """Skill name -> ``compare_outputs`` of the two cores on that skill's held-out tasks (the gate's tasks for
    the same ``tasks`` and ``seed``). ``on_skill(name)`` is called after each skill. ``codecs`` are each core's
    own (the byte default is the tiny core's; a codec that does not fit its core is refused): the outputs are
    compared as text, so two cores with different tokenizers compare too."""
    result: dict[str, dict[str, Any]] = {}
    for skill in skills:
        name: str = skill.name  # type: ignore[attr-defined]
        result[name] = compare_outputs(
            skill_outputs(model_a, skill, tasks, seed, codec=codecs[0]),
            skill_outputs(model_b, skill, tasks, seed, codec=codecs[1]),
            examples,
        )
        if on_skill is not None:
            on_skill(name)
    return result


def token_text(token_id: int, codec: Codec = BYTE_CODEC) -> str:
    """A token as a person reads it: an ASCII byte quoted (so a space shows), other bytes as hex, specials named.

    A pretrained tokenizer's token is its text, quoted."""
    if isinstance(codec, HFCodec):
        return repr(codec.tokenizer.decode([token_id], clean_up_tokenization_spaces=False))
    if token_id in SPECIAL_TOKENS:
        return SPECIAL_TOKENS[token_id]
    if token_id < 128:
        return repr(chr(token_id))
    return f"0x{token_id:02x}"


def check_prompt(prompt: str, codec: Codec = BYTE_CODEC) -> None:
    """Refuses a prompt that leaves the core no position to answer in."""
    width = len(codec.prompt_ids(prompt))
    if width >= codec.max_positions:
        layout = " (BOS prompt SEP)" if codec.fingerprint == BYTE_CODEC.fingerprint else ""
        raise InspectInputError(
            f"the prompt takes {width} tokens{layout}; the core has {codec.max_positions} positions in all"
        )


@torch.no_grad()
def next_token_topk(model: PreTrainedModel, prompt: str, k: int, codec: Codec = BYTE_CODEC) -> list[dict[str, Any]]:
    """The ``k`` most likely first answer tokens after ``codec.prompt_ids(prompt)`` (the input ``generate``
    decodes from), most likely first: each with its readable text, id and probability."""
    ids = torch.tensor([codec.prompt_ids(prompt)], dtype=torch.long)
    was_training = model.training
    model.eval()
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, -1].float()
    model.train(was_training)
    probs = torch.softmax(logits, dim=-1)
    top_p, top_ids = probs.topk(min(k, codec.vocab_size, probs.numel()))
    return [
        {"token": token_text(int(i), codec), "id": int(i), "prob": float(p)}
        for p, i in zip(top_p.tolist(), top_ids.tolist(), strict=True)
    ]


def probe_model(
    model: PreTrainedModel, prompt: str, top_k: int = 5, max_new_tokens: int = 32, codec: Codec = BYTE_CODEC
) -> dict[str, Any]:
    """One model's greedy output for ``prompt`` and its top-k next-token probabilities there.

    ``codec`` is the model's core's (``agents.codec.load_codec`` of its directory); the byte default is the
    tiny core's, and ``generate`` refuses a codec that does not fit the model."""
    check_prompt(prompt, codec)
    output = generate(model, [prompt], codec, max_new_tokens=max_new_tokens)[0]
    return {"output": output, "top_k": next_token_topk(model, prompt, top_k, codec)}
