"""Follows ``hive.core`` and loads released cores, fetched and verified by ``agents.core_fetch``."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from agents.codec import Codec, check_fits, load_codec
from agents.core_fetch import FetchOptions, fetch_core
from agents.model import load_core
from agents.release_trust import INVALID, ReleaseTrust
from streams import topics
from streams.codec import DecodeError, decode
from streams.config import KafkaSettings
from streams.events import CoreRelease
from streams.follow import TopicFollower

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)


def load_release(
    release: CoreRelease, cache_dir: Path, options: FetchOptions | None = None
) -> tuple[PreTrainedModel, Codec]:
    """The released core, fetched and verified (``agents.core_fetch``), loaded with the codec of its own tokenizer
    (none: the tiny core's bytes). Raises CoreUnreachable when it cannot be fetched now (try again later), and
    CoreVerificationError, OSError or ValueError (a tokenizer that does not fit the model among them) for a core
    to refuse: the caller keeps the core it runs."""
    directory = fetch_core(release, cache_dir, options)
    core = load_core(directory)
    codec = load_codec(directory)
    check_fits(codec, core)
    return core, codec


def applies_to(release: CoreRelease, agent_id: str) -> bool:
    """True when ``release`` is for ``agent_id``: a fleet release (no targets) or a canary that names it."""
    return release.targets is None or agent_id in release.targets


class CoreWatcher:
    """Keeps the newest release on ``hive.core`` that applies to one agent and that the agent trusts, in topic order.

    The agent runs the LAST release in partition 0's order that is a fleet release or a canary naming
    it: not the highest version, so that a rollback (a lower version, released later) and a canary
    (seen only by its targets) both work. Releases go to partition 0, and the follower reads it from
    the beginning: the embedded broker does not enforce compaction (Tansu 0.6 accepts
    cleanup.policy=compact but does not compact), and on a real compacted topic the latest fleet
    release (key ``core``) and the latest canary (key ``canary``) both survive, in their order.

    Every release passes ``trust`` first (``agents.release_trust``): unsigned, forged, tampered and replayed
    releases are refused and counted (``counts``), whatever they name. ``latest`` answers None until this
    reading of the topic reaches the newest release the agent ever admitted.
    """

    def __init__(self, kafka: KafkaSettings, agent_id: str, trust: ReleaseTrust) -> None:
        self._kafka = kafka
        self.agent_id = agent_id
        self.trust = trust
        self._latest: CoreRelease | None = None
        self._lock = threading.Lock()
        self._follower = TopicFollower(kafka, topics.CORE, self._offer, on_reset=self._restart_reading)

    def start(self) -> None:
        self._follower.start()

    def stop(self) -> None:
        self._follower.stop()

    def counts(self) -> dict[str, int]:
        """Refused releases by reason (``agents.release_trust.REFUSALS``), and the follower's retries and resets,
        for heartbeats."""
        with self._lock:
            counts = dict(self.trust.counts)
        # How often the broker could not be reached, and how often hive.core started over (a broker that lost it).
        counts["core_watch_retries"] = self._follower.retries
        counts["core_watch_resets"] = self._follower.resets
        return counts

    def latest(self) -> CoreRelease | None:
        """The newest trusted release that applies to this agent, or None before the first one."""
        with self._lock:
            return self._latest if self.trust.caught_up() else None

    def offer(self, release: CoreRelease) -> None:
        """Takes ``release`` as the newest one if the agent trusts it and it applies to this agent (releases
        come in topic order)."""
        with self._lock:
            if self.trust.admit(release) and applies_to(release, self.agent_id) and self.trust.take(release):
                self._latest = release

    def _restart_reading(self) -> None:
        # The agent keeps running its core; ``latest`` answers None until the new reading reaches it again.
        with self._lock:
            self.trust.restart_reading()

    def _offer(self, raw: bytes) -> None:
        try:
            release = decode(raw, CoreRelease, self._kafka.max_message_bytes)
        except DecodeError as err:
            with self._lock:
                self.trust.refuse(INVALID, None, f"not a core release: {err}")
            return
        self.offer(release)
