"""What makes a directory a core this code may load: safetensors only, a known causal LM, no code, a fitting
tokenizer."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from agents.core_files import REFUSED_SUFFIXES, CoreDirError, check_core_dir
from agents.model import CoreSize, build_core, load_core, save_core

from factories import make_core_dir, save_word_tokenizer

VOCAB = 260  # the tiny core's byte vocabulary


@pytest.fixture
def core(tmp_path: Path) -> Path:
    return make_core_dir(tmp_path / "core")


def _edit_config(core: Path, **changes: object) -> None:
    config = json.loads((core / "config.json").read_text())
    config.update(changes)
    (core / "config.json").write_text(json.dumps(config))


def _refused(core: Path, *words: str) -> str:
    with pytest.raises(CoreDirError) as caught:
        check_core_dir(core)
    message = str(caught.value)
    for word in words:
        assert word in message, message
    return message


def test_a_saved_tiny_core_passes_and_its_config_is_returned(core: Path) -> None:
    config = check_core_dir(core)
    assert config["model_type"] == "llama"
    assert config["vocab_size"] == VOCAB


def test_the_tiny_core_round_trips_bit_identical(tmp_path: Path) -> None:
    model = build_core(CoreSize(), seed=4)
    save_core(model, tmp_path / "core")
    loaded = load_core(tmp_path / "core")
    assert type(loaded).__name__ == "LlamaForCausalLM"
    assert not loaded.training
    saved, back = model.state_dict(), loaded.state_dict()
    assert saved.keys() == back.keys()
    assert all(back[k].dtype == torch.float32 and torch.equal(saved[k], back[k]) for k in saved)


@pytest.mark.parametrize("suffix", sorted(REFUSED_SUFFIXES))
def test_a_pickle_or_non_safetensors_weights_file_is_refused(core: Path, suffix: str) -> None:
    bad = core / f"pytorch_model{suffix.upper() if suffix == '.bin' else suffix}"
    bad.write_bytes(b"\x80\x04\x95")
    _refused(core, str(bad), "safetensors only")


def test_a_pickle_in_a_subfolder_is_refused(core: Path) -> None:
    (core / "checkpoints" / "step-1").mkdir(parents=True)
    (core / "checkpoints" / "step-1" / "optimizer.pt").write_bytes(b"\x80\x04\x95")
    _refused(core, "optimizer.pt")


def test_load_core_refuses_before_loading_anything(core: Path) -> None:
    (core / "training_args.bin").write_bytes(b"\x80\x04\x95")
    with pytest.raises(CoreDirError, match=r"training_args\.bin"):
        load_core(core)


def test_no_safetensors_weights_is_refused(core: Path) -> None:
    (core / "model.safetensors").unlink()
    _refused(core, "no *.safetensors")


def test_not_a_directory_is_refused(tmp_path: Path) -> None:
    _refused(tmp_path / "nowhere", "not a directory")


def test_a_missing_config_is_refused(core: Path) -> None:
    (core / "config.json").unlink()
    _refused(core, "config.json", "missing")


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "\xff\xfe"])
def test_an_unreadable_config_is_refused(core: Path, text: str) -> None:
    (core / "config.json").write_bytes(text.encode("latin-1"))
    _refused(core, "config.json")


@pytest.mark.parametrize(
    ("key", "value"),
    [("auto_map", {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}), ("trust_remote_code", True)],
)
def test_a_config_that_asks_to_run_shipped_code_is_refused(core: Path, key: str, value: object) -> None:
    _edit_config(core, **{key: value})
    _refused(core, "config.json", key, "run code")


def test_a_quantized_config_is_refused(core: Path) -> None:
    # What a GGUF-loaded model's config keeps: saved as is, every later load would attach a quantizer.
    _edit_config(core, quantization_config={"quant_method": "gguf", "gguf_file": "x.gguf"})
    _refused(core, "quantization_config", "dequantised")


def test_an_unknown_model_type_is_refused(core: Path) -> None:
    _edit_config(core, model_type="my-secret-arch")
    _refused(core, "'my-secret-arch'", "transformers knows")


def test_a_model_that_is_not_a_causal_lm_is_refused(core: Path) -> None:
    _edit_config(core, model_type="vit")
    _refused(core, "'vit'", "not a causal language model")


def test_a_missing_vocab_size_is_refused(core: Path) -> None:
    _edit_config(core, vocab_size=None)
    _refused(core, "vocab_size")


def test_a_symlink_that_leaves_the_directory_is_refused(core: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("not the core's\n")
    (core / "notes.txt").symlink_to(outside)
    _refused(core, "notes.txt", "outside the core directory")


def test_a_symlinked_folder_that_leaves_the_directory_is_refused(core: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (core / "extra").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    _refused(core, "extra", "outside the core directory")


def test_a_symlink_inside_the_directory_is_accepted(core: Path) -> None:
    (core / "generation.json").symlink_to(core / "config.json")
    check_core_dir(core)


def test_a_tokenizer_that_fits_the_model_is_accepted(core: Path) -> None:
    save_word_tokenizer(core, words=VOCAB - 1)  # its <eos> is id 259, the last the model has
    check_core_dir(core)
    assert load_core(core).config.vocab_size == VOCAB


def test_a_tokenizer_larger_than_the_model_is_refused(core: Path) -> None:
    save_word_tokenizer(core, words=300)
    _refused(core, "301 tokens", "vocab_size 260", "does not belong")


def test_added_tokens_count_towards_the_tokenizer_size(core: Path) -> None:
    save_word_tokenizer(core, words=250, added=20)
    _refused(core, "271 tokens", "counting added ones")


def test_a_special_token_beyond_the_vocabulary_is_refused(core: Path) -> None:
    save_word_tokenizer(core, words=10, special={"<eos>": 300})
    _refused(core, "special token ids [300]", "vocab_size 260")


def test_a_tokenizer_config_that_asks_to_run_shipped_code_is_refused(core: Path) -> None:
    save_word_tokenizer(core, words=10)
    config = json.loads((core / "tokenizer_config.json").read_text())
    config["auto_map"] = {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}
    (core / "tokenizer_config.json").write_text(json.dumps(config))
    _refused(core, "tokenizer_config.json", "auto_map")


def test_a_tokenizer_that_does_not_load_is_refused(core: Path) -> None:
    save_word_tokenizer(core, words=10)
    (core / "tokenizer.json").write_text(json.dumps({"model": {"type": "Nope"}}))
    _refused(core, "tokenizer.json", "does not load")


def test_the_check_does_not_follow_a_folder_symlink_into_a_loop(core: Path) -> None:
    os.symlink(".", core / "loop")
    check_core_dir(core)


@pytest.mark.parametrize(("change", "says"), [("drop", "missing: lm_head.weight"), ("add", "unexpected: extra.weight")])
def test_weights_that_do_not_match_the_config_are_refused_not_filled_at_random(
    core: Path, change: str, says: str
) -> None:
    """transformers would give a missing tensor fresh random weights and only log it: the core would answer nonsense."""
    from safetensors.torch import load_file, save_file

    weights = load_file(core / "model.safetensors")
    if change == "drop":
        del weights["lm_head.weight"]
    else:
        weights["extra.weight"] = torch.zeros(2)
    save_file(weights, core / "model.safetensors", metadata={"format": "pt"})

    with pytest.raises(CoreDirError, match=says):
        load_core(core)
