"""Who may write to the hive: the allow-list, revocation and signatures, for learnings and heartbeats alike."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from hive.config import IngestSettings
from streams.events import Heartbeat, Learning
from streams.signing import KeyRing, verify_any

# Why a sender is refused; each is a dead-letter ``reason`` for a learning, and a logged reason for a heartbeat.
UNKNOWN_AGENT = "unknown_agent"
REVOKED = "revoked"
UNSIGNED = "unsigned"
SIGNATURE = "signature"
DESCRIPTIONS = {
    UNKNOWN_AGENT: "the agent is not in the allow-list (HIVE_INGEST__ALLOWED_AGENTS)",
    REVOKED: "the agent is revoked (HIVE_INGEST__REVOKED_AGENTS): refused even when correctly signed",
    UNSIGNED: "the agent has no key, and the hive requires signatures (HIVE_INGEST__REQUIRE_SIGNATURES)",
    SIGNATURE: "the agent has a key, and the signature is missing or does not match",
}


@dataclass(frozen=True)
class Rejection:
    """Why a record is refused: a reason (a dead-letter ``reason``), and what exactly was wrong."""

    reason: str
    detail: str


def keyring(settings: IngestSettings) -> KeyRing:
    """The key ring the settings describe; raises KeyRingError naming a malformed key or a missing directory."""
    inline = {agent: secret.get_secret_value() for agent, secret in settings.agent_keys.items()}
    return KeyRing.from_config(inline, settings.agent_key_dir)


class SenderPolicy:
    """Checks the sender of a learning or a heartbeat; built once from ``IngestSettings`` and shared.

    The checks run in this order: the allow-list (when set), the revocation list, then the signature. An
    agent with keys must sign with one of them. An agent without a key is refused as ``unsigned`` when
    signatures are required (the default), and admitted unverified otherwise.
    """

    def __init__(
        self,
        keys: KeyRing,
        allowed: Collection[str] | None = None,
        revoked: Collection[str] = (),
        require_signatures: bool = True,
    ) -> None:
        self.keys = keys
        self.allowed = None if allowed is None else frozenset(allowed)
        self.revoked = frozenset(revoked)
        self.require_signatures = require_signatures

    @classmethod
    def from_settings(cls, settings: IngestSettings) -> SenderPolicy:
        """The hive's policy; raises KeyRingError for a malformed inline key or a missing key directory."""
        return cls(keyring(settings), settings.allowed_agents, settings.revoked_agents, settings.require_signatures)

    def check(self, event: Learning | Heartbeat) -> Rejection | None:
        """None when the event may be used, else why not; raises KeyRingError for an unusable key file.

        A KeyRingError is the operator's to fix (a broken key file): the caller retries rather than refusing
        the sender for a fault that is not theirs, or accepting the event unverified.
        """
        what = type(event).__name__.lower()
        agent = event.agent_id
        if self.allowed is not None and agent not in self.allowed:
            return Rejection(UNKNOWN_AGENT, f"agent {agent!r} is not in the allow-list")
        if agent in self.revoked:
            return Rejection(REVOKED, f"agent {agent!r} is revoked")
        keys = self.keys.get(agent)
        if keys is None:
            if self.require_signatures:
                return Rejection(UNSIGNED, f"agent {agent!r} has no key, and signatures are required")
            return None
        if event.signature is None:
            return Rejection(SIGNATURE, f"agent {agent!r} has a key, but the {what} is not signed")
        if not verify_any(event, keys):
            return Rejection(SIGNATURE, f"the signature does not match agent {agent!r}'s key")
        return None

    def is_unsigned(self, agent_id: str) -> bool:
        """True when the agent has no key: what the policy admitted from it was not verified."""
        return self.keys.get(agent_id) is None
