"""An agent's settings: one typed object, read once from ``HIVE_AGENT_*`` variables or flags."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from agents.core_fetch import DEFAULT_MAX_CORE_BYTES, FetchOptions
from agents.lora import LLAMA_LINEAR, MAX_LORA_R, LoraSpec, Tuning
from agents.release_trust import PinnedKeys
from streams.events import AgentId
from streams.release_signing import parse_public_keys
from streams.signing import parse_keys, read_key_file


class AgentSettings(BaseSettings):
    """What one agent does on the job, and where it keeps its own state."""

    model_config = SettingsConfigDict(env_prefix="HIVE_AGENT_", extra="ignore")

    agent_id: AgentId = "agent-1"
    skill: str = "capital"
    # Beside the hive's own state by default, so that one directory holds everything.
    home: Path = Field(default_factory=lambda: Path(os.environ.get("HIVE_HOME", ".hive")) / "agents")
    # Skills the agent evaluates itself on (held-out tasks) when it reports: the fleet's skills.
    eval_skills: list[str] = Field(default_factory=list)
    eval_tasks: int = 100
    batch_size: int = 32
    # The learning rate of full fine-tuning (the tiny core's way to learn).
    lr: float = 3e-3
    # How the agent learns on the job: `auto` is a LoRA adapter on a core with its own tokenizer (a pretrained
    # model) and full fine-tuning on the tiny byte core, which only tunes `full`.
    tuning: Tuning = "auto"
    # The LoRA adapter: rank, alpha (the update is scaled by alpha / r), dropout, the linear layers it adapts (as
    # a JSON list in HIVE_AGENT_LORA_TARGETS; default every linear layer of a Llama block) and its learning rate.
    # SmolLM2-135M, r=16 on every linear layer at 2e-3 and batch 8: 40 made-up capitals, 0.00 -> 0.95 in 75 steps.
    lora_r: int = Field(default=16, ge=1, le=MAX_LORA_R)
    lora_alpha: int = Field(default=32, gt=0)
    lora_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    lora_targets: list[str] = Field(default_factory=lambda: list(LLAMA_LINEAR), min_length=1)
    lora_lr: float = Field(default=2e-3, gt=0)
    # How many on-the-job learning steps on its first core, before the agent only serves and waits for a new one.
    learn_steps: int = 300
    # After every core swap the agent rebases (a fresh adapter on the new core, which holds what the fleet learned)
    # and learns this many steps more: round after round, for as long as it runs. None: learn_steps; 0: it only
    # serves after its first core.
    relearn_steps: int | None = Field(default=None, ge=0)
    # New material: after its k-th core swap the agent works later_skills[k-1] (the last one stays), not `skill`.
    later_skills: list[str] = Field(default_factory=list)
    # Learnings published per step: a sample of the batch, so the stream stays proportionate.
    publish_per_step: int = 8
    topk: int = 16
    heartbeat_s: float = 2.0
    seed: int = 0
    threads: int = 1
    # Learnings the spool holds while the broker is unreachable. At the bound the agent waits (backpressure)
    # and counts `spool_full_waits`; it never drops one.
    spool_max: int = Field(default=100_000, ge=1)
    # A learning the broker has not acked within this long stays in the spool and is sent again.
    send_timeout_s: float = Field(default=10.0, gt=0)
    # The longest pause between attempts to reach a broker that is down.
    retry_backoff_max_s: float = Field(default=5.0, gt=0)
    # On shutdown, how long the agent keeps sending its spool; the rest stays on disk for its next start.
    drain_timeout_s: float = Field(default=10.0, ge=0)
    # The HMAC key this agent shares with the hive, as text (`hex:...`, `utf8:...`, or bare hex), or a
    # file holding it; at least 16 bytes. With a key, every learning and heartbeat is signed. A hive that
    # requires signatures (its default) refuses everything from an agent without one.
    signing_key: SecretStr | None = None
    signing_key_file: Path | None = None
    # The hive's Ed25519 public key(s) this agent pins: only releases signed with one of them are run. Inline
    # (PEM, or 64 hex digits of the raw key; several during a rotation), or else the file, which by default is
    # where a hive with the same HIVE_HOME writes its key (read again when it changes).
    hive_public_key: str | None = None
    hive_public_key_file: Path = Field(
        default_factory=lambda: Path(os.environ.get("HIVE_HOME", ".hive")) / "release-key" / "release.pub"
    )

    # Fetching cores from another host (agents.core_fetch): the CA bundle of an https:// core server (unset: the
    # system's), the most bytes a core may have before it is refused unread, the S3-compatible endpoint of s3://
    # cores (unset: AWS, or AWS_ENDPOINT_URL), and how long a connection or read may stall.
    core_ca_file: Path | None = None
    max_core_bytes: int = Field(default=DEFAULT_MAX_CORE_BYTES, gt=0)
    s3_endpoint_url: str | None = None
    core_fetch_timeout_s: float = Field(default=30.0, gt=0)
    # The hive's server (http(s)://host:port, `hive serve` with HIVE_CORES__LISTEN) that this agent uploads its
    # saved specialist to, when it does not share the hive's disk; the claim check then names the hive's copy.
    adapter_upload_url: str | None = Field(default=None, pattern=r"^https?://[^?#]+$")

    @model_validator(mode="after")
    def _one_key(self) -> AgentSettings:
        if self.signing_key is not None and self.signing_key_file is not None:
            raise ValueError("set signing_key or signing_key_file, not both")
        return self

    def steps_on_core(self, swaps: int) -> int:
        """On-the-job steps on the core the agent runs after ``swaps`` core swaps."""
        if swaps == 0:
            return self.learn_steps
        return self.learn_steps if self.relearn_steps is None else self.relearn_steps

    def skill_on_core(self, swaps: int) -> str:
        """The skill the agent works after ``swaps`` core swaps."""
        if swaps == 0 or not self.later_skills:
            return self.skill
        return self.later_skills[min(swaps, len(self.later_skills)) - 1]

    @model_validator(mode="after")
    def _hive_key_is_valid(self) -> AgentSettings:
        self.pinned_keys()  # a malformed inline key fails at startup, not at the first release
        return self

    @model_validator(mode="after")
    def _lora_is_valid(self) -> AgentSettings:
        self.lora_spec()  # the same checks the learner makes, at the boundary
        return self

    def fetch_options(self) -> FetchOptions:
        return FetchOptions(self.core_ca_file, self.max_core_bytes, self.s3_endpoint_url, self.core_fetch_timeout_s)

    def lora_spec(self) -> LoraSpec:
        """The LoRA settings as the learner takes them."""
        return LoraSpec(self.lora_r, self.lora_alpha, self.lora_dropout, tuple(self.lora_targets), self.lora_lr)

    def signing_key_bytes(self) -> bytes | None:
        """The signing key, read and parsed now, as ``streams.signing.KeyRing`` reads one.

        A key given as several lines (a rotation: the hive holds the old and the new key) signs with the
        first. Raises ValueError for a key that is malformed or shorter than 16 bytes, OSError for an
        unreadable file.
        """
        if self.signing_key is not None:
            return parse_keys(self.signing_key.get_secret_value())[0]
        if self.signing_key_file is None:
            return None
        try:
            return read_key_file(self.signing_key_file)[0]
        except ValueError as exc:
            raise ValueError(f"signing key file {self.signing_key_file} is invalid: {exc}") from exc

    def pinned_keys(self) -> PinnedKeys:
        """The hive keys this agent trusts. Raises ReleaseKeyError (a ValueError) for a malformed inline key."""
        if self.hive_public_key is not None:
            return PinnedKeys(inline=parse_public_keys(self.hive_public_key))
        return PinnedKeys(path=self.hive_public_key_file)
