"""OAuth protection enforced by the real data plane (`python -m data_plane`) on real sockets: PRM documents,
401/403 challenges, token only from the Authorization header, Authorization and forged identity headers
never reaching upstream, our identity headers added, AS paths forwarded to the AUTH_HOST proxy, public
paths, Mcp-Method/Mcp-Name checked against the body, Origin allowlist, revocation within 1 s, fail-closed
on an unreadable config, and unprotected proxies untouched.

Tokens are signed with a real RSA key and the auth config is written as the control plane writes it
(tests/data_plane/protected_plane.py). The full OAuth flow through the control plane is covered in
tests/auth."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from control_plane.oauth.signing import SigningKeys
from data_plane.sync.config_sync import REVOCATION_RECONCILE_SECONDS
from shared import keys
from shared.models import ProxyTarget
from tests.data_plane.backends import HttpBackend, WebSocketBackend
from tests.data_plane.conftest import DataPlane, start_data_plane
from tests.data_plane.helpers import echo_headers, raw_exchange
from tests.data_plane.protected_plane import (
    AUTH_HOST,
    HOST,
    ISSUER,
    call,
    protect,
    resource,
    token,
    write_auth,
)
from tests.harness.services import RedisServer

pytestmark = pytest.mark.auth

REVOCATION_DEADLINE_SECONDS = 1.0  # the issue's bound


def test_prm_document_at_both_paths_names_what_the_client_typed(
    plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    protect(redis_sync, plane, http_backend.url)
    for path in ("/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"):
        status, headers, body = call(plane, path, method="GET")
        assert status == 200, body
        assert headers["content-type"] == "application/json"
        document = json.loads(body)
        assert document["resource"] == resource(plane)
        assert document["authorization_servers"] == [ISSUER]
        assert document["scopes_supported"] == ["mcp"] and document["bearer_methods_supported"] == ["header"]
        assert document["resource_name"] == "Test tools"
    # Behind a trusted TLS-terminating proxy (loopback is trusted by default) the client typed https.
    _s, _h, body = call(
        plane, "/.well-known/oauth-protected-resource", method="GET", headers={"X-Forwarded-Proto": "https"}
    )
    assert json.loads(body)["resource"] == f"https://{HOST}:{plane.http_port}/mcp"
    status, headers, body = call(plane, "/.well-known/oauth-protected-resource", method="HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0
    assert http_backend.requests == []  # answered by the data plane itself


def test_no_token_is_401_with_a_challenge_and_nothing_reaches_upstream(
    plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    protect(redis_sync, plane, http_backend.url)
    status, headers, body = call(plane)
    assert status == 401
    prm = f"http://{HOST}:{plane.http_port}/.well-known/oauth-protected-resource/mcp"
    assert headers["www-authenticate"] == f'Bearer resource_metadata="{prm}", scope="mcp"'
    assert json.loads(body)["error"] == "unauthorized"
    assert "WWW-Authenticate" in headers["access-control-expose-headers"]
    assert http_backend.requests == []


def test_valid_token_reaches_upstream_without_authorization_and_with_our_identity(
    plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend, signer: SigningKeys
) -> None:
    protect(redis_sync, plane, http_backend.url)
    forged = {
        "X-Auth-User": "mallory",
        "X-Auth-Admin": "yes",
        "X-Forwarded-User": "mallory",
        "Remote-User": "mallory",
        "Mcp-Session-Id": "session-1",
    }
    status, _headers, body = call(plane, bearer=token(signer, plane), headers=forged, body=b'{"x": 1}')
    assert status == 200, body
    seen = echo_headers(body)
    assert "authorization" not in seen
    assert seen["x-auth-user"] == ["alice"] and seen["x-auth-subject"] == ["github:1001"]
    assert seen["x-auth-scopes"] == ["mcp"]
    for name in ("x-auth-admin", "x-forwarded-user", "remote-user"):
        assert name not in seen, name
    assert seen["mcp-session-id"] == ["session-1"]
    assert json.loads(body)["body"] == '{"x": 1}'


def test_token_in_the_query_string_is_not_a_token(
    plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend, signer: SigningKeys
) -> None:
    protect(redis_sync, plane, http_backend.url)
    status, headers, _body = call(plane, f"/mcp?access_token={token(signer, plane)}")
    assert status == 401 and "resource_metadata=" in headers["www-authenticate"]
    assert http_backend.requests == []


@pytest.mark.parametrize(
    ("overrides", "status", "error"),
    [
        ({"scope": "other"}, 403, "insufficient_scope"),
        ({"login": "bob", "orgs": []}, 403, "access_denied"),
        ({"aud": "http://other.test/mcp"}, 401, "invalid_token"),
        ({"iss": "https://evil.example"}, 401, "invalid_token"),
        ({"exp": int(time.time()) - 3600}, 401, "invalid_token"),
    ],
)
def test_refusals(
    plane: DataPlane,
    redis_sync: redis.Redis,
    http_backend: HttpBackend,
    signer: SigningKeys,
    overrides: dict[str, Any],
    status: int,
    error: str,
) -> None:
    protect(redis_sync, plane, http_backend.url)
    got, headers, body = call(plane, bearer=token(signer, plane, **overrides))
    assert got == status, body
    document = json.loads(body)
    assert document["error"] == error
    challenge = headers["www-authenticate"]
    assert challenge.startswith(f'Bearer resource_metadata="http://{HOST}:{plane.http_port}/')
    if error == "insufficient_scope":
        assert 'error="insufficient_scope"' in challenge and 'scope="mcp"' in challenge
    if error == "access_denied":
        assert "'bob' is not allowed" in document["error_description"]
        assert "operator" in document["error_description"] and "alice" not in body.decode()
    if error == "invalid_token":
        assert 'error="invalid_token"' in challenge
    assert http_backend.requests == []


def test_refused_request_with_a_body_keeps_the_connection_usable(
    plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend, signer: SigningKeys
) -> None:
    """A 401 to a POST must not reset the connection under the client (it would lose the 401): the body
    is read and dropped, and the same connection then carries the authorised retry."""
    protect(redis_sync, plane, http_backend.url)
    conn = http.client.HTTPConnection("127.0.0.1", plane.http_port, timeout=10)
    try:
        payload = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "pad": "x" * 100_000})
        host = f"{HOST}:{plane.http_port}"
        conn.request("POST", "/mcp", body=payload, headers={"Host": host})
        first = conn.getresponse()
        first.read()
        assert first.status == 401
        conn.request(
            "POST",
            "/mcp",
            body=payload,
            headers={"Host": host, "Authorization": f"Bearer {token(signer, plane)}"},
        )
        second = conn.getresponse()
        assert second.status == 200 and json.loads(second.read())["body_length"] == len(payload)
    finally:
        conn.close()
    assert http_backend.connections_accepted == 1


def test_authorization_server_paths_are_forwarded_to_the_auth_host_proxy(
    plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    auth_server = HttpBackend()
    try:
        write_auth(redis_sync, plane, proxies=[ProxyTarget(hostname=AUTH_HOST, target_url=auth_server.url)])
        protect(redis_sync, plane, http_backend.url)
        for path in (
            "/.well-known/oauth-authorization-server",
            "/authorize?client_id=x",
            "/token",
            "/register",
        ):
            method = "GET" if not path.startswith(("/token", "/register")) else "POST"
            status, _headers, body = call(
                plane,
                path.replace("/echo", ""),
                method=method,
                headers={"Authorization": "Basic Y2xpZW50OnM="},
            )
            assert status == 200, (path, body)
            echoed = json.loads(body)
            assert echoed["target"] == path
            # Client authentication at the token endpoint must reach the authorization server.
            assert echo_headers(body)["authorization"] == ["Basic Y2xpZW50OnM="]
        assert http_backend.requests == []
    finally:
        auth_server.close()


def test_authorization_server_paths_without_an_auth_host_proxy_are_502(
    plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    protect(redis_sync, plane, http_backend.url)
    status, _headers, body = call(plane, "/token")
    assert status == 502 and AUTH_HOST.encode() in body


def test_public_paths_need_no_token_and_still_lose_forged_identity(
    plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    protect(redis_sync, plane, http_backend.url, public_paths=["/echo"])
    status, _headers, body = call(
        plane, "/echo", method="GET", headers={"X-Auth-User": "mallory", "Authorization": "Bearer junk"}
    )
    assert status == 200, body
    seen = echo_headers(body)
    assert "x-auth-user" not in seen and "authorization" not in seen
    # Everything else on the host stays protected.
    assert call(plane, "/mcp")[0] == 401


def rpc(method: str, **params: Any) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()


def test_mcp_headers_must_match_the_body(
    plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend, signer: SigningKeys
) -> None:
    protect(redis_sync, plane, http_backend.url)
    bearer = token(signer, plane)
    json_headers = {"Content-Type": "application/json", "Mcp-Method": "tools/call", "Mcp-Name": "echo"}
    status, _h, body = call(plane, bearer=bearer, headers=json_headers, body=rpc("tools/call", name="echo"))
    assert status == 200, body
    assert json.loads(body)["body"] == rpc("tools/call", name="echo").decode()  # streamed on intact
    before = len(http_backend.requests)
    status, _h, body = call(plane, bearer=bearer, headers=json_headers, body=rpc("tools/call", name="rm_rf"))
    assert status == 400 and "rm_rf" in json.loads(body)["error_description"]
    status, _h, body = call(
        plane,
        bearer=bearer,
        headers={**json_headers, "Mcp-Method": "tools/list"},
        body=rpc("tools/call", name="echo"),
    )
    assert status == 400
    assert len(http_backend.requests) == before  # refused bodies never went upstream


def test_checked_headers_are_unambiguous_and_any_body_gets_an_answer(
    plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend, signer: SigningKeys
) -> None:
    """A second Mcp-Name (or Mcp-Method, Content-Type, Origin) would let the gate check one copy while the
    upstream reads the other; a body nested deeper than the JSON parser's stack is refused, not a crash."""
    protect(redis_sync, plane, http_backend.url)
    bearer = token(signer, plane)
    body = rpc("tools/call", name="rm_rf")
    for name, values in (
        ("Mcp-Name", ("safe", "rm_rf")),
        ("Mcp-Method", ("tools/list", "tools/call")),
        ("Content-Type", ("text/plain", "application/json")),
        ("Origin", ("https://a.example", "https://b.example")),
    ):
        head = (
            f"POST /mcp HTTP/1.1\r\nHost: {HOST}:{plane.http_port}\r\nAuthorization: Bearer {bearer}\r\n"
            f"Mcp-Method: tools/call\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
            + "".join(f"{name}: {value}\r\n" for value in values)
            + "\r\n"
        ).encode()
        answer = raw_exchange(plane, head + body)
        assert answer.startswith(b"HTTP/1.1 400 ") and f"one {name.lower()}".encode() in answer, name
    deep = b"[" * 100_000
    headers = {"Content-Type": "application/json", "Mcp-Method": "tools/call"}
    status, _h, answer = call(plane, bearer=bearer, headers=headers, body=deep)
    assert status == 400 and b"not JSON" in answer
    assert http_backend.requests == []


def test_mcp_header_check_on_a_chunked_body(
    plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend, signer: SigningKeys
) -> None:
    protect(redis_sync, plane, http_backend.url)
    message = rpc("tools/call", name="echo", arguments={"text": "y" * 5000})
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (message[:100], message[100:]))
    head = (
        f"POST /mcp HTTP/1.1\r\nHost: {HOST}:{plane.http_port}\r\n"
        f"Authorization: Bearer {token(signer, plane)}\r\n"
        "Content-Type: application/json\r\nMcp-Method: tools/call\r\nMcp-Name: echo\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    ).encode()
    response = raw_exchange(plane, head + chunks + b"0\r\n\r\n", timeout=10)
    assert response.startswith(b"HTTP/1.1 200"), response[:300]
    assert json.loads(response.split(b"\r\n\r\n", 1)[1])["body_length"] == len(message)


def test_oversized_body_with_mcp_headers_is_413(
    plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend, signer: SigningKeys
) -> None:
    protect(redis_sync, plane, http_backend.url)
    big = rpc("tools/call", name="echo", arguments={"text": "z" * (1024 * 1024 + 10)})
    headers = {"Content-Type": "application/json", "Mcp-Method": "tools/call", "Mcp-Name": "echo"}
    status, _h, body = call(plane, bearer=token(signer, plane), headers=headers, body=big)
    assert status == 413, body
    # Without the headers there is nothing to check: a large body streams through.
    status, _h, body = call(
        plane, bearer=token(signer, plane), headers={"Content-Type": "application/json"}, body=big
    )
    assert status == 200 and json.loads(body)["body_length"] == len(big)


def test_origin_allowlist(
    plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend, signer: SigningKeys
) -> None:
    protect(redis_sync, plane, http_backend.url, allowed_origins=["https://inspector.example"])
    bearer = token(signer, plane)
    status, headers, _body = call(plane, bearer=bearer, headers={"Origin": "https://inspector.example"})
    assert status == 200
    # A browser client can read the MCP session and auth headers of the relayed answer.
    exposed = headers["access-control-expose-headers"]
    assert exposed == "Mcp-Session-Id, MCP-Protocol-Version, WWW-Authenticate"
    assert "access-control-expose-headers" not in call(plane, bearer=bearer)[1]
    status, _h, body = call(plane, bearer=bearer, headers={"Origin": "https://evil.example"})
    assert status == 403 and "allowed origins" in json.loads(body)["error_description"]
    assert call(plane, bearer=bearer)[0] == 200  # not a browser: no Origin to check


def test_revoked_token_is_refused_within_a_second(
    plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend, signer: SigningKeys
) -> None:
    protect(redis_sync, plane, http_backend.url)
    jti = "jti-to-revoke"
    bearer = token(signer, plane, jti=jti)
    assert call(plane, bearer=bearer)[0] == 200
    exp = int(time.time()) + 600
    # What the control plane's /revoke does: the set and the message in one transaction.
    with redis_sync.pipeline(transaction=True) as pipe:
        pipe.zadd(keys.oauth_revoked_jtis(), {jti: exp})
        pipe.publish(keys.oauth_revocations_channel(), f"{jti} {exp}")
        pipe.execute()
    revoked_at = time.monotonic()
    status = 200
    while time.monotonic() - revoked_at < REVOCATION_DEADLINE_SECONDS:
        status, _h, body = call(plane, bearer=bearer)
        if status == 401:
            assert "revoked" in json.loads(body)["error_description"]
            break
        time.sleep(0.02)
    assert status == 401, "revoked token still accepted after 1 s"
    assert call(plane, bearer=token(signer, plane))[0] == 200  # other tokens unaffected


def test_revocations_already_stored_are_refused_after_a_restart(
    redis_sync: redis.Redis,
    redis_server: RedisServer,
    tmp_path: Path,
    http_backend: HttpBackend,
    signer: SigningKeys,
) -> None:
    redis_sync.set(keys.oauth_jwks(), json.dumps(signer.jwks))
    redis_sync.zadd(keys.oauth_revoked_jtis(), {"old-jti": time.time() + 600})
    dp = start_data_plane(redis_server, tmp_path, {"OAUTH_ISSUER": ISSUER})
    try:
        protect(redis_sync, dp, http_backend.url)
        assert call(dp, bearer=token(signer, dp, jti="old-jti"))[0] == 401
        assert call(dp, bearer=token(signer, dp))[0] == 200
    finally:
        dp.service.stop()


def test_unreadable_auth_config_fails_closed(
    plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend, signer: SigningKeys
) -> None:
    protect(redis_sync, plane, http_backend.url)
    write_auth(redis_sync, plane, raw_auth={HOST: '{"hostname": "mcp.test", "allowed_users": 7}'})
    status, _h, body = call(plane, bearer=token(signer, plane))
    assert status == 503 and "operator" in json.loads(body)["error_description"]
    assert http_backend.requests == []


def test_removing_protection_takes_effect_and_unprotected_proxies_are_untouched(
    plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    protect(redis_sync, plane, http_backend.url)
    write_auth(redis_sync, plane, proxies=[ProxyTarget(hostname="open.test", target_url=http_backend.url)])
    status, _h, body = call(plane, "/echo", host="open.test", headers={"Authorization": "Bearer whatever"})
    assert status == 200 and echo_headers(body)["authorization"] == ["Bearer whatever"]
    assert call(plane)[0] == 401
    write_auth(redis_sync, plane, delete_auth=[HOST])
    assert call(plane, "/echo")[0] == 200


def test_websocket_upgrade_on_a_protected_host_needs_a_token(
    plane: DataPlane, redis_sync: redis.Redis, signer: SigningKeys
) -> None:
    backend = WebSocketBackend()
    try:
        protect(redis_sync, plane, backend.url)
        upgrade = (
            f"GET /mcp/ws HTTP/1.1\r\nHost: {HOST}:{plane.http_port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        )
        for auth, expected in [
            ("", b"HTTP/1.1 401"),
            (f"Authorization: Bearer {token(signer, plane)}\r\n", b"HTTP/1.1 101"),
        ]:
            with socket.create_connection(("127.0.0.1", plane.http_port), timeout=10) as sock:
                sock.sendall((upgrade + auth + "X-Auth-User: mallory\r\n\r\n").encode())
                response = sock.recv(65536)
            assert response.startswith(expected), response[:200]
        # The backend records the handshake's headers just after it has sent the 101: wait for the record.
        deadline = time.monotonic() + 5
        while not backend.request_headers:
            assert time.monotonic() < deadline, "the WebSocket backend never saw the upgrade"
            time.sleep(0.01)
        assert backend.request_headers[-1]["x-auth-user"] == "alice"
        assert "authorization" not in backend.request_headers[-1]
    finally:
        backend.close()


def test_revocation_reaches_every_replica_within_a_second(
    plane: DataPlane,
    redis_sync: redis.Redis,
    redis_server: RedisServer,
    tmp_path: Path,
    http_backend: HttpBackend,
    signer: SigningKeys,
) -> None:
    second = start_data_plane(redis_server, tmp_path / "second", {"OAUTH_ISSUER": ISSUER})
    try:
        protect(redis_sync, plane, http_backend.url)
        second.wait_for_version(int(redis_sync.get(keys.config_version()) or 0))  # type: ignore[arg-type]
        bearers = {dp.http_port: token(signer, dp, jti="shared-jti") for dp in (plane, second)}
        assert all(call(dp, bearer=bearers[dp.http_port])[0] == 200 for dp in (plane, second))
        exp = int(time.time()) + 600
        with redis_sync.pipeline(transaction=True) as pipe:
            pipe.zadd(keys.oauth_revoked_jtis(), {"shared-jti": exp})
            pipe.publish(keys.oauth_revocations_channel(), f"shared-jti {exp}")
            pipe.execute()
        revoked_at = time.monotonic()
        pending = {plane.http_port: plane, second.http_port: second}
        while pending and time.monotonic() - revoked_at < REVOCATION_DEADLINE_SECONDS:
            for port, dp in list(pending.items()):
                if call(dp, bearer=bearers[port])[0] == 401:
                    del pending[port]
            time.sleep(0.02)
        assert not pending, f"replicas on ports {list(pending)} still accept the revoked token after 1 s"
    finally:
        second.service.stop()


def test_missed_revocation_message_and_key_rotation_converge_without_a_config_change(
    plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend, signer: SigningKeys
) -> None:
    """Neither a revocation nor a new signing key bumps the config version; a replica that missed the
    message (or was never told) picks both up on its periodic re-read."""
    protect(redis_sync, plane, http_backend.url)
    revoked = token(signer, plane, jti="quietly-revoked")
    assert call(plane, bearer=revoked)[0] == 200
    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    rotated = SigningKeys.load(base64.b64encode(pem).decode())
    new_key_token = token(rotated, plane)
    assert call(plane, bearer=new_key_token)[0] == 401  # unknown key
    redis_sync.zadd(keys.oauth_revoked_jtis(), {"quietly-revoked": time.time() + 600})  # no PUBLISH
    redis_sync.set(keys.oauth_jwks(), json.dumps(rotated.jwks))  # no version bump
    deadline = time.monotonic() + 3 * REVOCATION_RECONCILE_SECONDS
    while time.monotonic() < deadline:
        if call(plane, bearer=revoked)[0] == 401 and call(plane, bearer=new_key_token)[0] == 200:
            break
        time.sleep(0.1)
    assert call(plane, bearer=revoked)[0] == 401
    assert call(plane, bearer=new_key_token)[0] == 200


def test_wildcard_proxy_protection(
    plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend, signer: SigningKeys
) -> None:
    protect(redis_sync, plane, http_backend.url, hostname="*.wild.test")
    host = "a.b.wild.test"
    status, headers, _body = call(plane, host=host)
    assert status == 401 and f"http://{host}:{plane.http_port}/" in headers["www-authenticate"]
    prm = json.loads(call(plane, "/.well-known/oauth-protected-resource", method="GET", host=host)[2])
    assert prm["resource"] == f"http://{host}:{plane.http_port}/mcp"
    bearer = token(signer, plane, aud=prm["resource"])
    assert call(plane, bearer=bearer, host=host)[0] == 200
