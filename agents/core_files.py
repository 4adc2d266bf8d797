"""Checks that a directory is a core this code may load: safetensors weights, a known causal LM, no code."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

CONFIG_FILE = "config.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
# Files that can hold a pickle (which runs code when loaded) or weights in a format other than safetensors.
# A core is safetensors only, so such a file is refused wherever it sits, rather than trusted to be ignored.
REFUSED_SUFFIXES = frozenset(
    {".bin", ".pt", ".pth", ".pkl", ".pickle", ".joblib", ".ckpt", ".h5", ".msgpack", ".npy", ".npz", ".gguf"}
)
# Any of these means the directory ships a tokenizer, which must then fit the model.
TOKENIZER_FILES = (
    "tokenizer.json",
    TOKENIZER_CONFIG_FILE,
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
)
# Config keys that ask transformers to import code shipped with the model.
CODE_KEYS = ("auto_map", "trust_remote_code")


class CoreDirError(ValueError):
    """A core directory that must not be loaded; the message names the file and what is wrong with it."""


def check_core_dir(directory: Path) -> dict[str, Any]:
    """Raises CoreDirError unless ``directory`` holds a core that loads without running code from it.

    A core has ``*.safetensors`` weights and no pickle or other weight files anywhere below it, no symlink
    that leaves it, a ``config.json`` of a causal LM architecture transformers knows (no ``auto_map``, no
    ``trust_remote_code``, no ``quantization_config``), and, when it ships a tokenizer, one whose vocabulary
    and special token ids fit the model's ``vocab_size``. Returns the parsed config.
    """
    if not directory.is_dir():
        raise CoreDirError(f"{directory}: not a directory")
    _check_files(directory)
    config = _read_config(directory / CONFIG_FILE)
    if any(_shipped_tokenizer(directory)):
        _check_tokenizer(directory, config)
    return config


def _check_files(directory: Path) -> None:
    root = directory.resolve()
    for parent, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = Path(parent) / name
            if path.is_symlink() and not path.resolve().is_relative_to(root):
                raise CoreDirError(f"{path}: a symlink to {path.resolve()}, outside the core directory {root}")
            if name in files and path.suffix.lower() in REFUSED_SUFFIXES:
                raise CoreDirError(
                    f"{path}: a {path.suffix} file may hold a pickle (code that runs when loaded) or "
                    "non-safetensors weights; a core must hold safetensors only: remove it"
                )
    weights = sorted(directory.glob("*.safetensors"))
    if not weights:
        raise CoreDirError(f"{directory}: no *.safetensors weights (a core's weights must be safetensors)")


def _read_config(path: Path) -> dict[str, Any]:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if not path.is_file():
        raise CoreDirError(f"{path}: missing (a core needs the config.json of its model)")
    config = _read_json(path)
    for key in (*CODE_KEYS, "quantization_config"):
        if key in config:
            raise CoreDirError(f"{path}: {_why_refused(key)}")
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING_NAMES:
        raise CoreDirError(f"{path}: model_type {model_type!r} is not an architecture this transformers knows")
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise CoreDirError(f"{path}: model_type {model_type!r} is not a causal language model")
    vocab = config.get("vocab_size")
    if not isinstance(vocab, int) or isinstance(vocab, bool) or vocab <= 0:
        raise CoreDirError(f"{path}: vocab_size {vocab!r} is not a positive integer")
    return config


def _why_refused(key: str) -> str:
    if key == "quantization_config":
        # A core is trained and released as plain weights; a quantizer attached at load time (a GGUF-loaded
        # model's config keeps one) would change how every later load and training step behaves.
        return "has a quantization_config: a core must be a plain, dequantised model; save it without one"
    return f"has {key!r}: it asks to run code shipped with the model, which a core may never do"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CoreDirError(f"{path}: cannot be read as JSON: {err}") from err
    if not isinstance(data, dict):
        raise CoreDirError(f"{path}: not a JSON object")
    return data


def _shipped_tokenizer(directory: Path) -> list[Path]:
    return [directory / name for name in TOKENIZER_FILES if (directory / name).exists()]


def _check_tokenizer(directory: Path, config: dict[str, Any]) -> None:
    from transformers import AutoTokenizer

    tokenizer_config = directory / TOKENIZER_CONFIG_FILE
    if tokenizer_config.is_file():
        for key in CODE_KEYS:
            if key in _read_json(tokenizer_config):
                raise CoreDirError(f"{tokenizer_config}: {_why_refused(key)}")
    files = ", ".join(p.name for p in _shipped_tokenizer(directory))
    try:
        tok = AutoTokenizer.from_pretrained(directory, local_files_only=True, trust_remote_code=False)
    except Exception as err:
        # Not broad by choice: the `tokenizers` library reports a malformed tokenizer.json as a bare Exception.
        # Every failure becomes this refusal, with its message; none is ignored.
        raise CoreDirError(f"{directory}: its tokenizer ({files}) does not load: {err}") from err
    vocab = config["vocab_size"]
    if len(tok) > vocab:
        raise CoreDirError(
            f"{directory}: the tokenizer ({files}) has {len(tok)} tokens, counting added ones, but "
            f"{CONFIG_FILE} has vocab_size {vocab}: the tokenizer does not belong to this model"
        )
    too_big = sorted({i for i in tok.all_special_ids if i is not None and i >= vocab})
    if too_big:
        raise CoreDirError(
            f"{directory}: the tokenizer ({files}) has special token ids {too_big}, beyond {CONFIG_FILE}'s "
            f"vocab_size {vocab}: the tokenizer does not belong to this model"
        )
