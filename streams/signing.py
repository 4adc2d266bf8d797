"""HMAC-SHA256 signatures over a learning's canonical JSON, and the key ring that holds each agent's key."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from decimal import Decimal
from pathlib import Path

from streams.events import Learning

# The same shape as events.AgentId: an agent id is also a file name, so nothing else may reach the disk lookup.
_AGENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HEX = re.compile(r"^(?:[0-9a-fA-F]{2})+$")
KEY_SUFFIX = ".key"


class KeyRingError(ValueError):
    """A key that is configured but cannot be used: malformed, empty, or its directory is missing."""


def canonical_bytes(learning: Learning) -> bytes:
    """The learning as canonical JSON, without its signature: the bytes that are signed.

    The learning's JSON dump as the hive reads it (defaults filled in, uuids lowercase, times ISO 8601),
    with ``signature`` and every null field left out, so that a reader on a newer minor schema (which
    only adds optional fields) computes the same bytes. Then the JSON Canonicalization Scheme (RFC 8785)
    way: keys sorted, no whitespace, strings as UTF-8 with only the escapes JSON requires, and numbers
    as ECMAScript writes them (``1.0`` -> ``1``, ``1e-7``), so that a JavaScript signer can match it.
    """
    data = learning.model_dump(mode="json", exclude={"signature"}, exclude_none=True)
    return _canonical(data).encode("utf-8")


def _canonical(value: object) -> str:
    if isinstance(value, dict):
        # Keys of a Learning are ASCII, where RFC 8785's UTF-16 order and code point order agree.
        items = sorted(value.items())
        return "{" + ",".join(f"{_string(k)}:{_canonical(v)}" for k, v in items if v is not None) + "}"
    if isinstance(value, list):
        # Flat paths for the teacher signal's rows of ids and log-probabilities, most of a big learning.
        if all(type(v) is int for v in value):
            return "[" + ",".join(map(str, value)) + "]"
        if all(type(v) is float for v in value):
            return "[" + ",".join(map(es_number, value)) + "]"
        return "[" + ",".join(_canonical(v) for v in value) + "]"
    if isinstance(value, str):
        return _string(value)
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return es_number(value)
    raise TypeError(f"cannot canonicalize a {type(value).__name__}")


def _string(text: str) -> str:
    # json.dumps escapes exactly what RFC 8785 does: the quote, the backslash and control characters.
    return json.dumps(text, ensure_ascii=False)


def es_number(value: float) -> str:
    """``value`` as ECMAScript's Number.prototype.toString writes it (RFC 8785, section 3.2.2.3)."""
    if not math.isfinite(value):
        raise ValueError(f"{value} has no JSON form")
    if value == 0:
        return "0"  # -0 too
    text = repr(value)
    if "e" not in text:
        # Python writes positional for 1e-4 <= |x| < 1e16, where ECMAScript does too: only "x.0" differs.
        return text[:-2] if text.endswith(".0") else text
    sign = "-" if value < 0 else ""
    # repr() gives the shortest digits that round-trip, as ECMAScript does; only the layout differs.
    digits_tuple, exponent = Decimal(repr(abs(value))).normalize().as_tuple()[1:]
    assert isinstance(exponent, int)
    digits = "".join(map(str, digits_tuple))
    k, n = len(digits), len(digits) + exponent  # value = 0.<digits> * 10**n
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * -n + digits
    mantissa = digits[0] + ("." + digits[1:] if k > 1 else "")
    return f"{sign}{mantissa}e{'+' if n - 1 > 0 else '-'}{abs(n - 1)}"


def sign(learning: Learning, key: bytes) -> str:
    """The hex HMAC-SHA256 of ``canonical_bytes(learning)`` under ``key``."""
    if not key:
        raise ValueError("a signing key must not be empty")
    return hmac.new(key, canonical_bytes(learning), hashlib.sha256).hexdigest()


def verify(learning: Learning, key: bytes) -> bool:
    """True when the learning carries a signature that ``key`` made over its content."""
    if learning.signature is None or not key:
        return False
    # compare_digest needs ASCII str on both sides; a non-ASCII signature cannot match a hex digest anyway.
    if not learning.signature.isascii():
        return False
    return hmac.compare_digest(learning.signature.lower(), sign(learning, key))


def signed(learning: Learning, key: bytes) -> Learning:
    """A copy of ``learning`` whose ``signature`` is set (any previous one is replaced)."""
    return learning.model_copy(update={"signature": sign(learning, key)})


def parse_key(text: str) -> bytes:
    """A key written as text: ``hex:…`` or ``utf8:…`` explicitly, otherwise hex when it is hex, else UTF-8."""
    value = text.strip()
    if value.startswith("hex:"):
        key = bytes.fromhex(value[4:])
    elif value.startswith("utf8:"):
        key = value[5:].encode("utf-8")
    elif _HEX.match(value):
        key = bytes.fromhex(value)
    else:
        key = value.encode("utf-8")
    if not key:
        raise ValueError("a signing key must not be empty")
    return key


class KeyRing:
    """Each agent's signing key: given inline, or as a file ``<key_dir>/<agent_id>.key``.

    An inline key wins over a file. A key file holds the key as text (the same rules as ``parse_key``);
    a file that is not UTF-8 holds the raw key bytes. Files are read when first asked for, so a key
    dropped into the directory later is found without a restart.
    """

    def __init__(self, keys: dict[str, bytes] | None = None, key_dir: Path | None = None) -> None:
        self._keys = dict(keys or {})
        self._key_dir = key_dir
        self._from_files: dict[str, bytes] = {}

    @classmethod
    def from_config(cls, keys: dict[str, str], key_dir: Path | None) -> KeyRing:
        """Parses inline keys now, so that a malformed one is refused at startup, naming its agent."""
        parsed: dict[str, bytes] = {}
        for agent_id, text in keys.items():
            try:
                parsed[agent_id] = parse_key(text)
            except ValueError as exc:
                raise KeyRingError(f"signing key for agent {agent_id!r} is invalid: {exc}") from exc
        if key_dir is not None and not key_dir.is_dir():
            raise KeyRingError(f"agent key directory {key_dir} does not exist or is not a directory")
        return cls(parsed, key_dir)

    def get(self, agent_id: str) -> bytes | None:
        """The agent's key, or None when it has none; raises KeyRingError for a key file that is unusable."""
        if agent_id in self._keys:
            return self._keys[agent_id]
        if agent_id in self._from_files:
            return self._from_files[agent_id]
        if self._key_dir is None or not _AGENT_ID.match(agent_id):
            return None
        path = self._key_dir / f"{agent_id}{KEY_SUFFIX}"
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            key = parse_key(raw.decode("utf-8"))
        except UnicodeDecodeError:
            key = raw
        except ValueError as exc:
            raise KeyRingError(f"key file {path} is invalid: {exc}") from exc
        if not key:
            raise KeyRingError(f"key file {path} is empty")
        self._from_files[agent_id] = key
        return key

    def __bool__(self) -> bool:
        """True when any key can be found: inline, or a directory to look in."""
        return bool(self._keys) or self._key_dir is not None
