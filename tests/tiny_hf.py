"""A tiny Hugging Face core made in-process: a byte-level BPE tokenizer with ChatML turns and a random Llama.

It stands in for a pretrained core (SmolLM2) in tests: the same files (tokenizer.json, tokenizer_config.json,
a chat template, config.json, model.safetensors), nothing downloaded. ``from tiny_hf import make_hf_core``.
"""

from __future__ import annotations

from pathlib import Path

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "add 12 30 is 42",
    "the capital of zorvia is belmar",
    "cap zorvia belmar rotate words left",
    "user assistant system",
]


def make_tokenizer(vocab_size: int = 320, chat: bool = True, corpus: list[str] | None = None):
    """A ``PreTrainedTokenizerFast`` over a byte-level BPE trained on a few lines; ChatML when ``chat``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator((corpus or CORPUS) * 10, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>" if chat else "<|endoftext|>",
        eos_token="<|im_end|>" if chat else "<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    if chat:
        tokenizer.chat_template = CHATML
    return tokenizer


def make_hf_core(directory: Path, chat: bool = True, seed: int = 0, max_positions: int = 128, tokenizer=None) -> Path:
    """Writes a tokenizer and a random two-layer Llama of the tokenizer's vocabulary into ``directory``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tokenizer or make_tokenizer(chat=chat)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(directory)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(directory, safe_serialization=True)
    return directory
