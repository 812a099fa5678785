"""The SSRF guard at connect time, against a real data plane: a proxy or route an ordinary token owns connects
only to public addresses or ALLOWED_TARGET_CIDRS, never to a port the system serves, judged on the
addresses its name resolves to (`localhost` included), with a 502 that says why and a counted refusal;
admin-owned targets are unrestricted, and their pooled connections never serve a tenant's request."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from shared.models import Route
from tests.data_plane.backends import HttpBackend, WebSocketBackend
from tests.data_plane.conftest import DataPlane, start_data_plane
from tests.data_plane.helpers import configure, get, proxy_to
from tests.harness.services import RedisServer

pytestmark = pytest.mark.proxy

TENANT = "tenant"  # an ordinary token's name: what the control plane stores as `owner`
REFUSALS = "mhp_upstream_target_refusals_total"
UPGRADE = (
    "GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def plane_with(redis_server: RedisServer, tmp_path: Path, **env: str) -> DataPlane:
    return start_data_plane(redis_server, tmp_path, env)


def backend_outside_system_ports(plane: DataPlane) -> HttpBackend:
    """A backend whose random port is not one the policy reserves for the data plane's internal listeners
    (INTERNAL_PORT + 0..63), so that only the rule under test can refuse it."""
    while True:
        backend = HttpBackend()
        if not plane.internal_port <= backend.port < plane.internal_port + 64:
            return backend
        backend.close()


@pytest.fixture
def closed_plane(redis_sync: redis.Redis, redis_server: RedisServer, tmp_path: Path) -> Iterator[DataPlane]:
    """ALLOWED_TARGET_CIDRS empty (the default): tenants may reach public addresses only."""
    started = plane_with(redis_server, tmp_path)
    try:
        yield started
    finally:
        started.service.stop()


@pytest.fixture
def loopback_plane(redis_sync: redis.Redis, redis_server: RedisServer, tmp_path: Path) -> Iterator[DataPlane]:
    started = plane_with(redis_server, tmp_path, ALLOWED_TARGET_CIDRS="127.0.0.0/8")
    try:
        yield started
    finally:
        started.service.stop()


def test_tenant_targets_on_private_addresses_are_refused_at_connect_time(
    closed_plane: DataPlane, redis_sync: redis.Redis
) -> None:
    backend = backend_outside_system_ports(closed_plane)
    ws_backend = WebSocketBackend()
    try:
        configure(
            redis_sync,
            closed_plane,
            [
                proxy_to(backend.url, "admin.test"),
                proxy_to(backend.url, "tenant.test", owner=TENANT),
                proxy_to(f"http://localhost:{backend.port}", "named.test", owner=TENANT),
                proxy_to(ws_backend.url, "ws.test", owner=TENANT),
            ],
            [
                # A tenant's route on the admin's proxy, and the admin's route to the tenant's proxy URL.
                Route(
                    id="tenant-route",
                    path_pattern="/t/",
                    target_url=backend.url,
                    owner=TENANT,
                    scope="proxies",
                    proxy_hostnames=["admin.test"],
                ),
                Route(
                    id="via-tenant-proxy",
                    path_pattern="/via/",
                    target_proxy="tenant.test",
                    scope="proxies",
                    proxy_hostnames=["admin.test"],
                ),
            ],
        )
        # The admin's proxy connects, and leaves a pooled connection to the very same origin behind.
        assert get(closed_plane, "/echo", host="admin.test")[0] == 200
        seen = len(backend.requests)
        for host, path in (
            ("tenant.test", "/echo"),  # 127.0.0.1, even with an admin connection to it in the pool
            ("named.test", "/echo"),  # a name that resolves to loopback
            ("admin.test", "/t/echo"),
            ("admin.test", "/via/echo"),
        ):
            status, _h, body = get(closed_plane, path, host=host)
            assert status == 502, (host, path, body)
            assert b"upstream target not allowed" in body and b"not a public address" in body, body
        assert len(backend.requests) == seen
        with socket.create_connection(("127.0.0.1", closed_plane.http_port), timeout=10) as sock:
            sock.sendall(UPGRADE.format(host="ws.test").encode())
            assert sock.recv(65536).startswith(b"HTTP/1.1 502 ")
        assert ws_backend.request_headers == []
        assert closed_plane.metric(REFUSALS) == 5
        assert get(closed_plane, "/echo", host="admin.test")[0] == 200  # the admin is never restricted
    finally:
        backend.close()
        ws_backend.close()


def test_allowed_cidrs_open_a_range_but_never_the_systems_own_ports(
    loopback_plane: DataPlane, redis_sync: redis.Redis
) -> None:
    backend = backend_outside_system_ports(loopback_plane)
    try:
        configure(
            redis_sync,
            loopback_plane,
            [
                proxy_to(backend.url, "tenant.test", owner=TENANT),
                proxy_to(f"http://localhost:{backend.port}", "named.test", owner=TENANT),
                # The review's attack: publish the data plane's own /metrics (and the listener itself).
                proxy_to(f"http://127.0.0.1:{loopback_plane.internal_port}", "metrics.test", owner=TENANT),
                proxy_to(f"http://localhost:{loopback_plane.http_port}", "loop.test", owner=TENANT),
            ],
        )
        status, _h, body = get(loopback_plane, "/echo", host="tenant.test")
        assert status == 200 and json.loads(body)["backend_port"] == backend.port
        # localhost is 127.0.0.1 and ::1 here; ::1 is outside the range, so 127.0.0.1 is what gets connected.
        assert get(loopback_plane, "/echo", host="named.test")[0] == 200
        for host in ("metrics.test", "loop.test"):
            status, _h, body = get(loopback_plane, "/metrics", host=host)
            assert status == 502 and b"the system itself serves" in body, (host, body)
        assert loopback_plane.metric(REFUSALS) == 2
    finally:
        backend.close()
