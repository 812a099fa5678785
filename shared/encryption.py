"""Envelope encryption of secrets at rest (TLS private keys, ACME account keys) with AES-256-GCM.

The key-encryption key (KEK) comes from the environment: KEY_ENCRYPTION_KEY_B64 (base64 of 32 bytes) encrypts,
and KEY_ENCRYPTION_PREVIOUS_KEYS_B64 (comma-separated, optional) only decrypts, so a KEK can be rotated by
moving the old key there and re-saving. Stored format, one ASCII line:

    mhp-enc:v1:<key id>:<base64url(nonce 12 bytes || ciphertext+tag)>

`key id` is the first 16 hex digits of SHA-256 over the key, so the reader knows which key to use without
trying them all. The caller's `context` string (e.g. "certificate:<name>") is bound in as associated data, so
a ciphertext copied onto another object does not decrypt there.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.config import Settings

PREFIX = "mhp-enc"
VERSION = "v1"
KEY_BYTES = 32
NONCE_BYTES = 12


class EncryptionError(Exception):
    """Base class: a secret could not be encrypted or decrypted."""


class KeyNotConfigured(EncryptionError):
    """KEY_ENCRYPTION_KEY_B64 is empty: nothing secret can be stored or read."""


class InvalidKey(EncryptionError):
    """A configured key is not base64 of exactly 32 bytes."""


class UnknownKeyId(EncryptionError):
    """The ciphertext was made with a key that is not configured (rotated away, or another deployment)."""


class DecryptionFailed(EncryptionError):
    """The ciphertext is malformed, tampered with, or bound to another context."""


def _decode_key(text: str, name: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidKey(f"{name} is not valid base64") from exc
    if len(raw) != KEY_BYTES:
        raise InvalidKey(f"{name} must decode to {KEY_BYTES} bytes, got {len(raw)}")
    return raw


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:16]


def new_key_b64() -> str:
    """A fresh KEK, as KEY_ENCRYPTION_KEY_B64 expects it."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode("ascii")


@dataclass(frozen=True, slots=True)
class Keyring:
    """The current KEK (encrypts) and every key that may decrypt, by key id."""

    current_id: str
    keys: dict[str, bytes]

    @classmethod
    def from_keys_b64(cls, current_b64: str, previous_b64: str = "") -> Keyring:
        if not current_b64.strip():
            raise KeyNotConfigured(
                "KEY_ENCRYPTION_KEY_B64 is not set; generate one with "
                "`python -c 'from shared.encryption import new_key_b64; print(new_key_b64())'`"
            )
        current = _decode_key(current_b64, "KEY_ENCRYPTION_KEY_B64")
        keys = {key_id(current): current}
        for index, part in enumerate(p for p in previous_b64.split(",") if p.strip()):
            old = _decode_key(part, f"KEY_ENCRYPTION_PREVIOUS_KEYS_B64[{index}]")
            keys.setdefault(key_id(old), old)
        return cls(current_id=key_id(current), keys=keys)

    @classmethod
    def from_settings(cls, settings: Settings) -> Keyring:
        return cls.from_keys_b64(settings.KEY_ENCRYPTION_KEY_B64, settings.KEY_ENCRYPTION_PREVIOUS_KEYS_B64)

    def encrypt(self, plaintext: bytes, *, context: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(self.keys[self.current_id]).encrypt(nonce, plaintext, _aad(context))
        body = base64.urlsafe_b64encode(nonce + sealed).decode("ascii")
        return f"{PREFIX}:{VERSION}:{self.current_id}:{body}"

    def decrypt(self, envelope: str, *, context: str) -> bytes:
        parts = envelope.split(":")
        if len(parts) != 4 or parts[0] != PREFIX:
            raise DecryptionFailed("not an mhp-enc envelope")
        _prefix, version, kid, body = parts
        if version != VERSION:
            raise DecryptionFailed(f"unsupported envelope version {version!r}")
        key = self.keys.get(kid)
        if key is None:
            raise UnknownKeyId(
                f"secret was encrypted with key id {kid}, which is not configured "
                "(add the old key to KEY_ENCRYPTION_PREVIOUS_KEYS_B64)"
            )
        try:
            raw = base64.urlsafe_b64decode(body.encode("ascii"))
        except (binascii.Error, ValueError) as exc:
            raise DecryptionFailed("envelope body is not base64url") from exc
        if len(raw) <= NONCE_BYTES:
            raise DecryptionFailed("envelope is truncated")
        try:
            return AESGCM(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], _aad(context))
        except InvalidTag as exc:
            raise DecryptionFailed(
                f"secret for {context!r} failed authentication (tampered or moved)"
            ) from exc

    def needs_rewrap(self, envelope: str) -> bool:
        """True when the envelope was made with a previous key (re-encrypt it with the current one)."""
        parts = envelope.split(":")
        return len(parts) == 4 and parts[2] != self.current_id


def certificate_key_context(cert_name: str) -> str:
    """Context of a certificate's private key (control plane encrypts, data plane decrypts)."""
    return f"certificate:{cert_name}"


FALLBACK_KEY_CONTEXT = "fallback-certificate"


def acme_account_key_context(account_id: str) -> str:
    return f"acme-account:{account_id}"


def _aad(context: str) -> bytes:
    return f"{PREFIX}:{VERSION}:{context}".encode()
