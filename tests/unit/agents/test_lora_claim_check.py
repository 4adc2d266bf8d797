"""A LoRA adapter as a claim check: a PEFT adapter of the hive's core loads (merged); anything else in its place,
config or tensors, is refused with a reason, and nothing in it is run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from agents.claim_check import SHA_MISMATCH, ClaimCheckError, load_adapter
from agents.codec import load_codec
from agents.learner import Specialist
from agents.lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS, LoraSpec
from agents.model import file_sha256, load_core, topk_signal

from tiny_hf import make_hf_core

CAP = 1 << 24


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_hf_core(tmp_path_factory.mktemp("hf") / "core")


@pytest.fixture(scope="module")
def base(hf_dir: Path) -> Any:
    return load_core(hf_dir)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("agents")


@pytest.fixture(scope="module")
def adapter(root: Path, hf_dir: Path, base: Any) -> tuple[Path, str, Specialist]:
    """A saved LoRA specialist (r=4 on every linear layer) whose B factors are not zero: it changes the core."""
    torch.manual_seed(1)
    spec = Specialist(base, 0, lr=1e-3, topk=3, codec=load_codec(hf_dir), lora=LoraSpec(r=4, alpha=8))
    with torch.no_grad():
        for name, param in spec.model.named_parameters():
            if ".lora_B." in name:
                param.normal_(0, 0.5)
    directory = root / "agent-good" / "specialist"
    return directory, spec.save(directory), spec


def _copy(adapter: tuple[Path, str, Specialist], root: Path, name: str) -> tuple[Path, dict, dict]:
    """A copy of the good adapter under ``root/name``: its directory, config and tensors, to be spoiled."""
    directory = root / name
    directory.mkdir()
    good = adapter[0]
    return directory, json.loads((good / ADAPTER_CONFIG).read_text()), load_file(good / ADAPTER_WEIGHTS)


def _write(directory: Path, config: dict | str, tensors: dict[str, torch.Tensor]) -> str:
    text = config if isinstance(config, str) else json.dumps(config)
    (directory / ADAPTER_CONFIG).write_text(text)
    save_file(tensors, directory / ADAPTER_WEIGHTS)
    return file_sha256(directory / ADAPTER_WEIGHTS)


def _load(directory: Path, sha: str, base: Any, root: Path) -> Any:
    return load_adapter(directory.as_uri(), sha, base, [root], CAP)


def test_a_peft_adapter_loads_merged_onto_the_hives_core(
    adapter: tuple[Path, str, Specialist], base: Any, hf_dir: Path, root: Path
) -> None:
    directory, sha, spec = adapter
    before = {n: t.clone() for n, t in base.state_dict().items()}
    teacher = _load(directory, sha, base, root)

    assert type(teacher).__name__ == "LlamaForCausalLM" and not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(before[n], t) for n, t in base.state_dict().items())  # the base is left as it was
    changed = [n for n, t in teacher.state_dict().items() if not torch.equal(t, before[n])]
    assert changed and all(
        n.split(".")[-2] in {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
        for n in changed
    )
    codec = load_codec(hf_dir)
    [(ids, lps)] = topk_signal(teacher, ["cap zorvia"], ["belmar"], 3, codec)
    [(want_ids, want_lps)] = topk_signal(spec.model, ["cap zorvia"], ["belmar"], 3, codec)
    assert ids == want_ids
    assert [x for row in lps for x in row] == pytest.approx([x for row in want_lps for x in row], abs=1e-5)


def test_the_base_model_named_in_the_config_is_ignored(
    adapter: tuple[Path, str, Specialist], base: Any, root: Path
) -> None:
    directory, config, tensors = _copy(adapter, root, "agent-elsewhere")
    config["base_model_name_or_path"] = "/etc/evil-model"
    config["revision"] = "main"
    sha = _write(directory, config, tensors)
    assert _load(directory, sha, base, root) is not None


def _spoil_config(**changes: Any) -> Any:
    def spoil(config: dict, tensors: dict) -> tuple[dict, dict]:
        return {**config, **changes}, tensors

    return spoil


def _drop_key(key: str) -> Any:
    return lambda config, tensors: (config, {k: v for k, v in tensors.items() if k != key})


def _reshaped(config: dict, tensors: dict) -> tuple[dict, dict]:
    # Rank-2 factors under a config of rank 4.
    return config, {k: (v[:2] if ".lora_A." in k else v[:, :2]).contiguous() for k, v in tensors.items()}


def _extra(config: dict, tensors: dict) -> tuple[dict, dict]:
    return config, {**tensors, "base_model.model.lm_head.weight": torch.zeros(320, 32)}


def _integers(config: dict, tensors: dict) -> tuple[dict, dict]:
    return config, {k: v.to(torch.int32) for k, v in tensors.items()}


A_B = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"


@pytest.mark.parametrize(
    ("name", "spoil", "reason", "says"),
    [
        ("prefix", _spoil_config(peft_type="PREFIX_TUNING"), "adapter_bad_config", "only LORA"),
        ("no-type", _spoil_config(peft_type=None), "adapter_bad_config", "peft_type"),
        ("absent-target", _spoil_config(target_modules=["q_proj", "w_gate"]), "adapter_bad_config", "'w_gate'"),
        ("not-linear", _spoil_config(target_modules=["mlp"]), "adapter_bad_config", "LlamaMLP"),
        ("regex", _spoil_config(target_modules=".*proj"), "adapter_bad_config", "target_modules"),
        ("r-huge", _spoil_config(r=10**9), "adapter_bad_config", "r must be"),
        ("r-zero", _spoil_config(r=0), "adapter_bad_config", "r must be"),
        ("r-text", _spoil_config(r="4"), "adapter_bad_config", "r must be"),
        ("alpha", _spoil_config(lora_alpha=True), "adapter_bad_config", "lora_alpha"),
        (
            "auto-mapping",
            _spoil_config(auto_mapping={"base_model_class": "os.system"}),
            "adapter_bad_config",
            "auto_mapping",
        ),
        (
            "auto-map",
            _spoil_config(auto_map={"AutoModel": "evil.Model"}),
            "adapter_bad_config",
            "unknown field 'auto_map'",
        ),
        ("dora", _spoil_config(use_dora=True), "adapter_bad_config", "use_dora"),
        ("saved-modules", _spoil_config(modules_to_save=["lm_head"]), "adapter_bad_config", "modules_to_save"),
        ("megatron", _spoil_config(megatron_core="os"), "adapter_bad_config", "megatron_core"),
        ("rank-pattern", _spoil_config(rank_pattern={"q_proj": 2}), "adapter_bad_config", "rank_pattern"),
        ("wrong-shapes", _reshaped, "adapter_shape_mismatch", "expected floating ("),
        ("extra-tensor", _extra, "adapter_shape_mismatch", "lm_head.weight"),
        ("missing-tensor", _drop_key(A_B), "adapter_shape_mismatch", "q_proj.lora_B"),
        ("integers", _integers, "adapter_shape_mismatch", "torch.int32"),
    ],
)
def test_a_bad_lora_adapter_is_refused_with_its_reason(
    adapter: tuple[Path, str, Specialist], base: Any, root: Path, name: str, spoil: Any, reason: str, says: str
) -> None:
    directory, config, tensors = _copy(adapter, root, f"agent-{name}")
    sha = _write(directory, *spoil(config, tensors))
    with pytest.raises(ClaimCheckError) as info:
        _load(directory, sha, base, root)
    assert info.value.reason == reason
    assert says in info.value.detail


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"peft_type": "LORA", "r": NaN}', "NaN is not JSON"),
        ('{"peft_type": "LORA", "peft_type": "LORA"}', "duplicate keys"),
        ("\xff\xfe", "not JSON"),
    ],
)
def test_a_config_that_is_not_plain_json_is_refused(
    adapter: tuple[Path, str, Specialist], base: Any, root: Path, text: str, says: str, tmp_path: Path
) -> None:
    directory, _, tensors = _copy(adapter, root, f"agent-json-{abs(hash(text))}")
    sha = _write(directory, "{}", tensors)
    (directory / ADAPTER_CONFIG).write_bytes(text.encode("latin-1"))
    with pytest.raises(ClaimCheckError) as info:
        _load(directory, sha, base, root)
    assert (info.value.reason, says in info.value.detail) == ("adapter_bad_config", True)


def test_pickle_is_never_loaded(adapter: tuple[Path, str, Specialist], base: Any, root: Path) -> None:
    directory, config, _ = _copy(adapter, root, "agent-pickle-bin")
    (directory / ADAPTER_CONFIG).write_text(json.dumps(config))
    (directory / "adapter_model.bin").write_bytes(b"\x80\x04\x95" + b"\x00" * 64)
    with pytest.raises(ClaimCheckError) as info:
        _load(directory, "0" * 64, base, root)
    assert info.value.reason == "adapter_unreadable" and "pickle" in info.value.detail

    disguised, config, _ = _copy(adapter, root, "agent-pickle-named-safetensors")
    (disguised / ADAPTER_CONFIG).write_text(json.dumps(config))
    (disguised / ADAPTER_WEIGHTS).write_bytes(b"\x80\x04\x95" + b"\x00" * 64)
    with pytest.raises(ClaimCheckError) as info:
        _load(disguised, file_sha256(disguised / ADAPTER_WEIGHTS), base, root)
    assert info.value.reason == "adapter_unreadable" and "not safetensors" in info.value.detail


def test_a_config_linked_out_of_the_roots_is_refused(
    adapter: tuple[Path, str, Specialist], base: Any, root: Path, tmp_path: Path
) -> None:
    directory, config, tensors = _copy(adapter, root, "agent-config-link")
    sha = _write(directory, config, tensors)
    outside = tmp_path / "adapter_config.json"
    outside.write_text(json.dumps(config))
    (directory / ADAPTER_CONFIG).unlink()
    (directory / ADAPTER_CONFIG).symlink_to(outside)
    with pytest.raises(ClaimCheckError) as info:
        _load(directory, sha, base, root)
    assert info.value.reason == "adapter_outside_roots"


def test_the_weights_are_hashed_first_and_capped(adapter: tuple[Path, str, Specialist], base: Any, root: Path) -> None:
    directory, sha, _ = adapter
    with pytest.raises(ClaimCheckError) as info:
        _load(directory, "0" * 64, base, root)
    assert info.value.reason == SHA_MISMATCH
    size = (directory / ADAPTER_WEIGHTS).stat().st_size
    with pytest.raises(ClaimCheckError) as info:
        load_adapter(directory.as_uri(), sha, base, [root], size - 1)
    assert info.value.reason == "adapter_too_large"

    big, config, tensors = _copy(adapter, root, "agent-big-config")
    sha = _write(big, {**config, "revision": "x" * 70_000}, tensors)
    with pytest.raises(ClaimCheckError) as info:
        _load(big, sha, base, root)
    assert info.value.reason == "adapter_too_large"


def test_an_adapter_config_without_weights_is_missing(
    adapter: tuple[Path, str, Specialist], base: Any, root: Path
) -> None:
    directory, config, _ = _copy(adapter, root, "agent-no-weights")
    (directory / ADAPTER_CONFIG).write_text(json.dumps(config))
    with pytest.raises(ClaimCheckError) as info:
        _load(directory, "0" * 64, base, root)
    assert info.value.reason == "adapter_missing"
