"""Access-token signing keys and the JWKS (RFC 7517), with `kid` = the RFC 7638 JWK thumbprint.

The active key comes from OAUTH_JWT_PRIVATE_KEY_B64 (base64 of a PEM RSA private key) and signs with
RS256. OAUTH_JWT_EXTRA_PUBLIC_KEYS_B64 adds public keys to the JWKS only, so tokens signed by the previous
(or next) key keep verifying while a rotation is under way.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jws, jwt
from jose.exceptions import JOSEError

ALGORITHM = "RS256"


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


def _decode_b64_pem(value: str, setting: str) -> bytes:
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SigningKeyError(f"{setting} is not valid base64") from exc


@dataclass(frozen=True, slots=True)
class SigningKeys:
    private_pem: bytes
    kid: str
    jwks: dict[str, list[dict[str, str]]]
    public_pems: dict[str, bytes]  # kid -> PEM, for verifying our own tokens (introspection)

    @classmethod
    def load(cls, private_key_b64: str, extra_public_keys_b64: str = "") -> SigningKeys:
        if not private_key_b64.strip():
            raise SigningKeyError("OAUTH_JWT_PRIVATE_KEY_B64 is empty: the authorization server cannot sign")
        pem = _decode_b64_pem(private_key_b64, "OAUTH_JWT_PRIVATE_KEY_B64")
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise SigningKeyError("OAUTH_JWT_PRIVATE_KEY_B64 is not an unencrypted PEM private key") from exc
        if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < 2048:
            raise SigningKeyError("OAUTH_JWT_PRIVATE_KEY_B64 must be an RSA key of at least 2048 bits")
        active = public_jwk(key.public_key())
        keys = [active]
        public_pems = {active["kid"]: _public_pem(key.public_key())}
        for index, item in enumerate(part for part in extra_public_keys_b64.split(",") if part.strip()):
            extra_pem = _decode_b64_pem(item, f"OAUTH_JWT_EXTRA_PUBLIC_KEYS_B64[{index}]")
            try:
                extra = serialization.load_pem_public_key(extra_pem)
            except ValueError as exc:
                raise SigningKeyError(
                    f"OAUTH_JWT_EXTRA_PUBLIC_KEYS_B64[{index}] is not a PEM public key"
                ) from exc
            if not isinstance(extra, rsa.RSAPublicKey):
                raise SigningKeyError(f"OAUTH_JWT_EXTRA_PUBLIC_KEYS_B64[{index}] is not an RSA key")
            jwk = public_jwk(extra)
            if jwk["kid"] not in public_pems:
                keys.append(jwk)
                public_pems[jwk["kid"]] = _public_pem(extra)
        return cls(private_pem=pem, kid=active["kid"], jwks={"keys": keys}, public_pems=public_pems)

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
