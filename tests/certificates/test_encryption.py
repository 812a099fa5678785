"""shared.encryption: AES-GCM envelopes, key ids and rotation, and clear errors for a missing or wrong key."""

from __future__ import annotations

import base64

import pytest

from shared.encryption import (
    DecryptionFailed,
    InvalidKey,
    KeyNotConfigured,
    Keyring,
    UnknownKeyId,
    new_key_b64,
)

pytestmark = pytest.mark.certificates

SECRET = b"-----BEGIN PRIVATE KEY-----\nMIGH...\n-----END PRIVATE KEY-----\n"


def test_round_trip_hides_the_plaintext() -> None:
    ring = Keyring.from_keys_b64(new_key_b64())
    sealed = ring.encrypt(SECRET, context="certificate:a")
    assert sealed.startswith(f"mhp-enc:v1:{ring.current_id}:")
    assert b"PRIVATE KEY" not in base64.urlsafe_b64decode(sealed.split(":")[3])
    assert "PRIVATE" not in sealed
    assert ring.decrypt(sealed, context="certificate:a") == SECRET
    assert ring.encrypt(SECRET, context="certificate:a") != sealed  # fresh nonce every time


def test_ciphertext_is_bound_to_its_context() -> None:
    ring = Keyring.from_keys_b64(new_key_b64())
    sealed = ring.encrypt(SECRET, context="certificate:a")
    with pytest.raises(DecryptionFailed):
        ring.decrypt(sealed, context="certificate:b")


def test_tampering_is_detected() -> None:
    ring = Keyring.from_keys_b64(new_key_b64())
    prefix, body = ring.encrypt(SECRET, context="c").rsplit(":", 1)
    raw = bytearray(base64.urlsafe_b64decode(body))
    raw[-1] ^= 1
    with pytest.raises(DecryptionFailed):
        ring.decrypt(f"{prefix}:{base64.urlsafe_b64encode(bytes(raw)).decode()}", context="c")
    for broken in ("", "plain text", "mhp-enc:v9:abc:def", f"{prefix}:!!!", f"{prefix}:AAAA"):
        with pytest.raises(DecryptionFailed):
            ring.decrypt(broken, context="c")


def test_missing_and_malformed_keys_give_clear_errors() -> None:
    with pytest.raises(KeyNotConfigured, match="KEY_ENCRYPTION_KEY_B64 is not set"):
        Keyring.from_keys_b64("")
    with pytest.raises(InvalidKey, match="32 bytes"):
        Keyring.from_keys_b64(base64.b64encode(b"short").decode())
    with pytest.raises(InvalidKey, match="base64"):
        Keyring.from_keys_b64("not base64 at all!")
    with pytest.raises(InvalidKey, match="PREVIOUS"):
        Keyring.from_keys_b64(new_key_b64(), "bad!")


def test_rotation_old_key_still_decrypts_and_is_flagged_for_rewrap() -> None:
    old_b64, new_b64 = new_key_b64(), new_key_b64()
    sealed_with_old = Keyring.from_keys_b64(old_b64).encrypt(SECRET, context="k")

    without_old = Keyring.from_keys_b64(new_b64)
    with pytest.raises(UnknownKeyId, match="KEY_ENCRYPTION_PREVIOUS_KEYS_B64"):
        without_old.decrypt(sealed_with_old, context="k")

    rotated = Keyring.from_keys_b64(new_b64, f" {old_b64} ,")
    assert rotated.decrypt(sealed_with_old, context="k") == SECRET
    assert rotated.needs_rewrap(sealed_with_old)
    rewrapped = rotated.encrypt(SECRET, context="k")
    assert not rotated.needs_rewrap(rewrapped)
    assert Keyring.from_keys_b64(new_b64).decrypt(rewrapped, context="k") == SECRET
