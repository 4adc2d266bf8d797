"""Which core releases an agent believes: signed by a hive key it pins, and newer than any it accepted before."""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from streams import durable
from streams.events import CoreRelease
from streams.release_signing import ReleaseKeyError, read_public_keys, verify_release

log = logging.getLogger(__name__)

# Heartbeat counters, one per reason a release is refused.
INVALID = "releases_invalid"  # not a CoreRelease at all
UNSIGNED = "releases_unsigned"  # no signature or no sequence number
BAD_SIGNATURE = "releases_bad_signature"  # forged, or changed after the hive signed it
REPLAYED = "releases_replayed"  # a sequence number at or below one already accepted
NO_KEY = "releases_no_key"  # the agent pins no usable hive key, so it can check nothing
REFUSALS: tuple[str, ...] = (INVALID, UNSIGNED, BAD_SIGNATURE, REPLAYED, NO_KEY)

SEQUENCE_FILE = "release-sequence"

_Stamp = tuple[int, int, int, int]


class PinnedKeys:
    """The hive's public keys this agent trusts: given inline, or in a file.

    The file is read again whenever it changes, so that a key written after the agent started (the hive makes
    its key on its first release) or a rotation (old and new key in the file) takes effect without a restart.
    Safe to share between threads.
    """

    def __init__(self, inline: tuple[Ed25519PublicKey, ...] | None = None, path: Path | None = None) -> None:
        if inline is None and path is None:
            raise ValueError("pin hive keys inline or in a file")
        self._inline = inline
        self._path = path
        self._cached: tuple[_Stamp, tuple[Ed25519PublicKey, ...]] | None = None
        self._lock = threading.Lock()

    @property
    def source(self) -> str:
        return "the inline key (HIVE_AGENT_HIVE_PUBLIC_KEY)" if self._inline is not None else str(self._path)

    def get(self) -> tuple[Ed25519PublicKey, ...] | None:
        """The keys, or None while the file does not exist. Raises ReleaseKeyError for a file that is unusable."""
        if self._inline is not None:
            return self._inline
        assert self._path is not None
        try:
            info = os.stat(self._path)
        except FileNotFoundError:
            return None
        except OSError as err:
            raise ReleaseKeyError(f"hive public key {self._path} cannot be read: {err}") from err
        stamp = (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        with self._lock:
            if self._cached is not None and self._cached[0] == stamp:
                return self._cached[1]
        try:
            keys = read_public_keys(self._path)
        except FileNotFoundError:
            return None
        except OSError as err:
            raise ReleaseKeyError(f"hive public key {self._path} cannot be read: {err}") from err
        with self._lock:
            self._cached = (stamp, keys)
        return keys


class ReleaseTrust:
    """Admits a release only when a pinned key signed it and its sequence number is above every one admitted.

    Releases arrive in topic order. Within one reading of the topic, a sequence number at or below the highest
    admitted is a replay. Two marks are also kept on disk (``SEQUENCE_FILE`` in the agent's home, JSON): the
    highest number ever admitted, and the number of the newest release the agent took to run. A new reading
    (the agent restarted, or the topic started over) is not ``caught_up`` until it reaches the first mark, and
    never takes a release older than the second. So an agent whose topic was emptied and refilled with old
    signed releases keeps its core instead of going back to an old one.
    """

    def __init__(self, keys: PinnedKeys, state_dir: Path | None = None) -> None:
        self._keys = keys
        self._path = state_dir / SEQUENCE_FILE if state_dir is not None else None
        self._floor, self._taken_floor = self._read_marks()
        self._persisted = (self._floor, self._taken_floor)
        self._highest = 0
        self._highest_signature: str | None = None
        self._taken = 0
        self.counts = dict.fromkeys(REFUSALS, 0)

    def _read_marks(self) -> tuple[int, int]:
        if self._path is None or not self._path.is_file():
            return 0, 0
        text = self._path.read_text(encoding="utf-8")
        try:
            marks = json.loads(text)
        except json.JSONDecodeError:
            marks = None
        admitted, taken = (marks.get("admitted"), marks.get("taken")) if isinstance(marks, dict) else (None, None)
        if type(admitted) is not int or type(taken) is not int or admitted < 0 or taken < 0:
            raise ValueError(f"{self._path} holds {text[:60]!r}, not the release sequence marks")
        return admitted, taken

    @property
    def floor(self) -> int:
        """The highest sequence number admitted before this reading of the topic began."""
        return self._floor

    def caught_up(self) -> bool:
        return self._highest >= self._floor

    def restart_reading(self) -> None:
        """The topic starts over (a broker that lost its data): its releases are read again from the beginning,
        and ``caught_up`` waits for one at least as new as the newest admitted so far."""
        self._floor = max(self._floor, self._highest)
        self._taken_floor = max(self._taken_floor, self._taken)
        self._highest, self._highest_signature, self._taken = 0, None, 0

    def take(self, release: CoreRelease) -> bool:
        """True when the agent may run ``release``, an admitted release meant for it: it is not older than the
        newest release it took before this reading began."""
        assert release.sequence is not None  # admitted releases carry one
        if release.sequence < self._taken_floor:
            return False
        self._taken = max(self._taken, release.sequence)
        self._record()
        return True

    def refuse(self, reason: str, release: CoreRelease | None, detail: str) -> None:
        self.counts[reason] += 1
        what = f"core v{release.version} release #{release.sequence}" if release is not None else "a core release"
        log.warning("refused %s: %s", what, detail)

    def admit(self, release: CoreRelease) -> bool:
        """True when ``release`` is the hive's and newer than every release admitted; otherwise counts why not."""
        try:
            keys = self._keys.get()
        except ReleaseKeyError as err:
            self.refuse(NO_KEY, release, str(err))
            return False
        if keys is None:
            self.refuse(NO_KEY, release, f"no hive public key is pinned yet ({self._keys.source} does not exist)")
            return False
        if release.signature is None or release.sequence is None:
            self.refuse(UNSIGNED, release, "it carries no signature or no sequence number")
            return False
        if not verify_release(release, keys):
            self.refuse(BAD_SIGNATURE, release, f"its signature does not verify with {self._keys.source}")
            return False
        if release.sequence == self._highest and release.signature == self._highest_signature:
            return False  # the very release already admitted, delivered again: nothing to refuse or to run
        if release.sequence <= self._highest:
            self.refuse(REPLAYED, release, f"release #{self._highest} was already admitted")
            return False
        self._highest, self._highest_signature = release.sequence, release.signature
        self._record()
        return True

    def _record(self) -> None:
        marks = (max(self._floor, self._highest), max(self._taken_floor, self._taken))
        if self._path is None or marks == self._persisted:  # both only ever go up
            return
        try:
            durable.write_text(self._path, json.dumps({"admitted": marks[0], "taken": marks[1]}) + "\n")
            self._persisted = marks
        except OSError as err:
            # The release is genuine, so it is admitted; only the protection across a restart is weaker.
            log.error("could not record release #%d in %s: %s", marks[0], self._path, err)
