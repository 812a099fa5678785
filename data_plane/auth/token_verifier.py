"""Verify an OAuth access token locally: no Redis or network round trip per request.

Checks, in order: the header names an algorithm we advertise (RS256 only: `none`, HS256 signed with our
public key, and anything else are refused before any key is touched) and a `kid` in the cached JWKS; the
signature; `exp` / `nbf` against the `now` passed in, with a small leeway; `iss`; `aud` contains one of
this resource's URIs; the jti is not in the revoked set. Then the policy: the token's scopes cover the
route's, and its user is on the allowlist. The result is a typed Decision the connection code turns into
a response (401 / 403 with WWW-Authenticate, see protected_resource.py) or an upstream request.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from jose import jws
from jose.exceptions import JOSEError

from shared.allowlist import client_allowed, user_allowed

ALLOWED_ALGORITHMS = frozenset({"RS256"})
ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})
DEFAULT_LEEWAY_SECONDS = 30
MAX_TOKEN_BYTES = 16 * 1024
# Tokens whose signature this key set has verified, with their claims: a client sends the same token with
# every request until it expires, and an RSA verification costs more than the rest of a request. Only the
# signature is remembered (for exactly that token string, under exactly these keys: a new JWKS is a new
# KeySet); time, issuer, audience, revocation, scope and allowlist are judged on every request.
MAX_REMEMBERED_TOKENS = 10_000


@dataclass(frozen=True, slots=True)
class KeySet:
    """An immutable JWKS snapshot: kid -> public JWK (RSA signing keys only)."""

    keys: Mapping[str, Mapping[str, str]]
    # Derived, per snapshot: the public keys built once, and the tokens verified under them.
    public_keys: dict[str, rsa.RSAPublicKey | None] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    verified: dict[str, dict[str, Any]] = field(default_factory=dict, init=False, repr=False, compare=False)
    # The Identity each remembered token's claims make (a pure function of them), built once.
    identities: dict[str, Identity] = field(default_factory=dict, init=False, repr=False, compare=False)

    def public_key(self, kid: str) -> rsa.RSAPublicKey | None:
        """The RSA key of `kid`, built from its JWK on first use (None: unknown or unusable)."""
        try:
            return self.public_keys[kid]
        except KeyError:
            pass
        jwk = self.keys.get(kid)
        key: rsa.RSAPublicKey | None = None
        if jwk is not None:
            try:
                numbers = rsa.RSAPublicNumbers(_b64url_int(jwk["e"]), _b64url_int(jwk["n"]))
                key = numbers.public_key()
            except (KeyError, ValueError, binascii.Error):
                key = None
        self.public_keys[kid] = key
        return key

    def remember(self, token: str, claims: dict[str, Any]) -> None:
        if len(self.verified) >= MAX_REMEMBERED_TOKENS:
            self.verified.clear()
            self.identities.clear()
        self.verified[token] = claims

    @classmethod
    def from_jwks(cls, document: Mapping[str, Any]) -> KeySet:
        keys: dict[str, dict[str, str]] = {}
        for jwk in document.get("keys", []) if isinstance(document.get("keys"), list) else []:
            if not isinstance(jwk, dict) or jwk.get("kty") != "RSA" or not isinstance(jwk.get("kid"), str):
                continue
            if jwk.get("use", "sig") != "sig" or jwk.get("alg", "RS256") not in ALLOWED_ALGORITHMS:
                continue
            if not isinstance(jwk.get("n"), str) or not isinstance(jwk.get("e"), str):
                continue
            keys[jwk["kid"]] = {"kty": "RSA", "n": jwk["n"], "e": jwk["e"], "kid": jwk["kid"], "alg": "RS256"}
        return cls(keys)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the token speaks for; what identity headers upstream are built from."""

    sub: str
    login: str
    client_id: str
    scopes: tuple[str, ...]
    orgs: tuple[str, ...]
    email: str
    name: str
    jti: str
    expires_at: int


@dataclass(frozen=True, slots=True)
class Allow:
    identity: Identity


@dataclass(frozen=True, slots=True)
class Deny:
    """`status` 401 (no/bad token) or 403 (insufficient scope, not on the allowlist). `error` is the RFC 6750
    code for WWW-Authenticate (None when no token was sent at all); `scope` is what the route needs."""

    status: Literal[401, 403]
    error: Literal["invalid_token", "insufficient_scope", "access_denied"] | None
    description: str
    scope: str | None = None


Decision = Allow | Deny


@dataclass(frozen=True, slots=True)
class TokenRequirements:
    """What one request needs from a token."""

    issuer: str
    audiences: frozenset[str]
    scopes: tuple[str, ...]
    allowed_users: frozenset[str]
    allowed_orgs: frozenset[str]
    allowed_clients: frozenset[str] = frozenset()
    leeway_seconds: int = DEFAULT_LEEWAY_SECONDS


def _b64url_decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _b64url_int(segment: str) -> int:
    return int.from_bytes(_b64url_decode(segment), "big")


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer` header, or None. Tokens are never taken from the query."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value or " " in value:
        return None
    return value


def _invalid(description: str) -> Deny:
    return Deny(401, "invalid_token", description)


def _str_list(value: Any) -> tuple[str, ...] | None:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return None


def lifetime_problem(now: float, expires: float, not_before: float | None, leeway_seconds: int) -> str | None:
    """Why a token with this `exp` (and numeric `nbf`, if any) is not valid at `now`, or None when it is.
    The one lifetime rule: authenticate applies it to fresh claims, auth.forward_memo to remembered ones."""
    if now > expires + leeway_seconds:
        return "the access token has expired"
    if not_before is not None and now + leeway_seconds < not_before:
        return "the access token is not valid yet"
    return None


def authenticate(
    token: str | None, keys: KeySet, requirements: TokenRequirements, *, now: float, revoked: Container[str]
) -> Identity | Deny:
    """Signature, time, issuer, audience and revocation: who is this, if anyone."""
    if token is None:
        return Deny(401, None, "an access token is required")
    claims = keys.verified.get(token)
    if claims is None:
        checked = _verified_claims(token, keys)
        if isinstance(checked, Deny):
            return checked
        claims = checked
        if isinstance(claims, dict):
            keys.remember(token, claims)
    if not isinstance(claims, dict):
        return _invalid("the access token has no claims")
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        return _invalid("the access token has no expiry")
    nbf = claims.get("nbf")
    outside = lifetime_problem(
        now, exp, nbf if isinstance(nbf, int | float) else None, requirements.leeway_seconds
    )
    if outside is not None:
        return _invalid(outside)
    if claims.get("iss") != requirements.issuer:
        return _invalid("the access token was issued by another server")
    audiences = _str_list(claims.get("aud"))
    if not audiences or not requirements.audiences.intersection(audiences):
        return _invalid("the access token is for another resource")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti:
        return _invalid("the access token has no id")
    if jti in revoked:
        return _invalid("the access token was revoked")
    known = keys.identities.get(token)
    if known is not None:
        return known
    scope = claims.get("scope", "")
    login = claims.get("login", "")
    sub = claims.get("sub")
    if not isinstance(scope, str) or not isinstance(login, str) or not isinstance(sub, str):
        return _invalid("the access token's claims are malformed")
    orgs = _str_list(claims.get("orgs", [])) or ()
    identity = Identity(
        sub=sub,
        login=login.lower(),
        client_id=str(claims.get("client_id", "")),
        scopes=tuple(s for s in scope.split(" ") if s),
        orgs=tuple(o.lower() for o in orgs),
        email=str(claims.get("email", "")),
        name=str(claims.get("name", "")),
        jti=jti,
        expires_at=int(exp),
    )
    if token in keys.verified:
        keys.identities[token] = identity
    return identity


def _verified_claims(token: str, keys: KeySet) -> Any:
    """The token's claims once its header is acceptable and its signature verifies, else why not.
    (RS256 as python-jose's jws.verify checks it, against a key built once per key set.)"""
    if len(token) > MAX_TOKEN_BYTES or token.count(".") != 2:
        return _invalid("the access token is malformed")
    try:
        header = jws.get_unverified_header(token)
    except JOSEError:
        return _invalid("the access token is malformed")
    algorithm = header.get("alg")
    if algorithm not in ALLOWED_ALGORITHMS:
        return _invalid(f"tokens signed with {algorithm!r} are not accepted")
    # RFC 9068: only access tokens (typ at+jwt), so no other JWT of ours can be replayed as one.
    if str(header.get("typ", "")).lower() not in ACCESS_TOKEN_TYPES:
        return _invalid("the token is not an access token")
    key = keys.public_key(str(header.get("kid", "")))
    if key is None:
        return _invalid("the access token was signed by an unknown key")
    signing_input, _, signature = token.rpartition(".")
    try:
        key.verify(
            _b64url_decode(signature), signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256()
        )
        return json.loads(_b64url_decode(signing_input.partition(".")[2]))
    except (InvalidSignature, ValueError, binascii.Error, UnicodeEncodeError):
        return _invalid("the access token signature is invalid")


def authorise(identity: Identity, requirements: TokenRequirements) -> Decision:
    """Scope coverage, then the allowlist."""
    missing = [s for s in requirements.scopes if s not in identity.scopes]
    if missing:
        return Deny(
            403,
            "insufficient_scope",
            f"this request needs the scope(s): {' '.join(requirements.scopes)}",
            scope=" ".join(requirements.scopes),
        )
    if not identity.login:
        # A machine token (client_credentials): no user stands behind it, so the user and organisation
        # rules (including '*') never admit it; only its client id on the proxy's allowed clients does.
        if client_allowed(requirements.allowed_clients, identity.client_id):
            return Allow(identity)
        return Deny(
            403,
            "access_denied",
            f"OAuth client {identity.client_id!r} is not allowed to use this service; "
            "ask the operator of this proxy to add it to its allowed clients",
        )
    if user_allowed(requirements.allowed_users, requirements.allowed_orgs, identity.login, identity.orgs):
        return Allow(identity)
    # Say who can fix it, never who is allowed.
    return Deny(
        403,
        "access_denied",
        f"GitHub user {identity.login!r} is not allowed to use this service; "
        "ask the operator of this proxy to add you to its allowed users or organisations",
    )


def verify(
    token: str | None, keys: KeySet, requirements: TokenRequirements, *, now: float, revoked: Container[str]
) -> Decision:
    result = authenticate(token, keys, requirements, now=now, revoked=revoked)
    if isinstance(result, Deny):
        return result
    return authorise(result, requirements)
