"""An agent's settings: one typed object, read once from ``HIVE_AGENT_*`` variables or flags."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.events import AgentId


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
    lr: float = 3e-3
    # How many on-the-job learning steps before the agent only serves and waits for a new core.
    learn_steps: int = 300
    # Learnings published per step: a sample of the batch, so the stream stays proportionate.
    publish_per_step: int = 8
    topk: int = 16
    heartbeat_s: float = 2.0
    seed: int = 0
    threads: int = 1
