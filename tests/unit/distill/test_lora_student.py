"""The LoRA arm of the distill job: its settings, the student, retention against its own base, and merge-on-save."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from agents.codec import BYTE_CODEC, load_codec
from agents.lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS, LLAMA_LINEAR
from agents.model import WEIGHTS_FILE, CoreSize, build_core, load_core, make_batch, save_core
from distill.checkpoint import FINGERPRINT, run_fingerprint, save_student, stale_checkpoint
from distill.data import Data
from distill.dataset import BalancedSampler, Example, LoadReport
from distill.manifest import DistillParams, Manifest
from distill.step import train_step
from distill.student import AdapterOff, is_lora, load_previous_core, load_student, trainable_parameters

from factories import FakeEngine
from tiny_hf import make_hf_core


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_hf_core(tmp_path_factory.mktemp("hf") / "base")


def _manifest(base: Path, **distill) -> Manifest:
    return Manifest.model_validate(
        {
            "round_id": "r0001",
            "base_core": base,
            "out_dir": base.parent / "out",
            "learnings": base.parent / "learnings.jsonl",
            "skills": ["capital"],
            "distill": distill,
        }
    )


def _data(base: Path, replay: bool = True) -> Data:
    codec = load_codec(base)
    new = [Example("cap zorvia", "belmar", "agent-a", "capital", verified=True)]
    old = [Example("add 12 30", "42", "old-agent", "add", verified=True)]
    replay_sampler = BalancedSampler([e.skill for e in old], seed=1) if replay else None
    return Data(new, LoadReport(kept=1), BalancedSampler(["agent-a"]), old, replay_sampler, {}, "", [], codec)


def _lora_student(base: Path, **distill):
    return load_student(_manifest(base, tuning="lora", **distill), load_codec(base))


def _move_adapter(student, scale: float = 0.5) -> None:
    """As if trained: lora_B starts at zero (the adapter then changes nothing), so give it weights."""
    with torch.no_grad():
        for name, param in student.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, scale, generator=torch.Generator().manual_seed(len(name)))


def _logits(model, base: Path) -> torch.Tensor:
    batch = make_batch(["cap zorvia", "add 12 30"], ["belmar", "42"], load_codec(base))
    with torch.no_grad():
        return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits


def test_the_default_tuning_is_auto_and_lora_defaults_to_every_linear_layer_of_a_llama_block() -> None:
    params = DistillParams()
    assert params.tuning == "auto"
    assert (params.lora_r, params.lora_alpha, params.lora_targets) == (16, 32, list(LLAMA_LINEAR))
    spec = DistillParams(tuning="lora", lora_r=8, lora_alpha=16, lora_targets=["q_proj", "v_proj"]).lora_spec()
    assert (spec.r, spec.alpha, spec.targets) == (8, 16, ("q_proj", "v_proj"))


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ({"tuning": "qlora"}, "tuning"),
        ({"lora_r": 0}, "lora_r"),
        ({"lora_r": 257}, "lora_r"),
        ({"lora_alpha": 0}, "lora_alpha"),
        ({"lora_targets": []}, "lora_targets"),
        ({"lora_targets": ["q_proj; rm -rf /"]}, "module names"),
    ],
)
def test_bad_lora_settings_are_refused_when_read(bad: dict, says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        DistillParams.model_validate(bad)


def test_a_full_student_trains_every_weight(base: Path) -> None:
    student = load_student(_manifest(base, tuning="full"), load_codec(base))
    assert not is_lora(student) and student.training
    assert trainable_parameters(student) == list(student.parameters())


def test_a_lora_student_trains_only_its_adapter_on_the_frozen_core(base: Path) -> None:
    student = _lora_student(base, lora_r=4, lora_targets=["q_proj", "down_proj"])
    assert is_lora(student) and student.training
    trainable = {name for name, p in student.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in name or ".lora_B." in name for name in trainable)
    assert {name.split(".lora_")[0].rsplit(".", 1)[1] for name in trainable} == {"q_proj", "down_proj"}
    assert len(trainable_parameters(student)) == len(trainable)
    # A fresh adapter (lora_B = 0) changes nothing: the student starts as the core the round started from.
    assert torch.equal(_logits(student, base), _logits(load_core(base), base))


def test_a_lora_student_is_refused_on_the_tiny_byte_core(tmp_path: Path) -> None:
    core = tmp_path / "tiny"
    save_core(build_core(CoreSize(width=32, layers=1)), core)
    with pytest.raises(ValueError, match="tiny core tunes 'full'"):
        load_student(_manifest(core, tuning="lora"), BYTE_CODEC)


def test_the_adapter_starts_from_the_rounds_seed_whatever_the_process_drew_before(base: Path) -> None:
    def adapter(student) -> dict[str, torch.Tensor]:
        return {name: p.detach().clone() for name, p in student.named_parameters() if p.requires_grad}

    torch.manual_seed(1)
    first = adapter(_lora_student(base))
    torch.rand(1000)  # another rank, or the plain loop, drew other numbers first
    after = torch.random.get_rng_state()
    second = _lora_student(base)
    assert torch.equal(torch.random.get_rng_state(), after)  # the global generator is left as it was
    assert all(torch.equal(first[name], tensor) for name, tensor in adapter(second).items())
    other = adapter(_lora_student(base, seed=1))
    assert any(not torch.equal(first[name], tensor) for name, tensor in other.items())


def test_retention_of_a_lora_student_pulls_towards_its_own_base_with_the_adapter_off(base: Path) -> None:
    student = _lora_student(base)
    manifest = _manifest(base, tuning="lora")
    previous = load_previous_core(manifest, _data(base), student)
    assert isinstance(previous, AdapterOff) and previous.student is student
    assert load_previous_core(manifest, _data(base, replay=False), student) is None
    _move_adapter(student)
    reference = _logits(load_core(base), base)
    assert not torch.allclose(_logits(student, base), reference, atol=1e-3)
    # The base's weights are the previous core's; with the adapter off they give its logits.
    assert torch.allclose(_logits(previous, base), reference, atol=1e-5)
    assert student.training  # eval() only for the reference call
    assert torch.allclose(_logits(student, base), _logits(student, base))  # and the adapter is on again


def test_a_lora_step_has_zero_retention_until_the_adapter_moves_and_gives_gradients_to_the_adapter_only(
    base: Path,
) -> None:
    student = _lora_student(base)
    data, params = _data(base), DistillParams(tuning="lora", retention_weight=1.0)
    previous = load_previous_core(_manifest(base, tuning="lora"), data, student)
    parts, _ = train_step(FakeEngine(student), previous, data, params, step=0, micro=1)
    assert parts["ce"] > 0
    assert parts["retention"] == pytest.approx(0.0, abs=1e-6)
    grads = {name for name, p in student.named_parameters() if p.grad is not None}
    assert grads == {name for name, p in student.named_parameters() if p.requires_grad}
    _move_adapter(student)
    parts, _ = train_step(FakeEngine(student), previous, data, params, step=0, micro=1)
    assert parts["retention"] > 1e-4


def test_a_lora_student_is_saved_merged_as_a_complete_core(tmp_path: Path, base: Path) -> None:
    student = _lora_student(base)
    _move_adapter(student)
    student.eval()
    expected = _logits(student, base)  # the base plus the adapter, as trained
    out = tmp_path / "core"
    sha = save_student(FakeEngine(student), out, rank=0, base_core=base)
    assert sha is not None
    assert not {ADAPTER_WEIGHTS, ADAPTER_CONFIG} & {p.name for p in out.iterdir()}
    assert {WEIGHTS_FILE, "config.json", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    assert json.loads((out / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    released = load_core(out)  # refuses a file with missing or unexpected tensors
    assert type(released).__name__ == "LlamaForCausalLM"
    assert torch.allclose(_logits(released, base), expected, atol=1e-5)
    assert set(released.state_dict()) == set(load_core(base).state_dict())
    assert is_lora(student)  # the engine's model was not merged in place
    assert save_student(FakeEngine(student), tmp_path / "other", rank=1, base_core=base) is None
    assert not (tmp_path / "other").exists()


def test_auto_tunes_a_pretrained_core_with_lora_and_the_byte_core_in_full(tmp_path: Path, base: Path) -> None:
    student = load_student(_manifest(base), load_codec(base))
    assert is_lora(student)
    core = tmp_path / "tiny"
    save_core(build_core(seed=0), core)
    assert not is_lora(load_student(_manifest(core), BYTE_CODEC))


def test_a_checkpoint_of_one_tuning_is_never_resumed_by_the_other(tmp_path: Path, base: Path) -> None:
    data = _data(base)
    full = run_fingerprint(_manifest(base), data, "zero2_cpu.yaml", 2)
    lora = run_fingerprint(_manifest(base, tuning="lora"), data, "zero2_cpu.yaml", 2)
    assert lora["sha256"] != full["sha256"]
    smaller = run_fingerprint(_manifest(base, tuning="lora", lora_r=8), data, "zero2_cpu.yaml", 2)
    assert smaller["sha256"] != lora["sha256"]
    (tmp_path / FINGERPRINT).write_text(json.dumps(full))
    reason = stale_checkpoint(tmp_path, lora)
    assert reason is not None and "tuning" in reason


@pytest.fixture(scope="module")
def tied(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny HF core whose output layer shares the input embeddings' weight, as SmolLM2's does."""
    from transformers import LlamaConfig, LlamaForCausalLM

    directory = make_hf_core(tmp_path_factory.mktemp("hf") / "tied")
    config = LlamaConfig.from_pretrained(directory)
    config.tie_word_embeddings = True
    torch.manual_seed(0)
    save_core(LlamaForCausalLM(config), directory)
    return directory


def test_a_core_with_tied_embeddings_is_merged_into_a_core_that_still_ties_them(tmp_path: Path, tied: Path) -> None:
    student = _lora_student(tied)
    _move_adapter(student)
    student.eval()
    expected = _logits(student, tied)
    save_student(FakeEngine(student), tmp_path / "core", rank=0, base_core=tied)
    released = load_core(tmp_path / "core")
    assert released.get_output_embeddings().weight is released.get_input_embeddings().weight
    assert torch.allclose(_logits(released, tied), expected, atol=1e-5)


def test_an_adapter_on_a_tied_output_layer_is_refused(tied: Path, base: Path) -> None:
    with pytest.raises(ValueError, match="'lm_head' is this core's output layer, tied to its input embeddings"):
        _lora_student(tied, lora_targets=["q_proj", "lm_head"])
    # Untied, the output layer is a linear layer like any other.
    assert is_lora(_lora_student(base, lora_targets=["lm_head"]))
