"""The hive's settings: one typed object, read once from ``HIVE_*`` variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.config import KafkaSettings


class DistillSettings(BaseModel):
    """How a round distills: processes, steps and the loss weights."""

    nproc: int = 2
    steps: int = 400
    batch_size: int = 64
    lr: float = 3e-3
    warmup_steps: int = 20
    temperature: float = 1.0
    kd_weight: float = 1.0
    ce_weight: float = 1.0
    # KL to the previous core on replay batches; it applies only when a round has earlier learnings to replay.
    retention_weight: float = 1.0
    # Earlier rounds' learnings sampled into each round's replay set, balanced per skill (0 = no replay).
    replay_size: int = 512
    # Top-k of the teacher signal the hive computes from an agent's adapter when a learning ships none.
    topk: int = 16
    ds_config: str = "zero2_cpu.yaml"
    seed: int = 0
    timeout_s: int = 900


class GateSettings(BaseModel):
    max_regression: float = 0.02
    eval_tasks: int = 100
    eval_seed: int = 10_000


class HiveSettings(BaseSettings):
    """Everything one hive needs; its state lives under ``home`` so a user can see or delete it."""

    model_config = SettingsConfigDict(env_prefix="HIVE_", env_nested_delimiter="__", extra="ignore")

    home: Path = Path(".hive")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    registered_model: str = "hive-core"
    # Plugin skills (module:attr) the hive may meet in learnings; built-ins need no entry.
    skills: list[str] = Field(default_factory=list)
    round_min_learnings: int = 1500
    distill: DistillSettings = Field(default_factory=DistillSettings)
    gate: GateSettings = Field(default_factory=GateSettings)

    @property
    def mlflow_uri(self) -> str:
        return f"sqlite:///{self.home.resolve() / 'mlflow.db'}"

    @property
    def cores_dir(self) -> Path:
        return self.home / "cores"

    @property
    def store_dir(self) -> Path:
        return self.home / "store"

    @property
    def rounds_dir(self) -> Path:
        return self.home / "rounds"
