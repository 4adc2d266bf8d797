"""One set of distill defaults: the hive's DistillSettings inherits the manifest's DistillParams."""

from __future__ import annotations

import pytest

from distill.manifest import DistillParams
from hive.config import DistillSettings, HiveSettings


def test_the_hive_and_the_manifest_agree_on_every_shared_default() -> None:
    params, settings = DistillParams().model_dump(), DistillSettings().model_dump()
    assert set(settings) - set(params) == {"continual_lr", "max_agent_share"}
    assert {name: settings[name] for name in params} == params
    # The hive's tuned values are the product's (see the comments in distill/manifest.py).
    assert (params["replay_size"], params["checkpoint_every"]) == (4096, 100)


def test_a_rounds_manifest_block_parses_back_to_the_same_params() -> None:
    settings = DistillSettings(steps=7, lr=2e-3, continual_lr=5e-4, checkpoint_every=0)
    assert DistillParams.model_validate(settings.for_round(first=True)) == DistillParams(
        steps=7, lr=2e-3, checkpoint_every=0
    )
    assert DistillParams.model_validate(settings.for_round(first=False)).lr == 5e-4


def test_env_variables_reach_the_settings_and_are_checked_as_the_job_checks_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HIVE_DISTILL__REPLAY_SIZE", "512")
    assert HiveSettings().distill.replay_size == 512
    monkeypatch.setenv("HIVE_DISTILL__STEPS", "0")
    with pytest.raises(ValueError, match="steps"):
        HiveSettings()


def test_the_lora_arm_is_chosen_and_shaped_by_env_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    assert HiveSettings().distill.tuning == "auto"
    monkeypatch.setenv("HIVE_DISTILL__TUNING", "lora")
    monkeypatch.setenv("HIVE_DISTILL__LORA_R", "8")
    monkeypatch.setenv("HIVE_DISTILL__LORA_TARGETS", '["q_proj", "v_proj"]')
    distill = HiveSettings().distill
    assert (distill.tuning, distill.lora_r, distill.lora_alpha, distill.lora_targets) == (
        "lora",
        8,
        32,
        ["q_proj", "v_proj"],
    )
    # The round's manifest carries them to the job.
    assert DistillParams.model_validate(distill.for_round(first=False)).lora_spec().targets == ("q_proj", "v_proj")
    monkeypatch.setenv("HIVE_DISTILL__TUNING", "qlora")
    with pytest.raises(ValueError, match="tuning"):
        HiveSettings()
