"""Follows ``hive.core`` and fetches released cores, verifying each one's sha256 before use."""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from agents.codec import Codec, check_fits, load_codec
from agents.model import WEIGHTS_FILE, file_sha256, load_core
from streams import topics
from streams.codec import DecodeError, decode
from streams.config import KafkaSettings
from streams.events import CoreRelease
from streams.follow import TopicFollower

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)


class CoreVerificationError(RuntimeError):
    """A downloaded core whose weights do not match the release's sha256."""


def fetch_core(release: CoreRelease, cache_dir: Path) -> Path:
    """Copies the released core into ``cache_dir/v{version}`` and verifies its sha256.

    Only ``file://`` URIs (and bare paths) are supported: the embedded hive shares a filesystem
    with its agents.
    """
    parsed = urlparse(release.model_uri)
    if parsed.scheme not in ("", "file"):
        raise ValueError(f"core v{release.version}: unsupported model URI scheme {parsed.scheme!r}")
    source = Path(parsed.path)
    target = cache_dir / f"v{release.version}"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    actual = file_sha256(target / WEIGHTS_FILE)
    if actual != release.sha256:
        shutil.rmtree(target)
        raise CoreVerificationError(
            f"core v{release.version} from {release.model_uri}: sha256 {actual} != released {release.sha256}"
        )
    return target


def load_release(release: CoreRelease, cache_dir: Path) -> tuple[PreTrainedModel, Codec]:
    """The released core, fetched and verified (``fetch_core``), loaded with the codec of its own tokenizer
    (none: the tiny core's bytes). Raises CoreVerificationError, OSError or ValueError (a tokenizer that does
    not fit the model among them): the caller refuses the release and keeps the core it runs."""
    directory = fetch_core(release, cache_dir)
    core = load_core(directory)
    codec = load_codec(directory)
    check_fits(codec, core)
    return core, codec


def applies_to(release: CoreRelease, agent_id: str) -> bool:
    """True when ``release`` is for ``agent_id``: a fleet release (no targets) or a canary that names it."""
    return release.targets is None or agent_id in release.targets


class CoreWatcher:
    """Keeps the newest release on ``hive.core`` that applies to one agent, in topic order.

    The agent runs the LAST release in partition 0's order that is a fleet release or a canary naming
    it: not the highest version, so that a rollback (a lower version, released later) and a canary
    (seen only by its targets) both work. Releases go to partition 0, and the follower reads it from
    the beginning: the embedded broker does not enforce compaction (Tansu 0.6 accepts
    cleanup.policy=compact but does not compact), and on a real compacted topic the latest fleet
    release (key ``core``) and the latest canary (key ``canary``) both survive, in their order.
    """

    def __init__(self, kafka: KafkaSettings, agent_id: str) -> None:
        self._kafka = kafka
        self.agent_id = agent_id
        self._latest: CoreRelease | None = None
        self._lock = threading.Lock()
        self._follower = TopicFollower(kafka, topics.CORE, self._offer)
        self.rejected = 0

    def start(self) -> None:
        self._follower.start()

    def stop(self) -> None:
        self._follower.stop()

    def latest(self) -> CoreRelease | None:
        """The newest release that applies to this agent, or None before the first one."""
        with self._lock:
            return self._latest

    def offer(self, release: CoreRelease) -> None:
        """Takes ``release`` as the newest one if it applies to this agent (releases come in topic order)."""
        if not applies_to(release, self.agent_id):
            return
        with self._lock:
            self._latest = release

    def _offer(self, raw: bytes) -> None:
        try:
            release = decode(raw, CoreRelease, self._kafka.max_message_bytes)
        except DecodeError as err:
            self.rejected += 1
            log.warning("ignoring an invalid core release: %s", err)
            return
        self.offer(release)
