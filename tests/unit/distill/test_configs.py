"""Every DeepSpeed config under distill/configs loads, opens with its command, and names a ZeRO stage."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from distill.manifest import CONFIGS_DIR, DistillParams
from distill.train import load_ds_config

CONFIGS = sorted(CONFIGS_DIR.rglob("*.yaml")) + sorted(CONFIGS_DIR.rglob("*.yml"))


def test_there_are_configs_to_check() -> None:
    # A glob that silently matched nothing would make every test below vacuous.
    assert {p.name for p in CONFIGS} >= {"zero1_cpu.yaml", "zero2_cpu.yaml", "zero3_cpu.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(CONFIGS_DIR)))
def test_config_opens_with_the_command_that_runs_it(path: Path) -> None:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# "), f"{path.name} must open with a comment holding its command"
    command = first[2:].split()
    assert "deepspeed" in command
    assert "DS_ACCELERATOR=cpu" in command or "--hostfile" in command
    # The command must run this very file.
    assert any(arg.endswith(str(path.relative_to(CONFIGS_DIR.parent.parent))) for arg in command)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(CONFIGS_DIR)))
def test_config_loads_with_a_zero_stage(path: Path) -> None:
    config = yaml.safe_load(path.read_text())
    assert isinstance(config, dict)
    assert config["zero_optimization"]["stage"] in (0, 1, 2, 3)
    assert config.get("gradient_clipping", 0) > 0
    assert not config.get("fp16", {}).get("enabled", False)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(CONFIGS_DIR)))
def test_manifest_overrides_batch_sizes_lr_and_schedule(path: Path) -> None:
    params = DistillParams(batch_size=48, lr=1e-3, steps=123, warmup_steps=0)
    config = load_ds_config(path, params, world_size=2)
    assert config["train_batch_size"] == 48
    assert config["train_micro_batch_size_per_gpu"] == 24
    assert config["gradient_accumulation_steps"] == 1
    assert config["optimizer"]["params"]["lr"] == 1e-3
    if "scheduler" in config:
        assert config["scheduler"]["params"]["total_num_steps"] == 123
        assert config["scheduler"]["params"]["warmup_num_steps"] == 1


def test_a_batch_that_does_not_split_over_ranks_is_refused() -> None:
    with pytest.raises(ValueError, match="split"):
        load_ds_config(CONFIGS_DIR / "zero2_cpu.yaml", DistillParams(batch_size=63), world_size=2)
