"""The round manifest: what the hive hands the distill job, parsed once into typed objects."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agents.lora import LLAMA_LINEAR, MAX_LORA_R, LoraSpec
from streams import durable
from streams.events import STORED, Learning

CONFIGS_DIR = Path(__file__).resolve().parent / "configs"


class ManifestError(ValueError):
    """A manifest that cannot be read or does not describe a runnable round."""


class LearningsError(ValueError):
    """A learnings file that cannot be read as one Learning JSON per line."""


class DistillParams(BaseModel):
    """How a round distills: processes, steps, the loss weights and checkpoints (0 = no checkpoints).

    These defaults are the product's: the hive's ``DistillSettings`` inherits them, so a manifest written without
    a field means what the hive would have sent. Unknown fields are ignored so that a newer hive can add settings
    without breaking an older job.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    nproc: int = Field(default=2, ge=1)
    steps: int = Field(default=400, ge=1)
    batch_size: int = Field(default=64, ge=1)
    lr: float = Field(default=3e-3, gt=0)
    warmup_steps: int = Field(default=20, ge=0)
    temperature: float = Field(default=1.0, gt=0)
    # True: top-k KD keeps one bucket for the teacher's mass outside its k ids; False: both sides renormalised
    # over the k ids (hive bench fleet's KD comparison measures both).
    kd_residual: bool = True
    kd_weight: float = Field(default=1.0, ge=0)
    ce_weight: float = Field(default=1.0, ge=0)
    # KL to the previous core on replay batches; it applies only when a round has earlier learnings to replay.
    retention_weight: float = Field(default=1.0, ge=0)
    # Earlier rounds' learnings sampled into each round's replay set, balanced per skill (0 = no replay).
    # 512 was too few for a skill with hundreds of distinct tasks (morse forgot 0.17); 4096 kept it.
    replay_size: int = Field(default=4096, ge=0)
    # Top-k of the teacher signal the job computes from an agent's adapter when a learning ships none.
    topk: int = Field(default=16, ge=1)
    # Whose signals the KD term follows. "streamed": each learning's own, made by the agent when it learned it,
    # often while it was still weak at the skill. "latest": every learning of an agent is re-scored by the
    # specialist its newest claim check names (the agent as it is now); an agent whose newest claim check gives no
    # teacher keeps its streamed signals. Measured in hive bench fleet (docs/benchmarks.md).
    teacher: Literal["streamed", "latest"] = "streamed"
    ds_config: str = "zero2_cpu.yaml"
    seed: int = 0
    # The screen (distill.screen): before training, an agent's learnings of a skill the base core knows (at least
    # screen_min_known of the tokens of the skill's validation answers predicted) are left out of the round when
    # the base core agrees with fewer than that share minus screen_margin of their tokens. screen_tasks
    # validation tasks measure what the base knows (0 turns the screen off); up to screen_sample of each agent's
    # learnings per skill, drawn with the round's secret evaluation seed, measure the agent.
    screen_tasks: int = Field(default=64, ge=0)
    screen_sample: int = Field(default=256, ge=1)
    screen_min_known: float = Field(default=0.5, ge=0, le=1)
    screen_margin: float = Field(default=0.3, ge=0, le=1)
    timeout_s: int = Field(default=900, ge=1)
    # Steps between checkpoints: a round that a crash or a restart interrupted resumes from the last one.
    checkpoint_every: int = Field(default=100, ge=0)
    # How the student learns: "full" tunes every weight of the core; "lora" trains a LoRA adapter on the frozen
    # core (rank lora_r, update scaled by lora_alpha / lora_r, on the linear layers lora_targets) and merges it
    # into the released core, which is a complete model either way. "lora" needs a core with its own tokenizer
    # (a pretrained model), as an agent's LoRA does; "auto" is lora there and full on the tiny byte core
    # (agents.lora.resolve_tuning). Measured on SmolLM2-135M (docs/benchmarks.md): over the same 1,920 learnings
    # and 120 steps, LoRA trained 2.6 times faster than full fine-tuning and scored 0.91 against 0.98 on average.
    tuning: Literal["auto", "full", "lora"] = "auto"
    lora_r: int = Field(default=16, ge=1, le=MAX_LORA_R)
    lora_alpha: int = Field(default=32, gt=0)
    lora_targets: list[str] = Field(default_factory=lambda: list(LLAMA_LINEAR), min_length=1)

    @model_validator(mode="after")
    def _lora_is_valid(self) -> DistillParams:
        self.lora_spec()  # the checks an agent's LoRA settings get, when the settings are read
        return self

    def lora_spec(self) -> LoraSpec:
        """The student's LoRA settings as ``agents.lora.wrap`` takes them (used only when ``tuning`` is lora)."""
        return LoraSpec(r=self.lora_r, alpha=self.lora_alpha, targets=tuple(self.lora_targets))

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


# Rank 0 of a job that trains several manifests prints this, then the manifest's path, when that round starts; the
# launcher sends the output that follows to that round's distill.log.
MANIFEST_MARKER = "distill: manifest "


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


def write_learnings(path: Path, learnings: Iterable[Learning]) -> None:
    """Writes a round's learnings file (``learnings.jsonl``, ``replay.jsonl``): one Learning JSON per line, in
    the order given, atomically and durably."""
    durable.write_lines(path, [learning.model_dump_json() for learning in learnings])


def read_learnings(path: Path) -> list[Learning]:
    """Reads a file ``write_learnings`` wrote, in file order; blank lines are allowed, a malformed line is an
    error (LearningsError, naming the file and the line)."""
    try:
        lines = durable.read_lines(Path(path))
    except OSError as err:
        raise LearningsError(f"cannot read learnings {path}: {err}") from err
    learnings: list[Learning] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            # STORED: the file is the hive's own copy of stored learnings; a round left unfinished by a hive that
            # still accepted zone-less times must resume, reading them as UTC.
            learnings.append(Learning.model_validate_json(line, context=STORED))
        except ValidationError as err:
            raise LearningsError(f"{path}:{number}: not a valid Learning: {err}") from err
    return learnings
