"""The PROXY-protocol listener end to end: v1 and v2 headers from a trusted peer set the client address (for
X-Forwarded-For and the request log); malformed, truncated or untrusted headers close the connection and
nothing reaches an upstream."""

from __future__ import annotations

import json
import socket
import struct
import time
from pathlib import Path

import pytest
import redis

from shared import keys
from tests.data_plane.backends import HttpBackend
from tests.data_plane.conftest import DataPlane, start_data_plane
from tests.data_plane.helpers import configure, echo_headers, proxy_to
from tests.harness.services import RedisServer

pytestmark = pytest.mark.proxy

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
REQUEST = b"GET /echo HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n"


def v2_header(source: str, source_port: int) -> bytes:
    addresses = socket.inet_aton(source) + socket.inet_aton("10.0.0.1") + struct.pack("!HH", source_port, 443)
    return V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", len(addresses)) + addresses


def exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        out = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
        return out


def body_of(answer: bytes) -> bytes:
    return answer.split(b"\r\n\r\n", 1)[1]


def test_v1_and_v2_set_the_client_address(
    data_plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    configure(redis_sync, data_plane, [proxy_to(http_backend.url)])
    answer = exchange(data_plane.proxy_port, b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 80\r\n" + REQUEST)
    assert answer.startswith(b"HTTP/1.1 200 ")
    # 203.0.113.7 is not a trusted proxy, so its own X-Forwarded-For would be dropped: ours is the address.
    assert echo_headers(body_of(answer))["x-forwarded-for"] == ["203.0.113.7"]

    answer = exchange(data_plane.proxy_port, v2_header("198.51.100.9", 4444) + REQUEST)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert echo_headers(body_of(answer))["x-forwarded-for"] == ["198.51.100.9"]

    deadline = time.monotonic() + 5
    logged: set[str] = set()
    while not {"203.0.113.7", "198.51.100.9"} <= logged:
        assert time.monotonic() < deadline, f"request log never showed the PROXY addresses: {logged}"
        time.sleep(0.05)
        logged = {fields.get("client_ip", "") for _, fields in redis_sync.xrange(keys.request_log_stream())}


@pytest.mark.parametrize(
    "data",
    [
        b"PROXY TCP4 not-an-ip 10.0.0.1 1 2\r\n" + REQUEST,
        b"PROXY TCP9 1.2.3.4 10.0.0.1 1 2\r\n" + REQUEST,
        V2_SIGNATURE + bytes([0x2F, 0x11, 0, 12]) + b"\x00" * 12 + REQUEST,
        REQUEST,  # no header at all on a PROXY-protocol listener
    ],
    ids=["v1-bad-address", "v1-bad-protocol", "v2-bad-command", "missing"],
)
def test_malformed_header_closes_and_nothing_reaches_upstream(
    data_plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend, data: bytes
) -> None:
    configure(redis_sync, data_plane, [proxy_to(http_backend.url)])
    assert exchange(data_plane.proxy_port, data) == b""
    assert http_backend.requests == []
    assert data_plane.health()[0] == 200


def test_truncated_header_closes(
    data_plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    configure(redis_sync, data_plane, [proxy_to(http_backend.url)])
    with socket.create_connection(("127.0.0.1", data_plane.proxy_port), timeout=5) as sock:
        sock.sendall(b"PROXY TCP4 203.0.113.7 10.0")
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(65536) == b""
    assert http_backend.requests == []
    assert "truncated PROXY header" in data_plane.service.log_tail(200)


def test_untrusted_peer_is_refused(
    redis_sync: redis.Redis, redis_server: RedisServer, tmp_path: Path, http_backend: HttpBackend
) -> None:
    plane = start_data_plane(redis_server, tmp_path, {"TRUSTED_PROXY_CIDRS": "10.0.0.0/8"})
    try:
        configure(redis_sync, plane, [proxy_to(http_backend.url)])
        answer = exchange(plane.proxy_port, b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 80\r\n" + REQUEST)
        assert answer == b""
        assert http_backend.requests == []
        assert "untrusted" in plane.service.log_tail(200)
        # The plain listener still works for the same peer.
        answer = exchange(plane.http_port, REQUEST)
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert json.loads(body_of(answer))["method"] == "GET"
    finally:
        plane.service.stop()
