"""A key set remembers the tokens whose signature it verified (data_plane.auth.token_verifier): what it may
and may not skip the second time. Sans-IO: real RS256 tokens from the control plane's signer, no server."""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from control_plane.oauth.signing import SigningKeys
from data_plane.auth.token_verifier import (
    MAX_REMEMBERED_TOKENS,
    Allow,
    Deny,
    KeySet,
    TokenRequirements,
    verify,
)

ISSUER = "https://auth.test"
AUDIENCE = "https://mcp.test"


def _signer() -> SigningKeys:
    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return SigningKeys.load(base64.b64encode(pem).decode())


@pytest.fixture(scope="module")
def signer() -> SigningKeys:
    return _signer()


def _token(signer: SigningKeys, **overrides: Any) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": "github:1", "aud": AUDIENCE, "exp": now + 600, "iat": now}
    claims |= {"jti": f"jti-{time.monotonic_ns()}", "scope": "mcp", "login": "alice"}
    return signer.sign(claims | overrides)


REQUIREMENTS = TokenRequirements(
    issuer=ISSUER,
    audiences=frozenset({AUDIENCE}),
    scopes=("mcp",),
    allowed_users=frozenset({"alice"}),
    allowed_orgs=frozenset(),
)


def test_a_remembered_token_is_still_judged_on_time_revocation_audience_and_allowlist(
    signer: SigningKeys,
) -> None:
    keys = KeySet.from_jwks(signer.jwks)
    token = _token(signer)
    now = time.time()
    first = verify(token, keys, REQUIREMENTS, now=now, revoked=frozenset())
    assert isinstance(first, Allow)
    assert token in keys.verified
    again = verify(token, keys, REQUIREMENTS, now=now, revoked=frozenset())
    assert again == first
    revoked = verify(token, keys, REQUIREMENTS, now=now, revoked=frozenset({first.identity.jti}))
    assert isinstance(revoked, Deny) and "revoked" in revoked.description
    expired = verify(token, keys, REQUIREMENTS, now=now + 3600, revoked=frozenset())
    assert isinstance(expired, Deny) and "expired" in expired.description
    elsewhere = TokenRequirements(
        issuer=ISSUER,
        audiences=frozenset({"https://other.test"}),
        scopes=("mcp",),
        allowed_users=frozenset({"alice"}),
        allowed_orgs=frozenset(),
    )
    assert isinstance(verify(token, keys, elsewhere, now=now, revoked=frozenset()), Deny)
    not_listed = TokenRequirements(
        issuer=ISSUER,
        audiences=frozenset({AUDIENCE}),
        scopes=("mcp",),
        allowed_users=frozenset({"bob"}),
        allowed_orgs=frozenset(),
    )
    denied = verify(token, keys, not_listed, now=now, revoked=frozenset())
    assert isinstance(denied, Deny) and denied.status == 403


def test_only_the_exact_token_is_remembered(signer: SigningKeys) -> None:
    keys = KeySet.from_jwks(signer.jwks)
    token = _token(signer)
    assert isinstance(verify(token, keys, REQUIREMENTS, now=time.time(), revoked=frozenset()), Allow)
    head, payload, signature = token.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    tampered = verify(f"{head}.{payload}.{flipped}", keys, REQUIREMENTS, now=time.time(), revoked=frozenset())
    assert isinstance(tampered, Deny) and "signature" in tampered.description


def test_a_new_key_set_remembers_nothing(signer: SigningKeys) -> None:
    """After a rotation that drops the signing key, a token verified under the old set is refused."""
    token = _token(signer)
    old = KeySet.from_jwks(signer.jwks)
    assert isinstance(verify(token, old, REQUIREMENTS, now=time.time(), revoked=frozenset()), Allow)
    rotated = KeySet.from_jwks(_signer().jwks)
    refused = verify(token, rotated, REQUIREMENTS, now=time.time(), revoked=frozenset())
    assert isinstance(refused, Deny) and "unknown key" in refused.description


def test_the_memory_is_bounded(signer: SigningKeys) -> None:
    keys = KeySet.from_jwks(signer.jwks)
    for index in range(MAX_REMEMBERED_TOKENS + 5):
        keys.remember(f"t{index}", {})
    assert len(keys.verified) <= MAX_REMEMBERED_TOKENS
