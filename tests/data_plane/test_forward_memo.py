"""The auth gate remembers its Forward decisions for valid tokens (data_plane.auth.forward_memo): what a
remembered decision may skip, and everything that must still refuse it. Sans-IO: real RS256 tokens from
the control plane's signer, policies compiled from the stored models, no server."""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from control_plane.oauth.signing import SigningKeys
from data_plane.auth.access_policy import ProxyAccessPolicy
from data_plane.auth.forward_memo import MAX_REMEMBERED_FORWARDS
from data_plane.auth.gate import Answer, AuthContext, Forward, GateDecision, ToAuthorizationServer, decide
from data_plane.auth.revocations import RevokedTokens
from data_plane.auth.token_verifier import DEFAULT_LEEWAY_SECONDS, KeySet
from shared.models import ProxyAuthConfig, ProxyResource, ScopeRule

ISSUER = "https://auth.test"
HOST = "mcp.test"
AUDIENCE = f"https://{HOST}"


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


def _policy(**config: Any) -> ProxyAccessPolicy:
    settings: dict[str, Any] = {"allowed_users": ["alice"]} | config
    return ProxyAccessPolicy.compile(
        ProxyAuthConfig(hostname=HOST, **settings), ProxyResource(hostname=HOST, path="")
    )


def _context(signer: SigningKeys, revoked: RevokedTokens | None = None) -> AuthContext:
    return AuthContext(ISSUER, KeySet.from_jwks(signer.jwks), revoked or RevokedTokens())


def _decide(
    policy: ProxyAccessPolicy,
    context: AuthContext,
    token: str,
    *,
    path: str = "/mcp",
    method: bytes = b"GET",
    host: str = HOST,
    now: float | None = None,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> GateDecision:
    headers = [(b"host", host.encode()), (b"authorization", f"Bearer {token}".encode()), *(extra or [])]
    return decide(
        policy,
        context,
        scheme="https",
        method=method,
        path=path,
        headers=headers,
        now=time.time() if now is None else now,
    )


def _status(decision: GateDecision) -> int:
    if isinstance(decision, Forward):
        return 200
    assert isinstance(decision, Answer), decision
    return decision.status


def _description(decision: GateDecision) -> bytes:
    assert isinstance(decision, Answer)
    return decision.body


def test_a_forwarded_token_is_remembered_and_forwarded_again_with_the_same_identity(
    signer: SigningKeys,
) -> None:
    policy, context = _policy(), _context(signer)
    token = _token(signer)
    first = _decide(policy, context, token)
    assert isinstance(first, Forward) and first.login == "alice"
    assert len(policy.forwards) == 1
    # Served from the memo: the key set's own memory of the token is gone, the decision is the same.
    context.keys.verified.clear()
    again = _decide(policy, context, token)
    assert isinstance(again, Forward)
    assert (again.asserted, again.login) == (first.asserted, first.login)
    assert (b"x-auth-user", b"alice") in again.asserted.headers
    # The client's Authorization never goes upstream, on either path.
    assert all(name != b"authorization" for name, _ in first.headers + again.headers)
    assert token not in context.keys.verified


def test_a_remembered_decision_does_not_outlive_the_token(signer: SigningKeys) -> None:
    policy, context = _policy(), _context(signer)
    now = time.time()
    token = _token(signer, exp=int(now) + 60)
    assert _status(_decide(policy, context, token, now=now)) == 200
    last_valid = int(now) + 60 + DEFAULT_LEEWAY_SECONDS
    assert _status(_decide(policy, context, token, now=last_valid)) == 200
    expired = _decide(policy, context, token, now=last_valid + 0.5)
    assert _status(expired) == 401 and b"expired" in _description(expired)


def test_a_remembered_decision_respects_not_before_when_the_clock_goes_back(signer: SigningKeys) -> None:
    policy, context = _policy(), _context(signer)
    now = time.time()
    token = _token(signer, nbf=int(now) + 100)
    # Not valid yet at `now`, valid from nbf - leeway on.
    assert _status(_decide(policy, context, token, now=now)) == 401
    later = int(now) + 100 - DEFAULT_LEEWAY_SECONDS
    assert _status(_decide(policy, context, token, now=later)) == 200
    assert len(policy.forwards) == 1
    # The system clock steps back (NTP): the remembered decision must not hide the nbf rule.
    early = _decide(policy, context, token, now=later - 1)
    assert _status(early) == 401 and b"not valid yet" in _description(early)


def test_a_revoked_token_is_refused_at_once(signer: SigningKeys) -> None:
    policy, context = _policy(), _context(signer)
    token = _token(signer, jti="to-be-revoked")
    assert _status(_decide(policy, context, token)) == 200
    now = time.time()
    revoked = context.revoked.with_message(f"to-be-revoked {int(now) + 600}", now=now)
    after = AuthContext(ISSUER, context.keys, revoked)
    refused = _decide(policy, after, token)
    assert _status(refused) == 401 and b"revoked" in _description(refused)


def test_a_policy_change_is_judged_afresh(signer: SigningKeys) -> None:
    context = _context(signer)
    token = _token(signer)
    before = _policy()
    assert _status(_decide(before, context, token)) == 200
    # The operator removes alice, or starts requiring a scope her token lacks: a new compiled policy.
    assert _status(_decide(_policy(allowed_users=["bob"]), context, token)) == 403
    assert _status(_decide(_policy(required_scopes=["admin"]), context, token)) == 403
    assert _status(_decide(before, context, token)) == 200


def test_a_key_rotation_is_judged_afresh(signer: SigningKeys) -> None:
    policy, context = _policy(), _context(signer)
    token = _token(signer)
    assert _status(_decide(policy, context, token)) == 200
    # The key that signed it is gone from the JWKS: refused although the policy remembers the token.
    rotated = AuthContext(ISSUER, KeySet.from_jwks(_signer().jwks), context.revoked)
    refused = _decide(policy, rotated, token)
    assert _status(refused) == 401 and b"unknown key" in _description(refused)
    # Still published after the rotation (a new KeySet object): verified again, and let through.
    republished = AuthContext(ISSUER, KeySet.from_jwks(signer.jwks), context.revoked)
    assert _status(_decide(policy, republished, token)) == 200
    assert token in republished.keys.verified
    # Another issuer with the same keys is not the one the token names.
    elsewhere = AuthContext("https://other-auth.test", republished.keys, context.revoked)
    assert _status(_decide(policy, elsewhere, token)) == 401


def test_scope_rules_per_path_and_method_are_not_bypassed(signer: SigningKeys) -> None:
    policy = _policy(
        scope_rules=[
            ScopeRule(path_prefix="/admin", scopes=["admin"]),
            ScopeRule(path_prefix="/tools", methods=["POST"], scopes=["tools:write"]),
        ]
    )
    context = _context(signer)
    token = _token(signer)
    assert _status(_decide(policy, context, token, path="/mcp")) == 200
    assert _status(_decide(policy, context, token, path="/admin/users")) == 403
    assert _status(_decide(policy, context, token, path="/tools", method=b"GET")) == 200
    assert _status(_decide(policy, context, token, path="/tools", method=b"POST")) == 403
    # And in the other order: remembered for GET /tools, still refused for POST /tools.
    assert _status(_decide(policy, context, token, path="/tools", method=b"POST")) == 403
    writer = _token(signer, scope="mcp tools:write")
    assert _status(_decide(policy, context, writer, path="/tools", method=b"POST")) == 200


def test_the_audience_is_judged_per_host(signer: SigningKeys) -> None:
    """A wildcard-style policy serving two names: a token for one is not let through on the other."""
    policy, context = _policy(), _context(signer)
    token = _token(signer)
    assert _status(_decide(policy, context, token)) == 200
    other = _decide(policy, context, token, host="other.test")
    assert _status(other) == 401 and b"another resource" in _description(other)


def test_other_tokens_and_request_shapes_still_get_their_own_answers(signer: SigningKeys) -> None:
    policy, context = _policy(allowed_origins=["https://app.test"]), _context(signer)
    token = _token(signer)
    assert _status(_decide(policy, context, token)) == 200
    # Another user's token, even with the same path: the allowlist.
    assert _status(_decide(policy, context, _token(signer, login="mallory"))) == 403
    # A tampered copy of the remembered token is another key: its signature is checked.
    head, payload, signature = token.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    assert _status(_decide(policy, context, f"{head}.{payload}.{flipped}")) == 401
    assert len(policy.forwards) == 1  # refusals are never remembered
    # The Origin allowlist comes before any token.
    assert _status(_decide(policy, context, token, extra=[(b"origin", b"https://evil.test")])) == 403
    # Two Authorization headers are ambiguous, whatever the first one is.
    doubled = _decide(policy, context, token, extra=[(b"authorization", b"Bearer other")])
    assert _status(doubled) == 400
    # A CORS preflight is answered here, not forwarded, even after the same token's plain OPTIONS (no
    # Access-Control-Request-Method: not a preflight) to the same path was forwarded and remembered.
    plain = _decide(policy, context, token, method=b"OPTIONS", extra=[(b"origin", b"https://app.test")])
    assert _status(plain) == 200
    preflight = _decide(
        policy,
        context,
        token,
        method=b"OPTIONS",
        extra=[(b"origin", b"https://app.test"), (b"access-control-request-method", b"POST")],
    )
    assert _status(preflight) == 204
    # The PRM document and the authorization server's paths keep their own answers.
    assert _status(_decide(policy, context, token, path="/.well-known/oauth-protected-resource")) == 200
    assert isinstance(_decide(policy, context, token, path="/token"), ToAuthorizationServer)


def test_the_memo_is_bounded(signer: SigningKeys) -> None:
    policy, context = _policy(), _context(signer)
    token = _token(signer)
    for index in range(MAX_REMEMBERED_FORWARDS + 10):
        assert _status(_decide(policy, context, token, path=f"/p{index}")) == 200
        assert len(policy.forwards) <= MAX_REMEMBERED_FORWARDS
    assert _status(_decide(policy, context, token, path="/p0")) == 200
