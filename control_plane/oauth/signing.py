"""Access-token signing keys and the JWKS (RFC 7517), with `kid` = the RFC 7638 JWK thumbprint.

`SigningKeys` is an immutable snapshot: the active RSA key (signs with RS256) and every key whose tokens
still verify. The key ring that holds them (in Redis, encrypted with the KEK, rotated without restarts)
is key_ring.py; this module only knows keys, PEMs and JWTs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jws, jwt
from jose.exceptions import JOSEError

ALGORITHM = "RS256"
RSA_KEY_BITS = 2048


class SigningKeyError(ValueError):
    pass


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def public_jwk(public_key: rsa.RSAPublicKey) -> dict[str, str]:
    numbers = public_key.public_numbers()
    members = {"e": _b64url_uint(numbers.e), "kty": "RSA", "n": _b64url_uint(numbers.n)}
    # RFC 7638: SHA-256 over the required members in lexicographic order, no whitespace.
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode("ascii")
    kid = base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode("ascii")
    return {**members, "kid": kid, "use": "sig", "alg": ALGORITHM}


def new_private_pem() -> bytes:
    """A fresh RSA signing key as unencrypted PKCS#8 PEM (encrypt it before it is stored)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_private_key(pem: bytes, what: str) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"{what} is not an unencrypted PEM private key") from exc
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < RSA_KEY_BITS:
        raise SigningKeyError(f"{what} must be an RSA key of at least {RSA_KEY_BITS} bits")
    return key


def decode_private_key_b64(value: str, setting: str) -> bytes:
    """The PEM inside a base64 setting (OAUTH_JWT_PRIVATE_KEY_B64), checked to be a usable key."""
    try:
        pem = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SigningKeyError(f"{setting} is not valid base64") from exc
    load_private_key(pem, setting)
    return pem


@dataclass(frozen=True, slots=True)
class SigningKeys:
    private_pem: bytes
    kid: str
    jwks: dict[str, list[dict[str, str]]]
    public_pems: dict[str, bytes]  # kid -> PEM, for verifying our own tokens (introspection)

    @classmethod
    def from_pems(cls, active: bytes, verify_only: Sequence[bytes] = ()) -> SigningKeys:
        """`active` signs; tokens of `verify_only` keys (rotated out, not yet retired) still verify."""
        signer = load_private_key(active, "the active signing key")
        jwk = public_jwk(signer.public_key())
        keys = [jwk]
        public_pems = {jwk["kid"]: _public_pem(signer.public_key())}
        for pem in verify_only:
            public = load_private_key(pem, "a signing key").public_key()
            other = public_jwk(public)
            if other["kid"] not in public_pems:
                keys.append(other)
                public_pems[other["kid"]] = _public_pem(public)
        return cls(private_pem=active, kid=jwk["kid"], jwks={"keys": keys}, public_pems=public_pems)

    @classmethod
    def load(cls, private_key_b64: str) -> SigningKeys:
        """One key from base64 of its PEM (how OAUTH_JWT_PRIVATE_KEY_B64 carries it)."""
        return cls.from_pems(decode_private_key_b64(private_key_b64, "OAUTH_JWT_PRIVATE_KEY_B64"))

    def sign(self, claims: dict[str, Any]) -> str:
        token: str = jwt.encode(
            claims,
            self.private_pem.decode("ascii"),
            algorithm=ALGORITHM,
            headers={"kid": self.kid, "typ": "at+jwt"},
        )
        return token

    def verified_claims(self, token: str) -> dict[str, Any] | None:
        """Claims of a token we signed (signature only; the caller checks exp and revocation), or None."""
        try:
            header = jws.get_unverified_header(token)
        except JOSEError:
            return None
        if header.get("alg") != ALGORITHM:
            return None
        pem = self.public_pems.get(str(header.get("kid", "")))
        if pem is None:
            return None
        try:
            payload = jws.verify(token, pem.decode("ascii"), algorithms=[ALGORITHM])
            claims = json.loads(payload)
        except (JOSEError, ValueError):
            return None
        return claims if isinstance(claims, dict) else None


def _public_pem(key: rsa.RSAPublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
