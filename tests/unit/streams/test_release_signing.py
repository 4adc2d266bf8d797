"""Ed25519 release signatures: what verifies, what does not, and which key texts are read."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from streams.codec import decode, encode
from streams.events import CoreRelease
from streams.release_signing import (
    ReleaseKeyError,
    fingerprint,
    generate_private_key,
    load_private_key,
    parse_public_keys,
    private_key_pem,
    public_key_pem,
    sign_release,
    verify_release,
)


def _release(**fields: object) -> CoreRelease:
    return CoreRelease(version=3, model_uri="file:///cores/v3", sha256="a" * 64, sequence=7, **fields)  # type: ignore[arg-type]


def test_a_signed_release_verifies_after_the_wire_and_any_change_breaks_it() -> None:
    key = generate_private_key()
    keys = (key.public_key(),)
    release = sign_release(_release(gate={"add": 0.5}, targets=["agent-1"]), key)
    assert release.signature is not None and len(release.signature) == 128
    assert verify_release(decode(encode(release), CoreRelease, 1 << 20), keys)
    for change in (
        {"model_uri": "file:///evil"},
        {"sha256": "b" * 64},
        {"version": 4},
        {"sequence": 8},
        {"targets": None},
        {"targets": ["agent-1", "agent-2"]},
        {"gate": {"add": 0.9}},
        {"round_id": "r9"},
    ):
        assert not verify_release(release.model_copy(update=change), keys), change
    # Another key's signature, an unsigned release, and signatures that are not 64 bytes of hex.
    assert not verify_release(sign_release(_release(), generate_private_key()), keys)
    assert not verify_release(_release(), keys)
    for bad in ("zz" * 64, "ab" * 63, "ab" * 65, "", "é" * 128):
        assert not verify_release(release.model_copy(update={"signature": bad}), keys)
    # A release without a sequence number does not verify, and cannot be signed.
    assert not verify_release(release.model_copy(update={"sequence": None}), keys)
    with pytest.raises(ValueError, match="sequence"):
        sign_release(_release().model_copy(update={"sequence": None}), key)


def test_any_pinned_key_verifies_during_a_rotation() -> None:
    old, new = generate_private_key(), generate_private_key()
    text = public_key_pem(old.public_key()).decode() + "# the new key\n" + public_key_pem(new.public_key()).decode()
    keys = parse_public_keys(text)
    assert [fingerprint(k) for k in keys] == [fingerprint(old.public_key()), fingerprint(new.public_key())]
    assert verify_release(sign_release(_release(), old), keys) and verify_release(sign_release(_release(), new), keys)


def test_public_keys_are_read_as_pem_or_raw_hex_and_nothing_else() -> None:
    key = generate_private_key().public_key()
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
    assert fingerprint(parse_public_keys(f"\n# pinned\n{raw}\n")[0]) == fingerprint(key)
    with pytest.raises(ReleaseKeyError, match="no public key"):
        parse_public_keys("# nothing here\n\n")
    with pytest.raises(ReleaseKeyError, match="line 2"):
        parse_public_keys(f"{raw}\n{raw[:-2]}\n")  # a truncated paste is an error, not one key fewer
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = other.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    with pytest.raises(ReleaseKeyError, match="must be Ed25519"):
        parse_public_keys(pem)
    with pytest.raises(ReleaseKeyError, match="not a public key"):
        parse_public_keys("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")


def test_private_keys_round_trip_and_other_kinds_are_refused() -> None:
    key = generate_private_key()
    assert fingerprint(load_private_key(private_key_pem(key)).public_key()) == fingerprint(key.public_key())
    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ReleaseKeyError, match="must be Ed25519"):
        load_private_key(other)
    with pytest.raises(ReleaseKeyError, match="not an unencrypted PEM"):
        load_private_key(b"garbage")
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    with pytest.raises(ReleaseKeyError, match="not an unencrypted PEM"):
        load_private_key(encrypted)
