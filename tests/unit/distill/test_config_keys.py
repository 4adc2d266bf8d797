"""Every DeepSpeed config under distill/configs holds the keys the job overrides, passes DeepSpeed's own config
check, and the GPU ones are bf16 with the ZeRO stage their name says."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from distill.manifest import CONFIGS_DIR, DistillParams
from distill.train import load_ds_config

CONFIGS = sorted(CONFIGS_DIR.rglob("*.yaml")) + sorted(CONFIGS_DIR.rglob("*.yml"))
GPU_CONFIGS = [p for p in CONFIGS if "_gpu_" in p.name]
# What distill.train.load_ds_config sets from the manifest. Each must be in the file: the header promises that
# the value there is a placeholder the job overrides, and a key missing from the file would be added silently.
OVERRIDDEN = (
    ("train_batch_size",),
    ("train_micro_batch_size_per_gpu",),
    ("gradient_accumulation_steps",),
    ("optimizer", "params", "lr"),
    ("scheduler", "params", "total_num_steps"),
    ("scheduler", "params", "warmup_num_steps"),
)


def _ids(path: Path) -> str:
    return str(path.relative_to(CONFIGS_DIR))


def _lookup(config: dict[str, Any], keys: tuple[str, ...]) -> Any:
    value: Any = config
    for key in keys:
        assert isinstance(value, dict) and key in value, f"no {'.'.join(keys)}"
        value = value[key]
    return value


def test_there_are_gpu_configs_to_check() -> None:
    # A glob that silently matched nothing would make the GPU tests below vacuous.
    assert {p.name for p in GPU_CONFIGS} >= {"zero2_gpu_bf16.yaml", "zero3_gpu_bf16.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=_ids)
def test_config_holds_every_key_the_job_overrides(path: Path) -> None:
    config = yaml.safe_load(path.read_text())
    for keys in OVERRIDDEN:
        assert _lookup(config, keys) is not None, f"{path.name}: {'.'.join(keys)} is empty"


@pytest.mark.parametrize("path", CONFIGS, ids=_ids)
def test_deepspeed_accepts_the_config_the_job_builds(path: Path) -> None:
    # deepspeed is imported here, as everywhere: its import is slow and an agent process runs without it.
    from deepspeed.runtime.config import DeepSpeedConfig

    # One rank: DeepSpeed checks the batch sizes against the world size, which a unit test has as 1. Its
    # pydantic models forbid unknown keys, so a misspelt setting fails here rather than being ignored.
    config = load_ds_config(path, DistillParams(batch_size=16, lr=1e-4, steps=50), world_size=1)
    checked = DeepSpeedConfig(config)
    stated = yaml.safe_load(path.read_text())
    assert checked.zero_config.stage == stated["zero_optimization"]["stage"]
    assert checked.bfloat16_config.enabled is bool(stated.get("bf16", {}).get("enabled", False))
    assert checked.train_batch_size == 16


@pytest.mark.parametrize("path", GPU_CONFIGS, ids=_ids)
def test_a_gpu_config_is_bf16_with_the_zero_stage_its_name_says(path: Path) -> None:
    config = yaml.safe_load(path.read_text())
    named = re.match(r"zero(\d)_gpu_", path.name)
    assert named is not None, f"{path.name}: a GPU config is named zeroN_gpu_*.yaml"
    zero = config["zero_optimization"]
    assert zero["stage"] == int(named.group(1))
    assert config["bf16"]["enabled"] is True
    assert config["fp16"]["enabled"] is False
    assert zero["overlap_comm"] is True
    assert 0 < zero["reduce_bucket_size"] <= 500_000_000
    if zero["stage"] == 3:
        assert zero["stage3_gather_16bit_weights_on_model_save"] is True
        assert zero["stage3_prefetch_bucket_size"] > 0


@pytest.mark.parametrize("path", GPU_CONFIGS, ids=_ids)
def test_a_gpu_config_says_how_it_runs_and_where_its_limits_are_documented(path: Path) -> None:
    header = [line for line in path.read_text().splitlines() if line.startswith("#")]
    command = header[0][2:].split()
    # Run by hand on GPU nodes, never under the CPU accelerator the hive's launcher sets.
    assert command[0] == "deepspeed" and "--hostfile" in command
    assert not any("DS_ACCELERATOR" in arg for arg in command)
    text = " ".join(header)
    assert "NCCL" in text
    assert "docs/operator-guide.md" in text


@pytest.mark.parametrize("path", [p for p in CONFIGS if p not in GPU_CONFIGS], ids=_ids)
def test_a_cpu_config_trains_in_fp32(path: Path) -> None:
    # The hive's CPU rounds train fp32 cores (hive/cores/pretrained.py DTYPE); bf16 belongs to the GPU configs.
    config = yaml.safe_load(path.read_text())
    assert not config.get("bf16", {}).get("enabled", False)
