"""LoRA specialists on a pretrained-style core: they learn in an adapter, leave the core's weights alone, and save
the adapter as the claim check, reloaded bit-identical."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from agents.claim_check import load_adapter
from agents.codec import BYTE_CODEC, HFCodec
from agents.config import AgentSettings
from agents.learner import Specialist
from agents.lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS, LLAMA_LINEAR, LoraSpec, resolve_tuning
from agents.model import WEIGHTS_FILE, build_core, file_sha256, load_core, topk_signal

PROMPT, ANSWER = "cap zorvia", "belmar"


@pytest.fixture(scope="module")
def trained(hf_dir: Path, hf: HFCodec) -> tuple[Specialist, list[float]]:
    """A LoRA specialist after 30 steps on one fact, with its losses."""
    torch.manual_seed(0)
    spec = Specialist(load_core(hf_dir), 0, lr=3e-3, topk=4, codec=hf, lora=LoraSpec(r=8, alpha=16, lr=1e-2))
    losses = [spec.learn([PROMPT, "add 12 30"], [ANSWER, "42"]) for _ in range(30)]
    return spec, losses


def test_auto_tuning_is_lora_on_a_core_with_a_tokenizer_and_full_on_the_byte_core(hf: HFCodec) -> None:
    assert resolve_tuning("auto", hf) == "lora"
    assert resolve_tuning("auto", BYTE_CODEC) == "full"
    assert resolve_tuning("full", hf) == "full"
    with pytest.raises(ValueError, match="tiny core"):
        resolve_tuning("lora", BYTE_CODEC)
    tiny = Specialist(build_core(seed=0), 0, lr=1e-3, topk=2)
    assert tiny.tuning == "full" and all(p.requires_grad for p in tiny.model.parameters())


def test_a_lora_specialist_learns_a_prompt_in_its_adapter(
    hf_dir: Path, hf: HFCodec, trained: tuple[Specialist, list[float]]
) -> None:
    spec, losses = trained
    assert spec.tuning == "lora"
    # The random core's frozen head keeps every logit small, so the loss stays near log(vocab) even once the
    # answer is the argmax: it falls, and greedy decoding gives the answers the core did not.
    assert losses[-1] < losses[0] - 0.4
    assert spec.answer([PROMPT, "add 12 30"]) == [ANSWER, "42"]
    assert Specialist(load_core(hf_dir), 0, lr=1e-3, topk=2, codec=hf).answer([PROMPT]) != [ANSWER]


def test_only_the_adapter_is_trainable_and_the_core_is_untouched(
    hf_dir: Path, trained: tuple[Specialist, list[float]]
) -> None:
    spec, _ = trained
    core = load_core(hf_dir).state_dict()
    names = [n for n, p in spec.model.named_parameters() if p.requires_grad]
    assert names and all(".lora_A." in n or ".lora_B." in n for n in names)
    # Every linear layer of both blocks carries an A and a B; nothing else is trained.
    assert len(names) == 2 * 2 * len(LLAMA_LINEAR)
    assert {n.split(".")[-4] for n in names} == set(LLAMA_LINEAR)
    base = {
        n.removeprefix("base_model.model.").replace(".base_layer", ""): t
        for n, t in spec.model.state_dict().items()
        if "lora_" not in n
    }
    assert base.keys() == core.keys()
    assert all(torch.equal(base[n], core[n]) for n in core)
    assert spec.optimizer.param_groups[0]["lr"] == 1e-2


def test_the_adapter_is_the_claim_check_and_reloads_bit_identical(
    tmp_path: Path, hf_dir: Path, hf: HFCodec, trained: tuple[Specialist, list[float]]
) -> None:
    spec, _ = trained
    directory = tmp_path / "specialist"
    (directory).mkdir()
    (directory / WEIGHTS_FILE).write_bytes(b"stale full weights")
    sha = spec.save(directory)

    assert sha == file_sha256(directory / ADAPTER_WEIGHTS)
    assert not (directory / WEIGHTS_FILE).exists()  # one specialist per directory
    config = json.loads((directory / ADAPTER_CONFIG).read_text())
    assert (config["peft_type"], config["r"], config["lora_alpha"]) == ("LORA", 8, 16)
    saved = load_file(directory / ADAPTER_WEIGHTS)
    live = {n.replace(".default", ""): p for n, p in spec.model.named_parameters() if p.requires_grad}
    assert saved.keys() == live.keys()
    assert all(torch.equal(saved[n], live[n].detach()) for n in saved)

    # Reloaded as the hive does: onto its own core, merged for inference.
    teacher = load_adapter(directory.as_uri(), sha, load_core(hf_dir), [tmp_path], 1 << 24)
    prompts, answers = [PROMPT, "add 12 30"], [ANSWER, "42"]
    original = spec.teacher_signals(prompts, answers, ["correction", "correction"])
    again = topk_signal(teacher, prompts, answers, 4, hf)
    for mine, (ids, lps) in zip(original, again, strict=True):
        assert mine.tokenizer == hf.fingerprint and mine.token_ids == ids
        # Merged weights compute the same function up to float rounding.
        assert [lp for row in mine.logprobs for lp in row] == pytest.approx([lp for row in lps for lp in row], abs=1e-5)


def test_a_full_save_after_a_lora_one_leaves_no_adapter_behind(
    tmp_path: Path, hf_dir: Path, hf: HFCodec, trained: tuple[Specialist, list[float]]
) -> None:
    spec, _ = trained
    directory = tmp_path / "specialist"
    spec.save(directory)
    full = Specialist(load_core(hf_dir), 0, lr=1e-3, topk=2, codec=hf, tuning="full")
    sha = full.save(directory)
    assert not (directory / ADAPTER_CONFIG).exists() and not (directory / ADAPTER_WEIGHTS).exists()
    assert sha == file_sha256(directory / WEIGHTS_FILE)


def test_a_swap_gives_a_fresh_adapter_on_the_new_core(hf_dir: Path, hf: HFCodec) -> None:
    spec = Specialist(load_core(hf_dir), 0, lr=1e-3, topk=2, codec=hf, lora=LoraSpec(r=4, lr=1e-2))
    spec.learn([PROMPT], [ANSWER])
    spec.swap_core(load_core(hf_dir), 1)
    assert (spec.core_version, spec.steps, spec.tuning) == (1, 0, "lora")
    b = [p for n, p in spec.model.named_parameters() if ".lora_B." in n]
    assert b and all(bool((p == 0).all()) for p in b)  # PEFT starts B at zero: the adapter changes nothing yet


def test_a_target_the_core_lacks_is_refused_before_anything_changes(hf_dir: Path, hf: HFCodec) -> None:
    with pytest.raises(ValueError, match="'w_gate' names no linear layer"):
        Specialist(load_core(hf_dir), 0, lr=1e-3, topk=2, codec=hf, lora=LoraSpec(targets=("w_gate",)))
    with pytest.raises(ValueError, match=r"'mlp' names no linear layer .*LlamaMLP"):
        Specialist(load_core(hf_dir), 0, lr=1e-3, topk=2, codec=hf, lora=LoraSpec(targets=("mlp",)))


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"r": 0}, "rank"),
        ({"r": 10_000}, "rank"),
        ({"targets": ()}, "at least one target"),
        ({"targets": ("q_proj; rm",)}, "module names"),
        ({"dropout": 1.0}, "dropout"),
        ({"alpha": 0}, "alpha"),
    ],
)
def test_lora_settings_are_checked(fields: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LoraSpec(**fields)


def test_agent_settings_carry_the_lora_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = AgentSettings()
    assert (settings.tuning, settings.lora_r, settings.lora_alpha, settings.lora_lr) == ("auto", 16, 32, 2e-3)
    assert settings.lora_spec() == LoraSpec(16, 32, 0.0, LLAMA_LINEAR, 2e-3)
    monkeypatch.setenv("HIVE_AGENT_TUNING", "lora")
    monkeypatch.setenv("HIVE_AGENT_LORA_R", "8")
    monkeypatch.setenv("HIVE_AGENT_LORA_TARGETS", '["q_proj", "v_proj"]')
    settings = AgentSettings()
    assert (settings.tuning, settings.lora_spec().r, settings.lora_spec().targets) == ("lora", 8, ("q_proj", "v_proj"))
    for env, value in [("HIVE_AGENT_LORA_R", "0"), ("HIVE_AGENT_LORA_TARGETS", "[]"), ("HIVE_AGENT_TUNING", "half")]:
        monkeypatch.setenv(env, value)
        with pytest.raises(ValueError):
            AgentSettings()
        monkeypatch.delenv(env)
