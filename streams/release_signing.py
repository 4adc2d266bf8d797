"""Ed25519 signatures over core releases: the hive signs with its private key, agents verify with the public
keys they pin.

The learnings' HMAC (``streams.signing``) shares one secret between an agent and the hive. A release must be
checkable by every agent without giving any of them the power to make one, so it is signed with a key pair.
The signed bytes are the release's canonical JSON (``streams.signing.canonical_bytes``, RFC 8785), the same
bytes a learning's HMAC covers, so a signer in another language can match them.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from streams.events import CoreRelease
from streams.signing import canonical_bytes

_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z ]+)-----.*?-----END \1-----", re.DOTALL)
_RAW_HEX = re.compile(r"^[0-9a-fA-F]{64}$")
SIGNATURE_HEX_CHARS = 128  # an Ed25519 signature is 64 bytes


class ReleaseKeyError(ValueError):
    """A release key that cannot be used: not Ed25519, malformed, or absent from its text."""


def generate_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    """The key as unencrypted PKCS#8 PEM: the file a secret store mounts, or ``openssl genpkey -algorithm
    ed25519`` writes."""
    encoding, layout = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
    return key.private_bytes(encoding, layout, serialization.NoEncryption())


def public_key_pem(key: Ed25519PublicKey) -> bytes:
    """The public key as SubjectPublicKeyInfo PEM (``openssl pkey -pubout`` writes the same)."""
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def fingerprint(key: Ed25519PublicKey) -> str:
    """A short name for a public key, to print and compare: sha256 of its 32 raw bytes, first 16 hex digits."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_private_key(data: bytes) -> Ed25519PrivateKey:
    """An Ed25519 private key from PEM (PKCS#8, unencrypted); ReleaseKeyError for anything else."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as err:
        raise ReleaseKeyError(f"not an unencrypted PEM private key: {err}") from err
    if not isinstance(key, Ed25519PrivateKey):
        raise ReleaseKeyError(f"a release key must be Ed25519, not {type(key).__name__}")
    return key


def parse_public_keys(text: str) -> tuple[Ed25519PublicKey, ...]:
    """Every public key in ``text``: PEM blocks (``PUBLIC KEY``), and lines of 64 hex digits (the raw 32 bytes).

    Several keys serve a rotation: a release signed by any of them verifies. Blank lines and ``#`` comments
    are skipped; anything else is an error, so that a truncated paste is not taken for fewer keys.
    Raises ReleaseKeyError when a block or line is not an Ed25519 public key, or when there is none.
    """
    keys: list[Ed25519PublicKey] = []
    for match in _PEM_BLOCK.finditer(text):
        try:
            key = serialization.load_pem_public_key(match.group(0).encode("ascii"))
        except (ValueError, UnicodeEncodeError) as err:
            raise ReleaseKeyError(f"a PEM block is not a public key: {err}") from err
        if not isinstance(key, Ed25519PublicKey):
            raise ReleaseKeyError(f"a release key must be Ed25519, not {type(key).__name__}")
        keys.append(key)
    for number, line in enumerate(_PEM_BLOCK.sub("", text).splitlines(), start=1):
        value = line.strip()
        if not value or value.startswith("#"):
            continue
        if not _RAW_HEX.match(value):
            raise ReleaseKeyError(f"line {number} is neither a PEM public key nor 64 hex digits")
        keys.append(Ed25519PublicKey.from_public_bytes(bytes.fromhex(value)))
    if not keys:
        raise ReleaseKeyError("no public key found")
    return tuple(keys)


def read_public_keys(path: Path) -> tuple[Ed25519PublicKey, ...]:
    """The public keys in a file (``parse_public_keys``). Raises OSError, or ReleaseKeyError naming the file."""
    try:
        return parse_public_keys(path.read_text(encoding="utf-8"))
    except (ReleaseKeyError, UnicodeDecodeError) as err:
        raise ReleaseKeyError(f"{path}: {err}") from err


def sign_release(release: CoreRelease, key: Ed25519PrivateKey) -> CoreRelease:
    """A copy of ``release`` with its ``signature`` (hex) over every other field, sequence included.

    A release without a sequence number cannot be signed: without one, an old signed release could be sent
    again and agents could not tell.
    """
    if release.sequence is None:
        raise ValueError("a release needs a sequence number before it is signed")
    signature = key.sign(canonical_bytes(release)).hex()
    return release.model_copy(update={"signature": signature})


def verify_release(release: CoreRelease, keys: tuple[Ed25519PublicKey, ...]) -> bool:
    """True when one of ``keys`` signed exactly this release: any field changed after signing fails."""
    signature = release.signature
    if signature is None or len(signature) != SIGNATURE_HEX_CHARS or release.sequence is None:
        return False
    try:
        raw = bytes.fromhex(signature)
    except ValueError:
        return False
    message = canonical_bytes(release)
    for key in keys:
        try:
            key.verify(raw, message)
        except InvalidSignature:
            continue
        return True
    return False
