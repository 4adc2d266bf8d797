"""The hive's release signing key: the file ``HIVE_RELEASE_KEY_FILE`` names, or one made once under
``HIVE_HOME/keys``; its public half is written beside the hive's state for agents to pin."""

from __future__ import annotations

import logging
import os
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from streams import durable
from streams.release_signing import (
    ReleaseKeyError,
    fingerprint,
    generate_private_key,
    load_private_key,
    private_key_pem,
    public_key_pem,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from hive.config import HiveSettings

log = logging.getLogger(__name__)


def release_key(settings: HiveSettings) -> Ed25519PrivateKey:
    """The key every release is signed with, and its public key written to ``settings.release_public_key_path``.

    A configured ``release_key_file`` must exist: a hive that made itself a new key would be refused by every
    agent, so that is an error, never a silent fallback. The default file is made on first use (mode 0600),
    once even when two processes (``hive serve`` and a ``hive core promote``) race to make it.
    Raises ReleaseKeyError for a key that is missing, unreadable or not Ed25519.
    """
    path = settings.release_key_path
    if settings.release_key_file is None and not path.exists():
        _create(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ReleaseKeyError(f"release key {path} cannot be read (HIVE_RELEASE_KEY_FILE): {err}") from err
    try:
        key = load_private_key(data)
    except ReleaseKeyError as err:
        raise ReleaseKeyError(f"release key {path}: {err}") from err
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        # Refusing would break the usual secret mounts (Kubernetes mounts secrets 0644 by default): say it.
        log.warning("release key %s is readable by other users; anyone who can read it can release cores", path)
    _publish_public_key(settings, key)
    return key


def _create(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(private_key_pem(generate_private_key()))
            f.flush()
            os.fsync(f.fileno())
        # link() fails when the name exists: the first process to make a key wins, and the other loads it.
        try:
            os.link(tmp, path)
        except FileExistsError:
            log.info("another process made the release key %s first; using it", path)
        else:
            durable.fsync_dir(path.parent)
            log.info("made a release signing key %s", path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _publish_public_key(settings: HiveSettings, key: Ed25519PrivateKey) -> None:
    public = public_key_pem(key.public_key())
    path = settings.release_public_key_path
    if path.is_file() and path.read_bytes() == public:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    durable.write_bytes(path, public)
    path.chmod(0o644)
    log.info("release public key %s (fingerprint %s): agents pin it", path, fingerprint(key.public_key()))
