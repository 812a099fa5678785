"""Identity and forwarding headers a client might forge, against a real data plane and a real WSGI upstream
(wsgiref, which reads `X_Auth_User` and `X-Auth-User` alike as HTTP_X_AUTH_USER): a valid token plus
`Connection: X-Auth-User` and `X_Auth_User: alice` no longer makes the upstream believe alice; forwarding
headers from untrusted clients never arrive; a Connection header cannot unframe the request. Then the
header rules themselves, sans-IO, for every documented name and spelling."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from control_plane.oauth.signing import SigningKeys
from data_plane.protocol.forwarding import (
    FORWARDING_HEADERS,
    IDENTITY_HEADERS,
    AssertedIdentity,
    upstream_request_headers,
)
from data_plane.routing.route_table import ProxyEntry, build_table
from shared.models import ProxyTarget
from tests.data_plane.backends import HttpBackend, WebSocketBackend, WsgiBackend
from tests.data_plane.conftest import DataPlane, start_data_plane
from tests.data_plane.helpers import configure, echo_headers, get, proxy_to
from tests.data_plane.protected_plane import HOST, call, protect, token
from tests.harness.services import RedisServer

pytestmark = [pytest.mark.proxy, pytest.mark.auth]


@pytest.fixture
def wsgi_backend() -> Iterator[WsgiBackend]:
    backend = WsgiBackend()
    try:
        yield backend
    finally:
        backend.close()


def test_a_token_holder_cannot_claim_another_identity(
    plane: DataPlane, redis_sync: redis.Redis, wsgi_backend: WsgiBackend, signer: SigningKeys
) -> None:
    """The review's attack: bob's own valid token, Connection naming our identity headers, and underscore
    spellings claiming alice. The upstream must see bob, and only bob."""
    protect(redis_sync, plane, wsgi_backend.url, allowed_users=["alice", "bob"])
    bob = token(signer, plane, login="bob", sub="github:1002", orgs=[])
    status, _h, body = call(
        plane,
        "/mcp",
        bearer=bob,
        headers={
            "Connection": "X-Auth-User, X-Auth-Subject, X-Auth-Scopes, X-Forwarded-For, X-Request-Id",
            "X_Auth_User": "alice",
            "X_Auth_Subject": "github:1001",
            "x_AUTH_scopes": "mcp admin",
            "X-Forwarded-Groups": "admins",
            "X_Forwarded_Groups": "admins",
            "X_Forwarded_User": "alice",
            "Remote_User": "alice",
            "X-Remote-User": "alice",
            "X_Real_IP": "6.6.6.6",
            "X_Request_Id": "forged",
            "Mcp_Method": "tools/list",
        },
    )
    assert status == 200, body
    environ = json.loads(body)
    assert environ["HTTP_X_AUTH_USER"] == "bob"
    assert environ["HTTP_X_AUTH_SUBJECT"] == "github:1002"
    assert environ["HTTP_X_AUTH_SCOPES"] == "mcp"
    for forged in (
        "HTTP_X_FORWARDED_GROUPS",
        "HTTP_X_FORWARDED_USER",
        "HTTP_REMOTE_USER",
        "HTTP_X_REMOTE_USER",
        "HTTP_X_REAL_IP",
        "HTTP_MCP_METHOD",
    ):
        assert forged not in environ, forged
    assert environ["HTTP_X_FORWARDED_FOR"] == "127.0.0.1"  # ours, not removed by the client's Connection
    assert environ["HTTP_X_REQUEST_ID"] != "forged" and "," not in environ["HTTP_X_REQUEST_ID"]


def test_a_websocket_upgrade_cannot_claim_another_identity(
    plane: DataPlane, redis_sync: redis.Redis, signer: SigningKeys
) -> None:
    backend = WebSocketBackend()
    try:
        protect(redis_sync, plane, backend.url, allowed_users=["alice", "bob"])
        bob = token(signer, plane, login="bob", sub="github:1002", orgs=[])
        upgrade = (
            f"GET /mcp/ws HTTP/1.1\r\nHost: {HOST}:{plane.http_port}\r\nAuthorization: Bearer {bob}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade, X-Auth-User\r\nX_Auth_User: alice\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", plane.http_port), timeout=10) as sock:
            sock.sendall(upgrade.encode())
            assert sock.recv(65536).startswith(b"HTTP/1.1 101 ")
        deadline = time.monotonic() + 5
        while not backend.request_headers:
            assert time.monotonic() < deadline, "the WebSocket backend never saw the upgrade"
            time.sleep(0.01)
        seen = backend.request_headers[-1]
        assert seen["x-auth-user"] == "bob" and "x_auth_user" not in seen
    finally:
        backend.close()


@pytest.fixture
def untrusting_plane(
    redis_sync: redis.Redis, redis_server: RedisServer, tmp_path: Path
) -> Iterator[DataPlane]:
    """A data plane that trusts no loopback peer: the test client is an ordinary internet client."""
    started = start_data_plane(redis_server, tmp_path, {"TRUSTED_PROXY_CIDRS": "10.0.0.0/8"})
    try:
        yield started
    finally:
        started.service.stop()


FORGED_FORWARDING = {
    "X-Real-IP": "6.6.6.6",
    "X-Client-IP": "6.6.6.6",
    "True-Client-IP": "6.6.6.6",
    "CF-Connecting-IP": "6.6.6.6",
    "Forwarded": "for=6.6.6.6;proto=https",
    "X-Forwarded-Port": "443",
    "X-Forwarded-Prefix": "/admin",
    "X-Original-URL": "/admin",
    "X-Original-Forwarded-For": "6.6.6.6",
    "X_Forwarded_For": "6.6.6.6",
    "X_Real_IP": "6.6.6.6",
}


def test_untrusted_clients_forge_no_forwarding_or_identity_header(
    untrusting_plane: DataPlane, redis_sync: redis.Redis, wsgi_backend: WsgiBackend
) -> None:
    configure(redis_sync, untrusting_plane, [proxy_to(wsgi_backend.url)])  # an unprotected proxy
    headers = {**FORGED_FORWARDING, "X-Forwarded-Groups": "admins", "X-Auth-User": "alice", "X-Keep": "1"}
    status, _h, body = get(untrusting_plane, "/x", headers=headers)
    assert status == 200
    environ = json.loads(body)
    assert environ["HTTP_X_FORWARDED_FOR"] == "127.0.0.1" and environ["HTTP_X_FORWARDED_PROTO"] == "http"
    assert environ["HTTP_X_KEEP"] == "1"
    leaked = {k for k in environ if k.startswith("HTTP_")} - {
        "HTTP_HOST",
        "HTTP_ACCEPT_ENCODING",
        "HTTP_X_FORWARDED_FOR",
        "HTTP_X_FORWARDED_PROTO",
        "HTTP_X_FORWARDED_HOST",
        "HTTP_X_REQUEST_ID",
        "HTTP_X_KEEP",
    }
    assert leaked == set()


def test_trusted_proxies_forward_their_headers_but_never_underscore_spellings(
    data_plane: DataPlane, redis_sync: redis.Redis, wsgi_backend: WsgiBackend
) -> None:
    configure(redis_sync, data_plane, [proxy_to(wsgi_backend.url)])  # loopback is trusted by default
    headers = {"X-Real-IP": "6.6.6.6", "X-Forwarded-For": "6.6.6.6", "X_Forwarded_For": "7.7.7.7"}
    status, _h, body = get(data_plane, "/x", headers={**headers, "X-Auth-User": "from-auth-proxy"})
    environ = json.loads(body)
    assert status == 200
    assert environ["HTTP_X_REAL_IP"] == "6.6.6.6"
    assert environ["HTTP_X_FORWARDED_FOR"] == "6.6.6.6, 127.0.0.1"
    assert environ["HTTP_X_AUTH_USER"] == "from-auth-proxy"  # an authenticating proxy in front says who


def test_a_connection_header_cannot_unframe_the_request(
    data_plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    configure(redis_sync, data_plane, [proxy_to(http_backend.url)])
    status, _h, body = get(
        data_plane, "/echo", method="POST", body=b"hello", headers={"Connection": "Content-Length, Host"}
    )
    assert status == 200, body
    echoed = json.loads(body)
    assert echoed["body"] == "hello" and echo_headers(body)["host"] == ["app.test"]


# ---- the rules, sans-IO


def _entry(**overrides: object) -> ProxyEntry:
    proxy = ProxyTarget(hostname="a.test", target_url="http://127.0.0.1:1", **overrides)  # type: ignore[arg-type]
    return build_table(1, [proxy], []).exact["a.test"]


def _upstream(
    headers: list[tuple[bytes, bytes]],
    *,
    trusted: bool,
    asserted: AssertedIdentity | None = None,
    entry: ProxyEntry | None = None,
) -> list[tuple[bytes, bytes]]:
    out, _host = upstream_request_headers(
        [(b"host", b"a.test"), *headers],
        entry=entry or _entry(),
        upstream_host_header=b"127.0.0.1:1",
        client_ip="203.0.113.9",
        scheme=b"https",
        request_id=b"rid",
        trusted_peer=trusted,
        chunked=False,
        asserted=asserted,
    )
    return out


def _spellings(name: bytes) -> list[bytes]:
    return [name, name.replace(b"-", b"_")] if b"-" in name else [name]


@pytest.mark.parametrize(
    "name",
    [
        *sorted(IDENTITY_HEADERS),
        *(b"x-auth-anything", b"x-remote-group", b"x-ms-client-principal-name", b"x-amzn-oidc-identity"),
    ],
)
def test_identity_headers_in_every_spelling(name: bytes) -> None:
    ours = AssertedIdentity(frozenset({b"x-auth-user"}), ((b"x-auth-user", b"bob"),))
    for spelled in _spellings(name):
        sent = [(spelled, b"alice")]
        for trusted in (False, True):
            protected = _upstream(sent, trusted=trusted, asserted=ours)
            assert (spelled, b"alice") not in protected, (spelled, trusted)
            assert (b"x-auth-user", b"bob") in protected
        assert (spelled, b"alice") not in _upstream(sent, trusted=False)  # unprotected, untrusted client
    assert (name, b"alice") in _upstream([(name, b"alice")], trusted=True)  # an auth proxy in front
    assert (name.replace(b"-", b"_"), b"a") not in _upstream([(name.replace(b"-", b"_"), b"a")], trusted=True)


@pytest.mark.parametrize(
    "name", [*sorted(FORWARDING_HEADERS - {b"x-request-id"}), b"x-forwarded-port", b"x-original-url"]
)
def test_forwarding_headers_in_every_spelling(name: bytes) -> None:
    for spelled in _spellings(name):
        assert (spelled, b"v") not in _upstream([(spelled, b"v")], trusted=False), spelled
    assert (name, b"v") in _upstream([(name, b"v")], trusted=True)
    if b"-" in name:
        underscored = name.replace(b"-", b"_")
        assert (underscored, b"v") not in _upstream([(underscored, b"v")], trusted=True)


def test_our_headers_survive_the_clients_connection_header_and_come_last() -> None:
    ours = AssertedIdentity(frozenset({b"x-auth-user"}), ((b"x-auth-user", b"bob"),))
    sent = [
        (b"connection", b"x-auth-user, x-forwarded-for, x-request-id, host, content-length, x-drop"),
        (b"content-length", b"5"),
        (b"x-drop", b"1"),
        (b"x-request-id", b"forged"),
    ]
    out = _upstream(sent, trusted=True, asserted=ours)
    names = [n for n, _ in out]
    assert b"x-drop" not in names and b"connection" not in names
    assert (b"content-length", b"5") in out and (b"host", b"a.test") in out
    assert dict(out)[b"x-request-id"] == b"rid" and names.count(b"x-request-id") == 1
    assert out[-1] == (b"x-auth-user", b"bob")


def test_underscore_spellings_of_headers_the_proxy_sets_removes_or_reads() -> None:
    entry = _entry(request_headers_set={"X-Tenant": "t1"}, request_headers_remove=["X-Secret"])
    sent = [
        (b"x_tenant", b"t2"),
        (b"x_secret", b"s"),
        (b"content_length", b"99"),
        (b"mcp_name", b"rm"),
        (b"transfer_encoding", b"chunked"),
        (b"x_custom_header", b"kept"),
    ]
    out = _upstream(sent, trusted=True, entry=entry)
    assert [n for n, _ in out if b"_" in n] == [b"x_custom_header"]
    assert (b"x-tenant", b"t1") in out
