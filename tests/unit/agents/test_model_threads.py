"""Cores loaded and built from several threads at once (in-process agents, the hive's threads).

transformers' ``from_pretrained`` swaps ``PreTrainedModel.tie_weights``, ``init_weights`` and torch.nn.init's functions
for no-ops while it loads, and restores them when done. Two threads doing that at once can leave the no-ops in place
for the rest of the process: every later model is then untied, and built with uninitialised weights. This is how a
long test process once loaded SmolLM2 with its output layer missing.
"""

from __future__ import annotations

import threading
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedModel

from agents.core_files import CoreDirError
from agents.model import CoreSize, build_core, load_core, save_core

ORIGINAL_TIE = PreTrainedModel.tie_weights
ORIGINAL_INIT = PreTrainedModel.init_weights
ORIGINAL_NORMAL = torch.nn.init.normal_


def _tied_core(directory: Path) -> Path:
    config = CoreSize(width=32, layers=1).config()
    config.tie_word_embeddings = True
    save_core(LlamaForCausalLM(config), directory)
    return directory


def test_loading_and_building_in_many_threads_leaves_transformers_as_it_was(tmp_path: Path) -> None:
    directory = _tied_core(tmp_path / "tied")
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def work(n: int) -> None:
        start.wait()
        for i in range(8):
            try:
                load_core(directory) if (n + i) % 2 else build_core(CoreSize(width=32, layers=1), seed=i)
            except CoreDirError as err:  # the symptom: a tied core loaded without its lm_head; the test fails on it
                errors.append(err)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert PreTrainedModel.tie_weights is ORIGINAL_TIE
    assert PreTrainedModel.init_weights is ORIGINAL_INIT
    assert torch.nn.init.normal_ is ORIGINAL_NORMAL
    loaded = load_core(directory)
    assert loaded.get_output_embeddings().weight is loaded.get_input_embeddings().weight
    config = LlamaConfig(**{**CoreSize(width=32, layers=1).config().to_dict(), "tie_word_embeddings": True})
    built = LlamaForCausalLM(config)
    assert built.lm_head.weight is built.model.embed_tokens.weight
