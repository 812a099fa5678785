"""Request paths against a real data plane: the spellings the security review used to pass scope rules and
public paths (`/%6dcp`, `/health/../mcp`, `/health%2f..%2fmcp`, `/healthz`, and a WebSocket upgrade the same
way) are judged as the path the upstream serves; the upstream gets the normalised target; absolute-form
targets are served when their authority is the Host; encoded slashes only where a proxy allows them."""

from __future__ import annotations

import json
import socket

import pytest
import redis

from control_plane.oauth.signing import SigningKeys
from shared.models import Route, ScopeRule
from tests.data_plane.backends import HttpBackend, WebSocketBackend
from tests.data_plane.conftest import DataPlane
from tests.data_plane.helpers import configure, get, proxy_to, raw_exchange
from tests.data_plane.protected_plane import HOST, call, protect, token

pytestmark = [pytest.mark.proxy, pytest.mark.auth]


def targets_seen(backend: HttpBackend) -> list[str]:
    return [request["target"] for request in backend.requests]


def test_scope_rules_see_the_decoded_path(
    plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend, signer: SigningKeys
) -> None:
    protect(
        redis_sync,
        plane,
        http_backend.url,
        scope_rules=[ScopeRule(path_prefix="/mcp", methods=["POST"], scopes=["mcp", "write"])],
    )
    read_only = token(signer, plane, scope="mcp")
    for path in ("/mcp", "/%6dcp", "/%6Dcp/x", "/x/../mcp", "//mcp", "/mcp;v=1"):
        status, headers, body = call(plane, path, bearer=read_only)
        assert status == 403, (path, body)
        assert 'scope="mcp write"' in headers["www-authenticate"], path
    assert http_backend.requests == []
    status, _h, body = call(plane, "/%6dcp/echo", bearer=token(signer, plane, scope="mcp write"))
    assert status == 200 and json.loads(body)["target"] == "/mcp/echo"  # the upstream gets the normal form


def test_public_paths_cover_their_own_segments_only(
    plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    protect(redis_sync, plane, http_backend.url, public_paths=["/health"])
    for path in (
        "/health/../mcp",
        "/health/%2e%2e/mcp",
        "/health/%2E%2E/mcp",
        "/health/./../mcp",
        "/healthz",
        "/health-private",
        "/health/..",
    ):
        status, _h, body = call(plane, path, method="GET")
        assert status == 401, (path, body)
    for path in ("/health%2f..%2fmcp", "/health%2F..%2Fmcp", "/health\\..\\mcp"):
        status, _h, body = call(plane, path, method="GET")
        assert status == 400 and b"encoded" in body, (path, body)
    for path in ("/health/..;/mcp", "/health#/../mcp"):
        assert call(plane, path, method="GET")[0] == 400, path
    assert http_backend.requests == []
    for path, seen in (("/health", "/health"), ("/health/./live", "/health/live"), ("/%68ealth", "/health")):
        status, _h, body = call(plane, path, method="GET")
        assert status == 200 and json.loads(body)["target"] == seen, path
    assert targets_seen(http_backend) == ["/health", "/health/live", "/health"]


def test_websocket_upgrade_through_a_public_path_detour_needs_a_token(
    plane: DataPlane, redis_sync: redis.Redis
) -> None:
    backend = WebSocketBackend()
    try:
        protect(redis_sync, plane, backend.url, public_paths=["/health"])
        for path in ("/health/../mcp/ws", "/health/%2e%2e/mcp/ws"):
            upgrade = (
                f"GET {path} HTTP/1.1\r\nHost: {HOST}:{plane.http_port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            with socket.create_connection(("127.0.0.1", plane.http_port), timeout=10) as sock:
                sock.sendall(upgrade.encode())
                assert sock.recv(65536).startswith(b"HTTP/1.1 401 "), path
        assert backend.request_headers == []
    finally:
        backend.close()


def test_routes_match_the_normalised_path_on_segment_boundaries(
    data_plane: DataPlane, redis_sync: redis.Redis
) -> None:
    main, api = HttpBackend(), HttpBackend()
    try:
        configure(
            redis_sync,
            data_plane,
            [proxy_to(main.url)],
            [Route(id="api", path_pattern="/api", target_url=api.url, priority=900)],
        )

        def served_by(path: str) -> tuple[int, str]:
            status, _h, body = get(data_plane, path)
            assert status == 200, (path, body)
            echoed = json.loads(body)
            return echoed["backend_port"], echoed["target"]

        assert served_by("/api/x") == (api.port, "/api/x")
        assert served_by("/%61pi/x") == (api.port, "/api/x")
        assert served_by("/z/../api") == (api.port, "/api")
        assert served_by("/apix") == (main.port, "/apix")
        assert served_by("/api-v2/x") == (main.port, "/api-v2/x")
        assert served_by("/a/./b/../%63%2D%7e?x=%2e&y=/../z") == (main.port, "/a/c-~?x=%2e&y=/../z")
        assert served_by("/caf%c3%a9|x") == (main.port, "/caf%C3%A9%7Cx")
    finally:
        main.close()
        api.close()


def test_encoded_slashes_only_where_the_proxy_allows_them(
    data_plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    configure(
        redis_sync,
        data_plane,
        [proxy_to(http_backend.url), proxy_to(http_backend.url, "slashes.test", allow_encoded_slashes=True)],
    )
    status, _h, body = get(data_plane, "/files/a%2fb")
    assert status == 400 and b"encoded" in body
    status, _h, body = get(data_plane, "/files/a%2fb/../c%5cd", host="slashes.test")
    assert status == 200 and json.loads(body)["target"] == "/files/c%5Cd"
    status, _h, body = get(data_plane, "/files/a%2fb", host="slashes.test")
    assert status == 200 and json.loads(body)["target"] == "/files/a%2Fb"
    assert get(data_plane, "/files/a%00b", host="slashes.test")[0] == 400  # NUL never
    assert targets_seen(http_backend) == ["/files/c%5Cd", "/files/a%2Fb"]


def test_absolute_form_targets_are_served_when_their_authority_is_the_host(
    data_plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    configure(redis_sync, data_plane, [proxy_to(http_backend.url)])
    answer = raw_exchange(
        data_plane,
        b"GET http://app.test/echo/../x?q=1 HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["target"] == "/x?q=1"  # origin-form upstream
    for head in (
        b"GET http://other.test/x HTTP/1.1\r\nHost: app.test\r\n\r\n",
        b"GET http://app.test:8080/x HTTP/1.1\r\nHost: app.test\r\n\r\n",
        b"GET http://user@app.test/x HTTP/1.1\r\nHost: app.test\r\n\r\n",
        b"GET ftp://app.test/x HTTP/1.1\r\nHost: app.test\r\n\r\n",
        b"GET x HTTP/1.1\r\nHost: app.test\r\n\r\n",
    ):
        assert raw_exchange(data_plane, head).startswith(b"HTTP/1.1 400 "), head
    assert targets_seen(http_backend) == ["/x?q=1"]
