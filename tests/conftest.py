"""Fixtures for every tier: signing keys for the agents a test runs, as the hive requires them by default."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any, TypeVar

import pytest

from hive.config import IngestSettings
from streams.durable import write_text
from streams.events import Event
from streams.signing import KEY_SUFFIX, signed

E = TypeVar("E", bound=Event)


class AgentKeys:
    """One random key per agent, made on first use, in a key directory as the hive reads one.

    Give the hive ``env`` (``hive serve``) or ``ingest()`` (an in-process ``Ingestor``); give an agent process
    ``agent_env(id)``; sign what a test publishes by hand with ``sign``.
    """

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._keys: dict[str, bytes] = {}

    def key(self, agent_id: str) -> bytes:
        if agent_id not in self._keys:
            self._keys[agent_id] = secrets.token_bytes(32)
            write_text(self.path(agent_id), self._keys[agent_id].hex() + "\n")
        return self._keys[agent_id]

    def path(self, agent_id: str) -> Path:
        return self.dir / f"{agent_id}{KEY_SUFFIX}"

    def sign(self, event: E) -> E:
        return signed(event, self.key(event.agent_id))  # type: ignore[attr-defined]

    @property
    def env(self) -> dict[str, str]:
        """The hive's settings, as ``HIVE_*`` variables: the key directory (signatures are required by default)."""
        return {"HIVE_INGEST__AGENT_KEY_DIR": str(self.dir)}

    def ingest(self, **settings: Any) -> IngestSettings:
        return IngestSettings(agent_key_dir=self.dir, **settings)

    def agent_env(self, agent_id: str) -> dict[str, str]:
        """An agent process's settings: the file holding its key."""
        self.key(agent_id)
        return {"HIVE_AGENT_SIGNING_KEY_FILE": str(self.path(agent_id))}


@pytest.fixture
def agent_keys(tmp_path: Path) -> AgentKeys:
    return AgentKeys(tmp_path / "agent-keys")
