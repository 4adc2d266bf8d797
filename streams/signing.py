"""HMAC-SHA256 signatures over an event's canonical JSON, and the key ring that holds each agent's keys."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import re
import threading
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

from streams.events import Event

# The same shape as events.AgentId: an agent id is also a file name, so nothing else may reach the disk lookup.
_AGENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HEX = re.compile(r"^(?:[0-9a-fA-F]{2})+$")
KEY_SUFFIX = ".key"
# HMAC-SHA256 with a key this short can be guessed; 32 random bytes (`openssl rand -hex 32`) is the advice.
MIN_KEY_BYTES = 16
# Names what a request signature covers, so that it can never be mistaken for an event's.
REQUEST_SCHEME = "hive-request-v1"

E = TypeVar("E", bound=Event)


class KeyRingError(ValueError):
    """A key that is configured but cannot be used: malformed, empty, too short, or its directory is missing."""


def canonical_bytes(event: Event) -> bytes:
    """The event as canonical JSON, without its signature: the bytes that are signed.

    The event's JSON dump as the hive reads it (defaults filled in, uuids lowercase, times ISO 8601),
    with ``signature`` and every null field left out, so that a reader on a newer minor schema (which
    only adds optional fields) computes the same bytes. Then the JSON Canonicalization Scheme (RFC 8785)
    way: keys sorted, no whitespace, strings as UTF-8 with only the escapes JSON requires, and numbers
    as ECMAScript writes them (``1.0`` -> ``1``, ``1e-7``), so that a JavaScript signer can match it.
    Any event with a ``signature`` field can be signed: a ``Learning``, a ``Heartbeat``, a ``CoreRelease``.
    """
    if "signature" not in type(event).model_fields:
        raise TypeError(f"a {type(event).__name__} has no signature field")
    data = event.model_dump(mode="json", exclude={"signature"}, exclude_none=True)
    return _canonical(data).encode("utf-8")


def _canonical(value: object) -> str:
    if isinstance(value, dict):
        # RFC 8785 orders keys by UTF-16 code units; for the ASCII field names of every event that is the
        # code point order, but a heartbeat's counters and evaluation are keyed by any string.
        items = sorted(value.items(), key=lambda item: item[0].encode("utf-16-be"))
        return "{" + ",".join(f"{_string(k)}:{_canonical(v)}" for k, v in items if v is not None) + "}"
    if isinstance(value, list):
        # Flat paths for the teacher signal's rows of ids and log-probabilities, most of a big learning: a list
        # of numbers, or of lists of numbers, all ints or all floats, goes to the json module's C encoder whole.
        rows = value if value and all(type(v) is list for v in value) else [value]
        if all(type(v) is int for row in rows for v in row):
            return json.dumps(value, separators=(",", ":"))
        if all(type(v) is float for row in rows for v in row):
            return _floats(value, rows)
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


# A float that repr() writes as "x.0" where ECMAScript writes "x", inside a JSON array.
_INTEGRAL = re.compile(r"\.0(?=[,\]])")


def _floats(value: list, rows: list[list[float]]) -> str:
    """A list of floats (or of lists of floats: ``rows``) as ``es_number`` writes each, at the speed of the json
    module's C encoder.

    json writes each float as repr() does. Without an exponent, repr() is positional exactly where ECMAScript
    is (1e-4 <= |x| < 1e16) with the same shortest digits, so the two differ only in "x.0"; zeros (repr writes
    -0.0) and exponents take the exact path. A teacher signal's log-probabilities are most of a learning's numbers.
    """
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except ValueError:
        text = "e"  # NaN or infinity: es_number says which
    if "e" in text or any(0.0 in row for row in rows):
        if rows is value:
            return "[" + ",".join("[" + ",".join(map(es_number, row)) + "]" for row in rows) + "]"
        return "[" + ",".join(map(es_number, value)) + "]"
    return _INTEGRAL.sub("", text)


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


def sign(event: Event, key: bytes) -> str:
    """The hex HMAC-SHA256 of ``canonical_bytes(event)`` under ``key``."""
    if not key:
        raise ValueError("a signing key must not be empty")
    return hmac.new(key, canonical_bytes(event), hashlib.sha256).hexdigest()


def verify(event: Event, key: bytes) -> bool:
    """True when the event carries a signature that ``key`` made over its content."""
    signature = getattr(event, "signature", None)
    if signature is None or not key:
        return False
    # compare_digest needs ASCII str on both sides; a non-ASCII signature cannot match a hex digest anyway.
    if not signature.isascii():
        return False
    return hmac.compare_digest(signature.lower(), sign(event, key))


def verify_any(event: Event, keys: Iterable[bytes]) -> bool:
    """True when any of ``keys`` made the event's signature: during a rotation an agent has an old and a new key."""
    return any(verify(event, key) for key in keys)


def signed(event: E, key: bytes) -> E:
    """A copy of ``event`` whose ``signature`` is set (any previous one is replaced)."""
    return event.model_copy(update={"signature": sign(event, key)})


def request_signature(key: bytes, method: str, path: str, body_sha256: str, timestamp: str) -> str:
    """The hex HMAC-SHA256, under an agent's key, of one HTTP request: its method, path, body's sha256 and
    time. An agent's proof that it sends this body to this path now (an adapter upload to the hive)."""
    if not key:
        raise ValueError("a signing key must not be empty")
    message = "\n".join((REQUEST_SCHEME, method.upper(), path, body_sha256, timestamp)).encode("utf-8")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def verify_request(
    keys: Iterable[bytes], signature: str, method: str, path: str, body_sha256: str, timestamp: str
) -> bool:
    """True when one of ``keys`` made ``signature`` over this request."""
    if not signature.isascii():
        return False
    return any(
        hmac.compare_digest(signature.lower(), request_signature(key, method, path, body_sha256, timestamp))
        for key in keys
    )


def check_key(key: bytes) -> bytes:
    """``key`` itself, or ValueError when it is empty or shorter than ``MIN_KEY_BYTES``."""
    if not key:
        raise ValueError("a signing key must not be empty")
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(
            f"a signing key must be at least {MIN_KEY_BYTES} bytes, this one has {len(key)} "
            "(make one with `openssl rand -hex 32`)"
        )
    return key


def parse_key(text: str) -> bytes:
    """A key written as text: ``hex:…`` or ``utf8:…`` explicitly, otherwise hex when it is hex, else UTF-8.

    Raises ValueError for a key that is malformed, empty or shorter than ``MIN_KEY_BYTES``.
    """
    value = text.strip()
    if value.startswith("hex:"):
        key = bytes.fromhex(value[4:])
    elif value.startswith("utf8:"):
        key = value[5:].encode("utf-8")
    elif _HEX.match(value):
        key = bytes.fromhex(value)
    else:
        key = value.encode("utf-8")
    return check_key(key)


def parse_keys(text: str) -> tuple[bytes, ...]:
    """Keys written one per line (as ``parse_key`` reads each), skipping blank lines and ``#`` comments.

    Several keys serve a rotation: the hive accepts any of them, and an agent signs with the first.
    Raises ValueError when there is none, or when any is unusable (naming its line).
    """
    lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip() and line.strip()[0] != "#"]
    keys = []
    for number, line in lines:
        try:
            keys.append(parse_key(line))
        except ValueError as exc:
            raise ValueError(f"line {number}: {exc}" if len(lines) > 1 else str(exc)) from exc
    if not keys:
        raise ValueError("a signing key must not be empty")
    return tuple(keys)


def read_key_file(path: Path) -> tuple[bytes, ...]:
    """The keys in a key file: text as ``parse_keys`` reads it, or (a file that is not UTF-8) one raw key.

    Raises OSError when the file cannot be read, and ValueError when it holds no usable key.
    """
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return (check_key(raw),)
    return parse_keys(text)


# (inode, size, mtime, ctime) of a key file: a different value means the file was replaced or rewritten.
_Stamp = tuple[int, int, int, int]


class KeyRing:
    """Each agent's signing keys: given inline, or as a file ``<key_dir>/<agent_id>.key``.

    An inline key wins over a file. A key file holds one key per line (several during a rotation; any of
    them verifies), as text with the same rules as ``parse_key``; a file that is not UTF-8 holds one raw
    key. Files are looked at on every ``get``: a key dropped into the directory, a changed key and a
    deleted key file all take effect without a restart (a deleted file leaves the agent without a key).
    Safe to share between threads.
    """

    def __init__(self, keys: dict[str, tuple[bytes, ...]] | None = None, key_dir: Path | None = None) -> None:
        self._keys = dict(keys or {})
        self._key_dir = key_dir
        self._from_files: dict[str, tuple[_Stamp, tuple[bytes, ...]]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, keys: dict[str, str], key_dir: Path | None) -> KeyRing:
        """Parses inline keys now, so that a malformed one is refused at startup, naming its agent."""
        parsed: dict[str, tuple[bytes, ...]] = {}
        for agent_id, text in keys.items():
            try:
                parsed[agent_id] = parse_keys(text)
            except ValueError as exc:
                raise KeyRingError(f"signing key for agent {agent_id!r} is invalid: {exc}") from exc
        if key_dir is not None and not key_dir.is_dir():
            raise KeyRingError(f"agent key directory {key_dir} does not exist or is not a directory")
        return cls(parsed, key_dir)

    def get(self, agent_id: str) -> tuple[bytes, ...] | None:
        """The agent's keys, or None when it has none; raises KeyRingError for a key file that is unusable."""
        if agent_id in self._keys:
            return self._keys[agent_id]
        if self._key_dir is None or not _AGENT_ID.match(agent_id):
            return None
        path = self._key_dir / f"{agent_id}{KEY_SUFFIX}"
        try:
            info = os.stat(path)
        except FileNotFoundError:
            with self._lock:
                self._from_files.pop(agent_id, None)  # deleted: the agent no longer has a key
            return None
        except OSError as exc:
            raise KeyRingError(f"key file {path} cannot be read: {exc}") from exc
        stamp = (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        with self._lock:
            cached = self._from_files.get(agent_id)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            keys = read_key_file(path)
        except FileNotFoundError:
            with self._lock:
                self._from_files.pop(agent_id, None)  # deleted between the stat and the read
            return None
        except OSError as exc:
            raise KeyRingError(f"key file {path} cannot be read: {exc}") from exc
        except ValueError as exc:
            raise KeyRingError(f"key file {path} is invalid: {exc}") from exc
        with self._lock:
            self._from_files[agent_id] = (stamp, keys)
        return keys

    def __bool__(self) -> bool:
        """True when any key can be found: inline, or a directory to look in."""
        return bool(self._keys) or self._key_dir is not None
