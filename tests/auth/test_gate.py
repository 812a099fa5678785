"""The data plane's per-request gate (data_plane/auth/gate.py), fed request heads and real JWTs signed with a
real key: every decision class (PRM, AS forwarding, public, 401/403, Origin, Mcp-* body check) and exactly
which headers reach upstream (the gate's decision composed with protocol.forwarding, as the relay does)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from control_plane.oauth.signing import SigningKeys
from data_plane.auth.access_policy import ProxyAccessPolicy
from data_plane.auth.gate import (
    MAX_CHECKED_BODY_BYTES,
    Answer,
    AuthContext,
    Forward,
    McpCheck,
    ToAuthorizationServer,
    check_body,
    decide,
)
from data_plane.auth.token_verifier import KeySet
from data_plane.protocol.forwarding import upstream_request_headers
from data_plane.routing.route_table import build_table
from shared.models import ProxyAuthConfig, ProxyResource, ProxyTarget

from .conftest import new_rsa_pem

pytestmark = pytest.mark.auth

ISSUER = "https://auth.example.com"
HOST = "mcp.example.com"
RESOURCE = f"https://{HOST}/mcp"
NOW = 1_800_000_000


@pytest.fixture(scope="module")
def keys() -> SigningKeys:
    return SigningKeys.load(base64.b64encode(new_rsa_pem()).decode())


@pytest.fixture(scope="module")
def context(keys: SigningKeys) -> AuthContext:
    return AuthContext(ISSUER, KeySet.from_jwks(keys.jwks), frozenset({"revoked-jti"}))


def token(keys: SigningKeys, **overrides: Any) -> str:
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "github:1",
        "aud": RESOURCE,
        "exp": NOW + 3600,
        "iat": NOW,
        "jti": "jti-1",
        "scope": "mcp",
        "client_id": "c1",
        "login": "alice",
        "orgs": [],
    }
    claims.update(overrides)
    return keys.sign(claims)


def policy(**overrides: Any) -> ProxyAccessPolicy:
    config = ProxyAuthConfig(hostname=HOST, **{"allowed_users": ["alice"], **overrides})
    return ProxyAccessPolicy.compile(config, ProxyResource(hostname=HOST, path="/mcp", resource_name="Tools"))


def run(
    context: AuthContext,
    path: str = "/mcp",
    *,
    method: bytes = b"POST",
    headers: list[tuple[bytes, bytes]] | None = None,
    bearer: str | None = None,
    p: ProxyAccessPolicy | None = None,
    use_policy: bool = True,
) -> Any:
    all_headers = [(b"host", HOST.encode()), *(headers or [])]
    if bearer is not None:
        all_headers.append((b"authorization", f"Bearer {bearer}".encode()))
    return decide(
        (p or policy()) if use_policy else None,
        context,
        scheme="https",
        method=method,
        path=path,
        headers=all_headers,
        now=NOW,
    )


def upstream(decision: Forward, *, trusted_peer: bool = True) -> list[tuple[bytes, bytes]]:
    """The headers the upstream gets for a forwarded request (what http_relay sends)."""
    entry = build_table(1, [ProxyTarget(hostname=HOST, target_url="http://127.0.0.1:1")], []).exact[HOST]
    headers, _host = upstream_request_headers(
        decision.headers,
        entry=entry,
        upstream_host_header=b"127.0.0.1:1",
        client_ip="127.0.0.1",
        scheme=b"https",
        request_id=b"rid",
        trusted_peer=trusted_peer,
        chunked=False,
        asserted=decision.asserted,
    )
    return headers


def body_of(answer: Answer) -> dict[str, Any]:
    return dict(json.loads(answer.body))


def header(answer: Answer, name: bytes) -> str | None:
    values = [v.decode() for n, v in answer.headers if n == name]
    return values[0] if values else None


def test_no_token_is_401_with_resource_metadata(context: AuthContext) -> None:
    answer = run(context)
    assert isinstance(answer, Answer) and answer.status == 401
    assert header(answer, b"www-authenticate") == (
        'Bearer resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp", '
        'scope="mcp"'
    )
    assert header(answer, b"access-control-expose-headers") == "WWW-Authenticate"


def test_valid_token_forwards_without_authorization_and_with_identity(
    keys: SigningKeys, context: AuthContext
) -> None:
    forged = [(b"x-auth-user", b"mallory"), (b"x-forwarded-user", b"mallory"), (b"remote-user", b"m")]
    decision = run(context, bearer=token(keys), headers=[(b"mcp-session-id", b"s1"), *forged])
    assert isinstance(decision, Forward) and decision.login == "alice" and decision.mcp_check is None
    sent = upstream(decision)  # a trusted peer: identity headers are dropped on a protected proxy anyway
    names = [n for n, _ in sent]
    assert b"authorization" not in names and b"x-forwarded-user" not in names and b"remote-user" not in names
    assert (b"x-auth-user", b"alice") in sent
    assert (b"x-auth-user", b"mallory") not in sent
    assert (b"x-auth-scopes", b"mcp") in sent and (b"mcp-session-id", b"s1") in sent


@pytest.mark.parametrize(
    ("overrides", "status", "error"),
    [
        ({"aud": "https://other.example.com/mcp"}, 401, "invalid_token"),
        ({"exp": NOW - 3600}, 401, "invalid_token"),
        ({"jti": "revoked-jti"}, 401, "invalid_token"),
        ({"scope": "other"}, 403, "insufficient_scope"),
        ({"login": "bob"}, 403, "access_denied"),
    ],
)
def test_denials(
    keys: SigningKeys, context: AuthContext, overrides: dict[str, Any], status: int, error: str
) -> None:
    answer = run(context, bearer=token(keys, **overrides))
    assert isinstance(answer, Answer) and answer.status == status
    assert body_of(answer)["error"] == error
    challenge = header(answer, b"www-authenticate") or ""
    assert challenge.startswith('Bearer resource_metadata="https://mcp.example.com/')
    if error == "insufficient_scope":
        assert 'error="insufficient_scope"' in challenge and 'scope="mcp"' in challenge
    if error == "access_denied":
        # Who can fix it, not who is allowed; no error code inviting a pointless re-login.
        assert "operator" in body_of(answer)["error_description"]
        assert "alice" not in answer.body.decode() and "error=" not in challenge


def test_audience_is_the_origin_the_client_typed(keys: SigningKeys, context: AuthContext) -> None:
    # A token for https://mcp.example.com/mcp is no good on http://... (another resource).
    decision = decide(
        policy(),
        context,
        scheme="http",
        method=b"POST",
        path="/mcp",
        headers=[(b"host", HOST.encode()), (b"authorization", f"Bearer {token(keys)}".encode())],
        now=NOW,
    )
    assert isinstance(decision, Answer) and decision.status == 401


def test_token_only_from_the_authorization_header(keys: SigningKeys, context: AuthContext) -> None:
    # The path is what the gate sees (no query); a token elsewhere in the head is not a token.
    answer = run(context, headers=[(b"x-access-token", token(keys).encode())])
    assert isinstance(answer, Answer) and answer.status == 401
    answer = run(context, headers=[(b"authorization", f"Basic {token(keys)}".encode())])
    assert isinstance(answer, Answer) and answer.status == 401


def test_two_authorization_headers_are_refused(keys: SigningKeys, context: AuthContext) -> None:
    answer = run(context, bearer=token(keys), headers=[(b"authorization", b"Bearer other")])
    assert isinstance(answer, Answer) and answer.status == 400
    assert 'error="invalid_request"' in (header(answer, b"www-authenticate") or "")


def test_prm_document_at_both_paths(context: AuthContext) -> None:
    for path in ("/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"):
        answer = run(context, path, method=b"GET")
        assert isinstance(answer, Answer) and answer.status == 200
        document = body_of(answer)
        assert document["resource"] == RESOURCE
        assert document["authorization_servers"] == [ISSUER]
        assert document["bearer_methods_supported"] == ["header"]
        assert document["scopes_supported"] == ["mcp"] and document["resource_name"] == "Tools"
        assert header(answer, b"access-control-allow-origin") == "*"
    other = run(context, "/.well-known/oauth-protected-resource/other", method=b"GET")
    assert isinstance(other, Answer) and other.status == 404
    preflight = run(context, "/.well-known/oauth-protected-resource", method=b"OPTIONS")
    assert isinstance(preflight, Answer) and preflight.status == 204
    post = run(context, "/.well-known/oauth-protected-resource", method=b"POST")
    assert isinstance(post, Answer) and post.status == 405


def test_prm_resource_keeps_the_port_the_client_typed(context: AuthContext) -> None:
    answer = decide(
        policy(),
        context,
        scheme="http",
        method=b"GET",
        path="/.well-known/oauth-protected-resource/mcp",
        headers=[(b"host", b"MCP.example.com:8080")],
        now=NOW,
    )
    assert isinstance(answer, Answer) and body_of(answer)["resource"] == "http://mcp.example.com:8080/mcp"


def test_authorization_server_paths_go_to_the_authorization_server(context: AuthContext) -> None:
    for path in ("/authorize", "/token", "/register", "/.well-known/oauth-authorization-server"):
        assert isinstance(run(context, path, method=b"GET"), ToAuthorizationServer), path


def test_public_paths_need_no_token_but_lose_forged_headers(context: AuthContext) -> None:
    p = policy(public_paths=["/health"])
    forged = [(b"x-auth-user", b"mallory"), (b"authorization", b"Bearer junk")]
    for path, method, extra in [
        ("/health", b"GET", []),
        ("/.well-known/acme-challenge/abc", b"GET", []),
        # A public path's preflight is the upstream's to answer, like any request there.
        ("/health", b"OPTIONS", [(b"origin", b"https://x.test"), (b"access-control-request-method", b"GET")]),
    ]:
        decision = run(context, path, method=method, headers=[*forged, *extra], p=p)
        assert isinstance(decision, Forward), path
        assert all(n not in (b"x-auth-user", b"authorization") for n, _ in upstream(decision))
    # A plain OPTIONS (not a CORS preflight) still needs a token.
    assert isinstance(run(context, "/mcp", method=b"OPTIONS", p=p), Answer)


def test_preflights_are_answered_here_and_relayed_answers_carry_cors(
    keys: SigningKeys, context: AuthContext
) -> None:
    preflight = [
        (b"origin", b"https://inspector.example"),
        (b"access-control-request-method", b"POST"),
        (b"access-control-request-headers", b"authorization, content-type, mcp-protocol-version"),
    ]
    answer = run(context, "/mcp", method=b"OPTIONS", headers=preflight)
    assert isinstance(answer, Answer) and answer.status == 204 and answer.body == b""
    assert header(answer, b"access-control-allow-origin") == "*" and header(answer, b"vary") is None
    assert header(answer, b"access-control-allow-methods") == "GET, POST, DELETE, OPTIONS"
    allowed = (header(answer, b"access-control-allow-headers") or "").lower()
    for name in ("authorization", "content-type", "mcp-session-id", "mcp-protocol-version", "last-event-id"):
        assert name in allowed, name
    listed = policy(allowed_origins=["https://inspector.example"])
    echoed = run(context, "/mcp", method=b"OPTIONS", headers=preflight, p=listed)
    assert isinstance(echoed, Answer) and echoed.status == 204
    assert header(echoed, b"access-control-allow-origin") == "https://inspector.example"
    assert header(echoed, b"vary") == "Origin"
    other = [(b"origin", b"https://evil.example"), (b"access-control-request-method", b"POST")]
    refused = run(context, "/mcp", method=b"OPTIONS", headers=other, p=listed)
    assert isinstance(refused, Answer) and refused.status == 403
    browser = run(context, bearer=token(keys), headers=[(b"origin", b"https://inspector.example")], p=listed)
    assert isinstance(browser, Forward) and browser.cors is not None
    assert browser.cors.allow_origin == b"https://inspector.example"
    not_browser = run(context, bearer=token(keys))
    assert isinstance(not_browser, Forward) and not_browser.cors is None


def test_origin_allowlist(keys: SigningKeys, context: AuthContext) -> None:
    p = policy(allowed_origins=["https://app.example.com"])
    good = run(context, bearer=token(keys), headers=[(b"origin", b"https://app.example.com")], p=p)
    assert isinstance(good, Forward)
    same = run(context, bearer=token(keys), headers=[(b"origin", b"https://MCP.example.com:443")], p=p)
    assert isinstance(same, Forward)
    assert isinstance(run(context, bearer=token(keys), p=p), Forward)  # no Origin: not a browser
    for origin in (b"https://evil.example.com", b"null", b"https://app.example.com.evil.com"):
        bad = run(context, bearer=token(keys), headers=[(b"origin", origin)], p=p)
        assert isinstance(bad, Answer) and bad.status == 403, origin
        assert "operator" in body_of(bad)["error_description"]
    # Without an allowlist Origin is not checked.
    assert isinstance(run(context, bearer=token(keys), headers=[(b"origin", b"https://x.test")]), Forward)


def test_bad_host_is_400(context: AuthContext) -> None:
    decision = decide(
        policy(), context, scheme="https", method=b"GET", path="/mcp", headers=[(b"host", b"a b")], now=NOW
    )
    assert isinstance(decision, Answer) and decision.status == 400


def test_unreadable_protection_fails_closed(context: AuthContext) -> None:
    answer = run(context, use_policy=False)
    assert isinstance(answer, Answer) and answer.status == 503


def rpc(method: str, **params: Any) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()


def test_mcp_headers_ask_for_a_body_check(keys: SigningKeys, context: AuthContext) -> None:
    headers = [(b"content-type", b"application/json"), (b"mcp-method", b"tools/call"), (b"mcp-name", b"echo")]
    decision = run(context, bearer=token(keys), headers=headers)
    assert isinstance(decision, Forward) and decision.mcp_check == McpCheck("tools/call", "echo")
    assert check_body(decision.mcp_check, rpc("tools/call", name="echo")) is None
    mismatch = check_body(decision.mcp_check, rpc("tools/call", name="rm_rf"))
    assert (
        isinstance(mismatch, Answer)
        and mismatch.status == 400
        and "rm_rf" in body_of(mismatch)["error_description"]
    )
    too_big = check_body(decision.mcp_check, None)
    assert isinstance(too_big, Answer) and too_big.status == 413
    assert str(MAX_CHECKED_BODY_BYTES) in body_of(too_big)["error_description"]
    # Not a JSON POST: nothing to check against.
    for method, content_type in [(b"GET", b"application/json"), (b"POST", b"text/plain")]:
        other = run(
            context,
            method=method,
            bearer=token(keys),
            headers=[(b"content-type", content_type), (b"mcp-method", b"tools/call")],
        )
        assert isinstance(other, Forward) and other.mcp_check is None


def test_headers_the_gate_judges_must_not_repeat(keys: SigningKeys, context: AuthContext) -> None:
    for name in (b"mcp-method", b"mcp-name", b"content-type", b"origin"):
        answer = run(context, bearer=token(keys), headers=[(name, b"a"), (name, b"b")])
        assert isinstance(answer, Answer) and answer.status == 400, name
        assert name.decode() in body_of(answer)["error_description"]


def test_scheme_from_a_trusted_proxy_only() -> None:
    from data_plane.auth.gate import effective_scheme

    headers = [(b"x-forwarded-proto", b"https, http")]
    assert effective_scheme("http", headers, trusted_peer=True) == "https"
    assert effective_scheme("http", headers, trusted_peer=False) == "http"
    assert effective_scheme("http", [(b"x-forwarded-proto", b"gopher")], trusted_peer=True) == "http"


def test_authorization_server_cookies_never_reach_upstream(keys: SigningKeys, context: AuthContext) -> None:
    from control_plane.oauth.cookies import CONSENT_COOKIE, FLOW_COOKIE, SESSION_COOKIE

    cookie = f"app=1; {SESSION_COOKIE}=s.sig; {FLOW_COOKIE}=f; theme=dark; {CONSENT_COOKIE}=c".encode()
    decision = run(context, bearer=token(keys), headers=[(b"cookie", cookie)])
    assert isinstance(decision, Forward)
    assert [v for n, v in upstream(decision) if n == b"cookie"] == [b"app=1; theme=dark"]
    only_ours = run(context, bearer=token(keys), headers=[(b"cookie", f"{SESSION_COOKIE}=s".encode())])
    assert isinstance(only_ours, Forward) and all(n != b"cookie" for n, _ in upstream(only_ours))


def test_machine_tokens_need_allowed_clients_and_user_rules_never_admit_them(
    keys: SigningKeys, context: AuthContext
) -> None:
    claims = {
        "iss": ISSUER,
        "sub": "client:job",
        "aud": RESOURCE,
        "exp": NOW + 3600,
        "iat": NOW,
        "jti": "jti-m",
        "scope": "mcp",
        "client_id": "job",
    }
    machine = keys.sign(claims)
    refused = run(context, bearer=machine, p=policy(allowed_users=["*"], allowed_orgs=["acme"]))
    assert isinstance(refused, Answer) and refused.status == 403
    assert "'job'" in body_of(refused)["error_description"]
    admitted = run(context, bearer=machine, p=policy(allowed_clients=["job"]))
    assert isinstance(admitted, Forward) and admitted.login == "client:job"
    sent = dict(upstream(admitted))
    assert sent[b"x-auth-subject"] == b"client:job" and b"x-auth-user" not in sent  # no empty user header
    # A user's token obtained through that same client is judged as the user's, not admitted by the client.
    user_token = token(keys, client_id="job", login="mallory")
    refused = run(context, bearer=user_token, p=policy(allowed_clients=["job"]))
    assert isinstance(refused, Answer) and refused.status == 403
