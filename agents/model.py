"""The core model: a tiny Llama built from a config, batching, greedy decoding and teacher signals."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from agents.codec import Codec, check_fits
from agents.construction import MODEL_CONSTRUCTION
from agents.core_files import CoreDirError, check_core_dir
from agents.tokenizer import MAX_POSITIONS, VOCAB_SIZE, ByteTokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

WEIGHTS_FILE = "model.safetensors"


@dataclass(frozen=True)
class CoreSize:
    """One knob, ``width``, derives the rest: heads of 32 dims and an MLP four times as wide."""

    width: int = 128
    layers: int = 4

    def config(self):  # -> transformers.LlamaConfig
        from transformers import LlamaConfig

        tok = ByteTokenizer()
        return LlamaConfig(
            vocab_size=VOCAB_SIZE,
            hidden_size=self.width,
            intermediate_size=4 * self.width,
            num_hidden_layers=self.layers,
            num_attention_heads=max(1, self.width // 32),
            max_position_embeddings=MAX_POSITIONS,
            bos_token_id=tok.bos_id,
            eos_token_id=tok.eos_id,
            pad_token_id=tok.pad_id,
            tie_word_embeddings=False,
        )


def _quiet_transformers() -> None:
    # Loading and saving a 1 M-parameter core takes milliseconds; transformers' per-call progress
    # bars would only bury the demo's own progress.
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def build_core(size: CoreSize | None = None, seed: int = 0) -> PreTrainedModel:
    """Builds a freshly initialised core; the same seed gives the same weights."""
    from transformers import LlamaForCausalLM

    _quiet_transformers()
    with MODEL_CONSTRUCTION:
        torch.manual_seed(seed)
        model = LlamaForCausalLM((size or CoreSize()).config())
    model.eval()
    return model


def save_core(model: PreTrainedModel, directory: Path, tokenizer: PreTrainedTokenizerBase | None = None) -> str:
    """Saves the model as safetensors plus its config (and ``tokenizer``'s files when given); returns the sha256
    of the weights file."""
    directory.mkdir(parents=True, exist_ok=True)
    _quiet_transformers()
    model.save_pretrained(directory, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    return file_sha256(directory / WEIGHTS_FILE)


def load_core(directory: Path) -> PreTrainedModel:
    """Loads a core: any local transformers causal LM that ``check_core_dir`` accepts (it raises CoreDirError
    otherwise), from its safetensors only, never running code shipped with it."""
    from transformers import AutoModelForCausalLM

    check_core_dir(directory)
    _quiet_transformers()
    with MODEL_CONSTRUCTION:
        loaded: Any = AutoModelForCausalLM.from_pretrained(
            directory, local_files_only=True, use_safetensors=True, trust_remote_code=False, output_loading_info=True
        )
    model, info = loaded
    # transformers fills a tensor missing from the file with fresh random weights and only logs it: such a core
    # would answer nonsense without an error, so it is refused.
    problems = {
        what: sorted(info.get(key) or [])
        for key, what in (
            ("missing_keys", "missing"),
            ("unexpected_keys", "unexpected"),
            ("mismatched_keys", "of the wrong shape"),
        )
        if info.get(key)
    }
    if problems:
        listed = "; ".join(f"{what}: {', '.join(map(str, names[:5]))}" for what, names in problems.items())
        raise CoreDirError(f"{directory}: its weights do not match its config.json ({listed})")
    model.eval()
    return model


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def core_metadata(directory: Path) -> dict:
    return json.loads((directory / "config.json").read_text())


@dataclass
class Batch:
    """A right-padded batch; ``labels`` is -100 everywhere but the answer and its end token."""

    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T)
    labels: torch.Tensor  # (B, T)


def make_batch(prompts: list[str], answers: list[str], codec: Codec) -> Batch:
    """Rows of ``prompt_ids + answer_ids`` in ``codec``'s ids, right-padded with its pad id."""
    rows, label_rows = [], []
    for prompt, answer in zip(prompts, answers, strict=True):
        p, a = codec.prompt_ids(prompt), codec.answer_ids(answer)
        rows.append(p + a)
        label_rows.append([-100] * len(p) + a)
    width = max(len(r) for r in rows)
    if width > codec.max_positions:
        raise ValueError(f"a task of {width} tokens exceeds the core's {codec.max_positions} positions")
    ids = torch.full((len(rows), width), codec.pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (r, lab) in enumerate(zip(rows, label_rows, strict=True)):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
        labels[i, : len(r)] = torch.tensor(lab)
    return Batch(ids, mask, labels)


def answer_logits(model: PreTrainedModel, batch: Batch) -> torch.Tensor:
    """Logits at the positions that predict each label, aligned with ``batch.labels[:, 1:]``.

    Returns a (B, T-1, V) tensor: position t holds the prediction of token t+1.
    """
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    return out.logits[:, :-1, :]


# A batch runs as two forwards, split by length, only when that cuts its padded positions by at least this share:
# below it the second forward's fixed cost outweighs what the padding costs.
MIN_PADDING_SAVED = 0.1


def length_groups(lengths: list[int]) -> list[list[int]]:
    """Row indices in one group, or two (the shorter rows, the longer rows) where a split at the best point cuts the
    padded area ``rows x widest row`` by ``MIN_PADDING_SAVED`` or more; each group keeps the rows' order."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    ranked = [lengths[i] for i in order]
    whole = len(ranked) * ranked[-1] if ranked else 0
    best, cut = whole, 0
    for s in range(1, len(ranked)):
        area = s * ranked[s - 1] + (len(ranked) - s) * ranked[-1]
        if area < best:
            best, cut = area, s
    if cut == 0 or best > whole * (1 - MIN_PADDING_SAVED):
        return [list(range(len(lengths)))]
    return [sorted(order[:cut]), sorted(order[cut:])]


def position_logits(model: PreTrainedModel, batch: Batch, positions: torch.Tensor) -> torch.Tensor:
    """``answer_logits(model, batch)[positions]``: a (P, V) tensor of the logits at the True entries of
    ``positions`` ((B, T-1) bool), flattened row by row, computed without running short rows at the widest row's
    width.

    Rows are right-padded, so a mixed batch (short capitals beside long ciphers) spent a third of its forward on
    padding. Rows are run in ``length_groups``, each trimmed to its own widest row; a row's logits do not depend
    on the other rows, so the result is the same up to float rounding.
    """
    lengths = batch.attention_mask.sum(dim=1).tolist()
    groups = length_groups(lengths)
    if len(groups) == 1:
        return answer_logits(model, batch)[positions]
    flat = torch.full(positions.shape, -1, dtype=torch.long, device=positions.device)
    flat[positions] = torch.arange(int(positions.sum()), device=positions.device)
    parts, order = [], []
    for rows in groups:
        index = torch.tensor(rows, dtype=torch.long, device=positions.device)
        width = max(lengths[i] for i in rows)
        part = Batch(batch.input_ids[index, :width], batch.attention_mask[index, :width], batch.labels[index, :width])
        at = positions[index, : width - 1]
        parts.append(answer_logits(model, part)[at])
        order.append(flat[index, : width - 1][at])
    return torch.cat(parts).index_select(0, torch.argsort(torch.cat(order)))


def lm_loss(model: PreTrainedModel, batch: Batch) -> torch.Tensor:
    """Mean cross-entropy over answer tokens."""
    positions = batch.labels[:, 1:] != -100
    logits = position_logits(model, batch, positions)
    return torch.nn.functional.cross_entropy(logits, batch.labels[:, 1:][positions])


@torch.no_grad()
def generate(model: PreTrainedModel, prompts: list[str], codec: Codec, max_new_tokens: int = 16) -> list[str]:
    """Greedy decoding of a batch, left-padded, with explicit positions so padding changes nothing.

    A row stops at the first of ``codec.stop_ids``; no row runs past the codec's positions.
    """
    check_fits(codec, model)
    if not prompts:
        return []
    rows = [codec.prompt_ids(p) for p in prompts]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), codec.pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
    stops = torch.tensor(sorted(codec.stop_ids), dtype=torch.long)
    done = torch.zeros(len(rows), dtype=torch.bool)
    produced: list[list[int]] = [[] for _ in rows]
    was_training = model.training
    model.eval()
    steps = min(max_new_tokens, codec.max_positions - width)
    # The prompt is encoded once; each new token then attends to the cached keys and values, so a step costs
    # one position, not the whole row (5.5 s for 2 x 20 tokens of SmolLM2 without the cache).
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    past = None
    cache = _cache_argument()
    step_ids = ids
    for _ in range(steps):
        out = model(input_ids=step_ids, attention_mask=mask, position_ids=positions, use_cache=True, **{cache: past})
        past = getattr(out, cache)
        nxt = out.logits[:, -1, :].argmax(-1)
        for i, t in enumerate(nxt.tolist()):
            if not done[i]:
                produced[i].append(t)
        done |= torch.isin(nxt, stops)
        if bool(done.all()):
            break
        step_ids = nxt[:, None]
        positions = positions[:, -1:] + 1
        mask = torch.cat([mask, torch.ones_like(nxt)[:, None]], dim=1)
    model.train(was_training)
    return [codec.decode(p) for p in produced]


def _cache_argument() -> str:
    """The name of the KV cache in a causal LM's arguments and output: ``cache`` since transformers 5.2x,
    ``past_key_values`` before (and deprecated, with a warning per call, after)."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    return "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


@torch.no_grad()
def topk_signal(
    model: PreTrainedModel, prompts: list[str], answers: list[str], k: int, codec: Codec
) -> list[tuple[list[list[int]], list[list[float]]]]:
    """The model's top-k next-token log-probabilities at every position of each answer (and its end token).

    For each row returns ``(token_ids, logprobs)``, both shaped (len(codec.answer_ids(answer)), k), with ids
    in ``codec``'s vocabulary.
    """
    check_fits(codec, model)
    batch = make_batch(prompts, answers, codec)
    was_training = model.training
    model.eval()
    logprobs = torch.log_softmax(answer_logits(model, batch).float(), dim=-1)
    model.train(was_training)
    top_lp, top_ids = logprobs.topk(k, dim=-1)
    result = []
    targets = batch.labels[:, 1:]
    for i in range(len(prompts)):
        keep = targets[i] != -100
        result.append((top_ids[i][keep].tolist(), top_lp[i][keep].tolist()))
    return result
