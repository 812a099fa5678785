"""A browser MCP client (the MCP Inspector in a browser, a web chat client) calling a protected proxy on a
real data plane: its CORS preflight is answered by the data plane (the upstream, like the MCP SDK's
endpoint, answers OPTIONS with 405 and must never see a tokenless preflight or its body), and the
authorised call's answer carries Access-Control-Allow-Origin, so the browser hands it to the client."""

from __future__ import annotations

import json
import socket

import pytest
import redis

from control_plane.oauth.signing import SigningKeys
from tests.data_plane.backends import HttpBackend
from tests.data_plane.conftest import DataPlane
from tests.data_plane.protected_plane import HOST, call, protect, token

pytestmark = pytest.mark.auth

INSPECTOR = "http://localhost:6274"  # where the MCP Inspector's web UI runs


REQUESTED_HEADERS = "authorization,content-type,mcp-protocol-version,mcp-session-id"


def preflight(plane: DataPlane, origin: str, path: str = "/mcp") -> tuple[int, dict[str, str], bytes]:
    """What Chromium sends before a cross-origin POST with Authorization and MCP headers (and, as some
    clients' fetch polyfills do, a stray body the proxy must drop rather than forward)."""
    return call(
        plane,
        path,
        method="OPTIONS",
        body=b"ignored",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": REQUESTED_HEADERS,
            "Sec-Fetch-Mode": "cors",
            "Referer": origin + "/",
        },
    )


def test_browser_client_preflight_then_authorised_call(
    plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend, signer: SigningKeys
) -> None:
    protect(redis_sync, plane, http_backend.url)
    assert (
        call(plane, "/mcp", method="OPTIONS", bearer=token(signer, plane))[0] == 405
    )  # what the upstream says
    before = len(http_backend.requests)
    status, headers, body = preflight(plane, INSPECTOR)
    assert status == 204, body
    assert headers["access-control-allow-origin"] == "*"
    assert "POST" in headers["access-control-allow-methods"]
    allowed = {h.strip().lower() for h in headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "mcp-protocol-version", "mcp-session-id"} <= allowed
    assert {"last-event-id"} <= allowed
    assert len(http_backend.requests) == before  # the upstream never saw the preflight
    status, headers, body = call(
        plane,
        "/mcp",
        bearer=token(signer, plane),
        headers={
            "Origin": INSPECTOR,
            "Content-Type": "application/json",
            "MCP-Protocol-Version": "2025-11-25",
        },
    )
    assert status == 200, body
    assert headers["access-control-allow-origin"] == "*"
    assert "Mcp-Session-Id" in headers["access-control-expose-headers"]
    assert json.loads(body)["method"] == "POST"


def test_preflights_with_an_origin_allowlist(
    plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend, signer: SigningKeys
) -> None:
    protect(redis_sync, plane, http_backend.url, allowed_origins=[INSPECTOR])
    status, headers, _body = preflight(plane, INSPECTOR)
    assert status == 204
    assert headers["access-control-allow-origin"] == INSPECTOR and headers["vary"] == "Origin"
    status, headers, _body = preflight(plane, "https://evil.example")
    assert status == 403 and "access-control-allow-methods" not in headers
    status, headers, _body = call(plane, "/mcp", bearer=token(signer, plane), headers={"Origin": INSPECTOR})
    assert status == 200
    assert headers["access-control-allow-origin"] == INSPECTOR and headers["vary"] == "Origin"
    assert http_backend.requests and all(r["method"] != "OPTIONS" for r in http_backend.requests)


def test_preflight_keeps_the_connection_for_the_call(
    plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend, signer: SigningKeys
) -> None:
    """A browser sends the call on the connection its preflight used: the preflight's body is read and
    dropped, not left to be parsed as the next request."""
    protect(redis_sync, plane, http_backend.url)
    host = f"{HOST}:{plane.http_port}"
    head = (
        f"OPTIONS /mcp HTTP/1.1\r\nHost: {host}\r\nOrigin: {INSPECTOR}\r\n"
        "Access-Control-Request-Method: POST\r\nContent-Length: 30\r\n\r\n"
    ).encode() + b"GET /smuggled HTTP/1.1\r\nX: y\r\n"
    call_head = (
        f"POST /mcp HTTP/1.1\r\nHost: {host}\r\nOrigin: {INSPECTOR}\r\n"
        f"Authorization: Bearer {token(signer, plane)}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    ).encode()
    with socket.create_connection(("127.0.0.1", plane.http_port), timeout=10) as sock:
        sock.sendall(head + call_head)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 204 ") and answer.count(b"HTTP/1.1 200 ") == 1
    assert [r["target"] for r in http_backend.requests] == ["/mcp"]
