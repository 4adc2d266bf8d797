"""The round manifest: what the hive hands the distill job, parsed once into typed objects."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

CONFIGS_DIR = Path(__file__).resolve().parent / "configs"


class ManifestError(ValueError):
    """A manifest that cannot be read or does not describe a runnable round."""


class DistillParams(BaseModel):
    """The hive's ``DistillSettings`` fields, plus ``checkpoint_every`` (0 = no checkpoints).

    Unknown fields are ignored so that a newer hive can add settings without breaking an older job.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    nproc: int = Field(default=2, ge=1)
    steps: int = Field(default=400, ge=1)
    batch_size: int = Field(default=64, ge=1)
    lr: float = Field(default=3e-3, gt=0)
    warmup_steps: int = Field(default=20, ge=0)
    temperature: float = Field(default=1.0, gt=0)
    kd_weight: float = Field(default=1.0, ge=0)
    ce_weight: float = Field(default=1.0, ge=0)
    # Applies only to a round with a replay file: without earlier learnings there is nothing to retain.
    retention_weight: float = Field(default=1.0, ge=0)
    replay_size: int = Field(default=512, ge=0)
    topk: int = Field(default=16, ge=1)
    ds_config: str = "zero2_cpu.yaml"
    seed: int = 0
    timeout_s: int = Field(default=900, ge=1)
    checkpoint_every: int = Field(default=0, ge=0)

    def ds_config_path(self) -> Path:
        """The DeepSpeed config: a path as given if it exists, else a file name under distill/configs/."""
        return resolve_ds_config(self.ds_config)


class AdapterParams(BaseModel):
    """Which adapter claim checks the job may follow (the hive's ``HIVE_ADAPTERS__*``).

    Only directories under one of ``roots`` (none: no claim check is followed), and only a weights file of at
    most ``max_bytes``; None means four times the base core's weights file, since a teacher must hold the base
    core's tensors and nothing more.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    roots: list[Path] = Field(default_factory=list)
    max_bytes: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _absolute(self) -> AdapterParams:
        relative = [str(root) for root in self.roots if not root.is_absolute()]
        if relative:
            raise ValueError(f"adapter roots must be absolute paths, got {', '.join(relative)}")
        return self


class EvalParams(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    tasks: int = Field(default=100, ge=1)
    seed: int = 10_000


class MlflowParams(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    tracking_uri: str
    experiment: str = "hive-rounds"
    run_name: str | None = None


class Lineage(BaseModel):
    """The store slice a round took in: learnings with ``after_seq < seq <= upto_seq``, one line each, in seq order."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    after_seq: int = Field(ge=0)
    upto_seq: int = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> Lineage:
        if self.upto_seq < self.after_seq:
            raise ValueError(f"lineage upto_seq {self.upto_seq} is below after_seq {self.after_seq}")
        return self


class Manifest(BaseModel):
    """One round: the core to start from, where to write, the learnings, and how to distill them."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    round_id: str = Field(min_length=1)
    base_core: Path
    out_dir: Path
    learnings: Path
    replay: Path | None = None
    skills: list[str] = Field(min_length=1)
    distill: DistillParams = Field(default_factory=DistillParams)
    adapters: AdapterParams = Field(default_factory=AdapterParams)
    eval: EvalParams = Field(default_factory=EvalParams)
    mlflow: MlflowParams | None = None
    lineage: Lineage | None = None
    # the hive's own record of the seqs the round took; the job ignores it
    store_range: Lineage | None = None

    @field_validator("adapters", mode="before")
    @classmethod
    def _no_adapters(cls, value: object) -> object:
        # A manifest written without adapter settings (a benchmark's) follows no claim check.
        return {} if value is None else value

    @model_validator(mode="after")
    def _absolute(self) -> Manifest:
        # The job runs under a launcher whose working directory the hive does not control.
        for name in ("base_core", "out_dir", "learnings", "replay"):
            value = getattr(self, name)
            if value is not None and not value.is_absolute():
                raise ValueError(f"{name} must be an absolute path, got {value}")
        return self

    @property
    def log_path(self) -> Path:
        """Where the launcher's full output goes: next to the round's out_dir."""
        return self.out_dir.parent / "distill.log"


def resolve_ds_config(name: str) -> Path:
    path = Path(name)
    if path.is_file():
        return path.resolve()
    bundled = CONFIGS_DIR / name
    if bundled.is_file():
        return bundled
    known = ", ".join(sorted(p.name for p in CONFIGS_DIR.glob("*.yaml")))
    raise ManifestError(f"DeepSpeed config {name!r} is neither a file nor one of distill/configs/ ({known})")


def load_manifest(path: Path) -> Manifest:
    """Reads and validates a manifest JSON file; raises ManifestError saying what is wrong."""
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise ManifestError(f"cannot read manifest {path}: {err}") from err
    try:
        return Manifest.model_validate_json(text)
    except ValidationError as err:
        raise ManifestError(f"invalid manifest {path}: {err}") from err
