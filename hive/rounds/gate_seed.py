"""The seed a round's gate draws its test tasks with: fixed (``HIVE_GATE__EVAL_SEED``) or secret and per round.

The secret is 32 random bytes in ``HIVE_HOME/gate-secret`` (mode 0600), made on the first round that needs it.
Each round's seed is HMAC-SHA256(secret, round id), so the tasks change every round, the candidate and the
champion are scored on the same ones, a resumed round keeps them (its manifest holds the seed), and nobody
without the hive's disk can tell which test tasks a gate will ask.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from hive.config import HiveSettings
from streams.durable import write_text

SECRET_FILE = "gate-secret"
SECRET_BYTES = 32


class GateSecretError(ValueError):
    """The gate secret exists but cannot be used; the message names the file."""


def round_eval_seed(settings: HiveSettings, round_id: str) -> int:
    if settings.gate.eval_seed is not None:
        return settings.gate.eval_seed
    digest = hmac.new(gate_secret(settings), round_id.encode("utf-8"), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") >> 1  # a non-negative int64, as the manifest and numpy take it


def gate_secret(settings: HiveSettings) -> bytes:
    path = settings.home / SECRET_FILE
    if not path.exists():
        settings.home.mkdir(parents=True, exist_ok=True)
        # write_text makes its temp file with mkstemp (mode 0600) and renames it: never readable by others.
        write_text(path, secrets.token_hex(SECRET_BYTES) + "\n")
    try:
        secret = bytes.fromhex(path.read_text(encoding="ascii").strip())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise GateSecretError(f"{path}: not a usable gate secret ({err}); delete it to make a new one") from err
    if len(secret) < 16:
        raise GateSecretError(f"{path}: {len(secret)} bytes, too short for a secret; delete it to make a new one")
    return secret
