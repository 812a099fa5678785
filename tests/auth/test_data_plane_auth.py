"""The data plane's sans-IO auth blocks, fed real JWTs signed with real keys: the token verifier (every
forged-token class), the per-proxy access policy, PRM documents / WWW-Authenticate, and Mcp-* headers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pytest

from control_plane.oauth.signing import SigningKeys
from data_plane.auth import mcp_headers
from data_plane.auth.access_policy import ProxyAccessPolicy
from data_plane.auth.protected_resource import (
    accepted_audiences,
    origin_of,
    prm_document,
    prm_paths,
    prm_url,
    www_authenticate,
)
from data_plane.auth.token_verifier import Allow, Deny, KeySet, TokenRequirements, bearer_token, verify
from shared.models import ProxyAuthConfig, ProxyResource, ScopeRule

from .conftest import new_rsa_pem

pytestmark = pytest.mark.auth

ISSUER = "https://auth.example.com"
RESOURCE = "https://mcp.example.com/mcp"
NOW = 1_800_000_000


@pytest.fixture(scope="module")
def keys() -> SigningKeys:
    return SigningKeys.load(base64.b64encode(new_rsa_pem()).decode())


@pytest.fixture(scope="module")
def keyset(keys: SigningKeys) -> KeySet:
    return KeySet.from_jwks(keys.jwks)


def claims(**overrides: Any) -> dict[str, Any]:
    base = {
        "iss": ISSUER,
        "sub": "github:1",
        "aud": RESOURCE,
        "exp": NOW + 3600,
        "iat": NOW,
        "nbf": NOW,
        "jti": "jti-1",
        "scope": "mcp",
        "client_id": "c1",
        "login": "alice",
        "orgs": ["acme"],
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def requirements(**overrides: Any) -> TokenRequirements:
    values: dict[str, Any] = {
        "issuer": ISSUER,
        "audiences": frozenset({RESOURCE}),
        "scopes": ("mcp",),
        "allowed_users": frozenset({"alice"}),
        "allowed_orgs": frozenset(),
    }
    values.update(overrides)
    return TokenRequirements(**values)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: dict[str, Any], key: bytes | None) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = b"" if key is None else hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def test_valid_token_is_allowed(keys: SigningKeys, keyset: KeySet) -> None:
    decision = verify(keys.sign(claims()), keyset, requirements(), now=NOW, revoked=set())
    assert isinstance(decision, Allow)
    assert decision.identity.login == "alice" and decision.identity.scopes == ("mcp",)


def test_no_token_is_401_without_error_code(keyset: KeySet) -> None:
    decision = verify(None, keyset, requirements(), now=NOW, revoked=set())
    assert decision == Deny(401, None, "an access token is required")


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"exp": NOW - 3600}, "expired"),
        ({"nbf": NOW + 3600}, "not valid yet"),
        ({"iss": "https://evil.example"}, "another server"),
        ({"aud": "https://other.example.com/mcp"}, "another resource"),
        ({"aud": ["https://a.example", "https://b.example"]}, "another resource"),
        ({"exp": None}, "no expiry"),
        ({"jti": None}, "no id"),
    ],
)
def test_bad_claims_are_401(
    keys: SigningKeys, keyset: KeySet, overrides: dict[str, Any], reason: str
) -> None:
    decision = verify(keys.sign(claims(**overrides)), keyset, requirements(), now=NOW, revoked=set())
    assert isinstance(decision, Deny) and decision.status == 401 and decision.error == "invalid_token"
    assert reason in decision.description


def test_expiry_has_a_small_leeway(keys: SigningKeys, keyset: KeySet) -> None:
    token = keys.sign(claims(exp=NOW - 10))
    assert isinstance(verify(token, keyset, requirements(), now=NOW, revoked=set()), Allow)
    assert isinstance(verify(token, keyset, requirements(), now=NOW + 60, revoked=set()), Deny)


def test_audience_list_containing_this_resource_is_accepted(keys: SigningKeys, keyset: KeySet) -> None:
    token = keys.sign(claims(aud=["https://other.example", RESOURCE]))
    assert isinstance(verify(token, keyset, requirements(), now=NOW, revoked=set()), Allow)


def test_revoked_jti_is_401(keys: SigningKeys, keyset: KeySet) -> None:
    decision = verify(keys.sign(claims()), keyset, requirements(), now=NOW, revoked={"jti-1"})
    assert isinstance(decision, Deny) and "revoked" in decision.description


def test_alg_none_is_refused(keyset: KeySet) -> None:
    # Everything else about the token is right (typ at+jwt, a known kid, good claims), so only the
    # algorithm check can be what refuses it; the description says so.
    kid = next(iter(keyset.keys))
    for alg in ("none", "None", "NONE"):
        token = forge({"alg": alg, "kid": kid, "typ": "at+jwt"}, claims(), None)
        decision = verify(token, keyset, requirements(), now=NOW, revoked=set())
        assert isinstance(decision, Deny) and decision.status == 401
        assert decision.description == f"tokens signed with {alg!r} are not accepted"


def test_hs256_signed_with_the_public_key_is_refused(keys: SigningKeys, keyset: KeySet) -> None:
    kid = next(iter(keyset.keys))
    public_pem = keys.public_pems[kid]
    token = forge({"alg": "HS256", "kid": kid, "typ": "at+jwt"}, claims(), public_pem)
    decision = verify(token, keyset, requirements(), now=NOW, revoked=set())
    assert isinstance(decision, Deny) and decision.status == 401 and "HS256" in decision.description


def test_token_from_another_key_is_refused(keyset: KeySet) -> None:
    stranger = SigningKeys.load(base64.b64encode(new_rsa_pem()).decode())
    decision = verify(stranger.sign(claims()), keyset, requirements(), now=NOW, revoked=set())
    assert isinstance(decision, Deny) and "unknown key" in decision.description


def test_tampered_payload_is_refused(keys: SigningKeys, keyset: KeySet) -> None:
    header, _payload, signature = keys.sign(claims()).split(".")
    evil = b64(json.dumps(claims(login="mallory")).encode())
    decision = verify(f"{header}.{evil}.{signature}", keyset, requirements(), now=NOW, revoked=set())
    assert isinstance(decision, Deny) and "signature" in decision.description


@pytest.mark.parametrize("garbage", ["", "a.b", "a.b.c", "x" * 20000, "...."])
def test_garbage_is_refused(keyset: KeySet, garbage: str) -> None:
    decision = verify(garbage, keyset, requirements(), now=NOW, revoked=set())
    assert isinstance(decision, Deny) and decision.status == 401


def test_insufficient_scope_is_403_with_scope(keys: SigningKeys, keyset: KeySet) -> None:
    decision = verify(keys.sign(claims(scope="other")), keyset, requirements(), now=NOW, revoked=set())
    assert decision == Deny(403, "insufficient_scope", "this request needs the scope(s): mcp", scope="mcp")


def test_allowlist(keys: SigningKeys, keyset: KeySet) -> None:
    bob = keys.sign(claims(login="bob", orgs=[]))
    decision = verify(bob, keyset, requirements(), now=NOW, revoked=set())
    assert isinstance(decision, Deny) and decision.status == 403 and decision.error == "access_denied"
    assert "'bob'" in decision.description and "alice" not in decision.description
    # Org membership admits.
    acme = keys.sign(claims(login="bob", orgs=["ACME"]))
    assert isinstance(
        verify(acme, keyset, requirements(allowed_orgs=frozenset({"acme"})), now=NOW, revoked=()), Allow
    )
    # '*' admits any signed-in user.
    assert isinstance(
        verify(bob, keyset, requirements(allowed_users=frozenset({"*"})), now=NOW, revoked=()), Allow
    )
    # Nobody listed: nobody allowed.
    assert isinstance(verify(bob, keyset, requirements(allowed_users=frozenset()), now=NOW, revoked=()), Deny)


def test_keyset_ignores_keys_it_cannot_use() -> None:
    jwks = {
        "keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {"kty": "RSA", "kid": "x", "alg": "HS256", "n": "a", "e": "AQAB"},
            "junk",
        ]
    }
    assert KeySet.from_jwks(jwks).keys == {}
    assert KeySet.from_jwks({"keys": "nope"}).keys == {}


def test_jwks_carries_a_second_key_for_rotation() -> None:
    old_pem = new_rsa_pem()
    old = SigningKeys.from_pems(old_pem)
    new = SigningKeys.from_pems(new_rsa_pem(), [old_pem])  # the rotated-out key still verifies
    assert len(new.jwks["keys"]) == 2 and new.jwks["keys"][0]["kid"] == new.kid != old.kid
    keyset = KeySet.from_jwks(new.jwks)
    for signer in (old, new):
        assert isinstance(verify(signer.sign(claims()), keyset, requirements(), now=NOW, revoked=()), Allow)


def test_kid_is_the_rfc7638_thumbprint() -> None:
    # RFC 7638 §3.1 example key and its thumbprint.
    from cryptography.hazmat.primitives.asymmetric import rsa

    from control_plane.oauth.signing import public_jwk

    n_b64 = (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMs"
        "tn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajr"
        "n1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    )
    n = int.from_bytes(base64.urlsafe_b64decode(n_b64 + "=="), "big")
    jwk = public_jwk(rsa.RSAPublicNumbers(65537, n).public_key())
    assert jwk["kid"] == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_bearer_token_only_from_the_authorization_header() -> None:
    assert bearer_token("Bearer abc.def.ghi") == "abc.def.ghi"
    assert bearer_token("bearer  abc") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token("Bearer") is None
    assert bearer_token(None) is None


# ---- access policy


def policy(**overrides: Any) -> ProxyAccessPolicy:
    config = ProxyAuthConfig(hostname="mcp.example.com", allowed_users=["alice"], **overrides)
    return ProxyAccessPolicy.compile(config, ProxyResource(hostname="mcp.example.com", path="/mcp"))


def test_policy_public_paths_and_scope_rules() -> None:
    p = policy(
        public_paths=["/health"],
        scope_rules=[ScopeRule(path_prefix="/admin", methods=["post"], scopes=["mcp", "admin"])],
    )
    assert p.is_public("/.well-known/oauth-protected-resource")
    assert p.is_public("/.well-known/oauth-protected-resource/mcp")
    assert p.is_public("/.well-known/acme-challenge/token")
    assert p.is_public("/health/live")
    assert not p.is_public("/mcp")
    assert p.scopes_for("/admin/x", "POST") == ("mcp", "admin")
    assert p.scopes_for("/admin/x", "GET") == ("mcp",)
    assert "admin" in p.scopes_supported


def test_policy_names_its_identity_headers() -> None:
    """The proxy's own identity header names, which protocol.forwarding strips from clients in every
    spelling (tests/data_plane/test_identity_headers.py)."""
    p = policy(identity_headers={"X-Mcp-User": "login", "X-Mcp-Orgs": "orgs"})
    assert p.identity_header_names == frozenset({b"x-mcp-user", b"x-mcp-orgs"})


def test_policy_identity_headers_are_clean(keys: SigningKeys, keyset: KeySet) -> None:
    decision = verify(keys.sign(claims(login="alice")), keyset, requirements(), now=NOW, revoked=())
    assert isinstance(decision, Allow)
    headers = policy().upstream_identity_headers(decision.identity)
    assert headers == [("X-Auth-User", "alice"), ("X-Auth-Subject", "github:1"), ("X-Auth-Scopes", "mcp")]


# ---- protected resource metadata


def test_prm_for_what_the_user_typed() -> None:
    origin = origin_of("https", "MCP.Example.com:443")
    assert origin == "https://mcp.example.com"
    assert origin_of("http", "mcp.example.com:8080") == "http://mcp.example.com:8080"
    assert origin_of("http", "[::1]:8080") == "http://[::1]:8080"
    assert origin_of("http", "bad host") is None
    assert accepted_audiences("https://mcp.example.com", "/mcp") == frozenset(
        {"https://mcp.example.com/mcp", "https://mcp.example.com"}
    )
    assert prm_paths("/mcp") == (
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
    )
    assert (
        prm_url("https://mcp.example.com", "/mcp")
        == "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
    )
    doc = prm_document(resource=RESOURCE, issuer=ISSUER, scopes_supported=("mcp",), resource_name="Tools")
    assert doc["resource"] == RESOURCE and doc["authorization_servers"] == [ISSUER]
    assert doc["bearer_methods_supported"] == ["header"] and doc["scopes_supported"] == ["mcp"]


def test_www_authenticate() -> None:
    url = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
    assert www_authenticate(url) == f'Bearer resource_metadata="{url}"'
    header = www_authenticate(url, error="insufficient_scope", scope="mcp admin", description='say "hi"\r\n')
    assert header == (
        f'Bearer resource_metadata="{url}", error="insufficient_scope", '
        'error_description="say \\"hi\\"", scope="mcp admin"'
    )


# ---- Mcp-Method / Mcp-Name


def rpc(method: str, **params: Any) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()


def test_mcp_headers() -> None:
    ok = mcp_headers.HeadersMatch()
    assert mcp_headers.check(None, None, b"not json") == ok
    assert mcp_headers.check("tools/call", "echo", rpc("tools/call", name="echo")) == ok
    assert mcp_headers.check("resources/read", "file:///a", rpc("resources/read", uri="file:///a")) == ok
    assert mcp_headers.check("tools/list", None, rpc("tools/list")) == ok
    for method, name, body in [
        ("tools/list", None, rpc("tools/call", name="echo")),
        ("tools/call", "delete_everything", rpc("tools/call", name="echo")),
        ("tools/call", "echo", b"{not json"),
        ("tools/call", "echo", b"[" + rpc("tools/call", name="echo") + b"]"),
        (None, "echo", rpc("tools/list")),
    ]:
        result = mcp_headers.check(method, name, body)
        assert isinstance(result, mcp_headers.HeadersMismatch) and result.status == 400, (method, name)


def test_real_time_is_never_read(keys: SigningKeys, keyset: KeySet) -> None:
    """The verifier decides on the `now` it is given, not the wall clock: a token that expired ten years
    ago is valid at a `now` before its expiry."""
    exp = int(time.time()) - 86400 * 365 * 10
    token = keys.sign(claims(exp=exp, nbf=None))
    assert isinstance(verify(token, keyset, requirements(), now=exp - 100, revoked=()), Allow)
    assert isinstance(verify(token, keyset, requirements(), now=time.time(), revoked=()), Deny)


# ---- auth table


def test_auth_table_from_a_snapshot(keys: SigningKeys) -> None:
    from data_plane.auth.auth_table import build_auth_table

    auth_rows = {
        "mcp.example.com": ProxyAuthConfig(
            hostname="mcp.example.com", allowed_users=["alice"]
        ).model_dump_json(),
        "*.apps.example.com": ProxyAuthConfig(
            hostname="*.apps.example.com", allowed_users=["*"]
        ).model_dump_json(),
        "off.example.com": ProxyAuthConfig(hostname="off.example.com", enabled=False).model_dump_json(),
        "broken.example.com": '{"hostname": "broken.example.com", "allowed_users": "not a list"}',
    }
    resource_rows = {
        "mcp.example.com": ProxyResource(hostname="mcp.example.com", path="/v2/mcp").model_dump_json(),
        "junk.example.com": "{",
    }
    table = build_auth_table(auth_rows, resource_rows, json.dumps(keys.jwks))
    mcp_policy = table.policy_for("mcp.example.com")
    assert mcp_policy is not None and mcp_policy.resource_path == "/v2/mcp"
    wildcard = table.policy_for("a.b.apps.example.com")
    assert wildcard is not None and wildcard.allowed_users == frozenset({"*"})
    assert table.policy_for("apps.example.com") is None
    assert table.policy_for("off.example.com") is None  # protection disabled
    assert table.policy_for("broken.example.com") is None
    assert len(table.skipped) == 2 and any("broken.example.com" in s for s in table.skipped)
    # The cached JWKS verifies our tokens.
    assert isinstance(verify(keys.sign(claims()), table.keys, requirements(), now=NOW, revoked=()), Allow)
    # No JWKS yet: every token is refused (unknown key), nothing crashes.
    empty = build_auth_table(auth_rows, {}, None)
    assert isinstance(verify(keys.sign(claims()), empty.keys, requirements(), now=NOW, revoked=()), Deny)
    assert build_auth_table({}, {}, "not json").skipped == ("oauth-jwks: not JSON",)


def test_only_access_tokens_are_accepted(keys: SigningKeys, keyset: KeySet) -> None:
    """A JWT signed by our key but not typed at+jwt (RFC 9068) is not an access token."""
    from jose import jwt as jose_jwt

    token = jose_jwt.encode(claims(), keys.private_pem.decode(), algorithm="RS256", headers={"kid": keys.kid})
    decision = verify(token, keyset, requirements(), now=NOW, revoked=())
    assert isinstance(decision, Deny) and "not an access token" in decision.description


def test_authorization_server_paths_on_a_protected_host() -> None:
    from data_plane.auth.protected_resource import is_authorization_server_path

    for path in (
        "/authorize",
        "/token",
        "/register",
        "/register/abc",
        "/.well-known/oauth-authorization-server",
        "/.well-known/oauth-authorization-server/mcp",
        "/.well-known/openid-configuration",
    ):
        assert is_authorization_server_path(path), path
    for path in ("/mcp", "/tokens", "/.well-known/oauth-protected-resource", "/authorize-me"):
        assert not is_authorization_server_path(path), path
