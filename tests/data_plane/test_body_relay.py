"""Responses framed by us: Content-Length bodies relayed socket to socket (HttpChannel.relay_body), heads
written without h11, checked against a scripted raw upstream.

The data plane relays a Content-Length body that arrives in several reads without h11 in between, and then
tells h11 the message ended. These tests pin down what that must not change: exact bytes, keep-alive on
both sides afterwards, an upstream that sends more than it framed is never reused, an upstream that stops
short cuts the client's response instead of completing it.
"""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Iterator

import pytest
import redis

from tests.data_plane.backends import RawUpstream
from tests.data_plane.conftest import DataPlane
from tests.data_plane.helpers import configure, proxy_to, raw_exchange

pytestmark = pytest.mark.proxy

BODY = bytes(range(256)) * 1024  # 256 KiB, sent in pieces so it spans many reads


class ScriptedUpstream(RawUpstream):
    """A keep-alive HTTP/1.1 server on a raw socket; the request path picks how the response misbehaves."""

    def __init__(self) -> None:
        self.requests = 0
        super().__init__()

    def _exchanges(self, sock: socket.socket) -> None:
        buffer = b""
        while True:
            while b"\r\n\r\n" not in buffer:
                data = sock.recv(65536)
                if not data:
                    return
                buffer += data
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            path = head.split(b" ")[1].decode()
            self.requests += 1
            sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(BODY))
            if path == "/short":
                sock.sendall(BODY[: len(BODY) // 2])
                time.sleep(0.2)
                return  # closes mid-body
            pieces = [BODY[start : start + 16384] for start in range(0, len(BODY), 16384)]
            if path == "/overrun":
                # In the same write as the body's end, so it is in the same read: a later stray byte
                # races the next request for a pooled connection, as with any proxy.
                pieces[-1] += b"GARBAGE AFTER THE BODY"
            for piece in pieces:
                sock.sendall(piece)
                time.sleep(0.001)


@pytest.fixture
def upstream() -> Iterator[ScriptedUpstream]:
    server = ScriptedUpstream()
    yield server
    server.close()


def test_chunked_arrival_is_relayed_exactly_and_both_sides_stay_alive(
    data_plane: DataPlane, redis_sync: redis.Redis, upstream: ScriptedUpstream
) -> None:
    configure(redis_sync, data_plane, [proxy_to(upstream.url)])
    conn = http.client.HTTPConnection("127.0.0.1", data_plane.http_port, timeout=10)
    try:
        for _ in range(3):
            conn.request("GET", "/ok", headers={"Host": "app.test"})
            response = conn.getresponse()
            assert response.status == 200
            assert response.getheader("content-length") == str(len(BODY))
            assert response.read() == BODY
    finally:
        conn.close()
    # Same client connection for all three (no close), and the upstream connection was pooled and reused.
    assert upstream.requests == 3
    assert upstream.connections_accepted == 1


def test_upstream_sending_more_than_it_framed_is_not_reused(
    data_plane: DataPlane, redis_sync: redis.Redis, upstream: ScriptedUpstream
) -> None:
    configure(redis_sync, data_plane, [proxy_to(upstream.url)])
    conn = http.client.HTTPConnection("127.0.0.1", data_plane.http_port, timeout=10)
    try:
        conn.request("GET", "/overrun", headers={"Host": "app.test"})
        assert conn.getresponse().read() == BODY
        # The garbage never reaches the client: the next response on this connection parses cleanly.
        conn.request("GET", "/ok", headers={"Host": "app.test"})
        response = conn.getresponse()
        assert response.status == 200 and response.read() == BODY
    finally:
        conn.close()
    assert upstream.connections_accepted == 2


def test_upstream_closing_mid_body_cuts_the_client_response(
    data_plane: DataPlane, redis_sync: redis.Redis, upstream: ScriptedUpstream
) -> None:
    configure(redis_sync, data_plane, [proxy_to(upstream.url)])
    conn = http.client.HTTPConnection("127.0.0.1", data_plane.http_port, timeout=10)
    try:
        conn.request("GET", "/short", headers={"Host": "app.test"})
        response = conn.getresponse()
        assert response.status == 200
        with pytest.raises(http.client.IncompleteRead) as cut:
            response.read()
        assert cut.value.partial == BODY[: len(BODY) // 2]
    finally:
        conn.close()
    conn = http.client.HTTPConnection("127.0.0.1", data_plane.http_port, timeout=10)
    try:
        conn.request("GET", "/ok", headers={"Host": "app.test"})
        assert conn.getresponse().read() == BODY
    finally:
        conn.close()


def test_pipelined_requests_are_all_answered(
    data_plane: DataPlane, redis_sync: redis.Redis, upstream: ScriptedUpstream
) -> None:
    # Each response is written without h11, so the next request is parsed by a fresh h11 connection that
    # must inherit the bytes already received.
    configure(redis_sync, data_plane, [proxy_to(upstream.url)])
    data = raw_exchange(
        data_plane,
        b"GET /ok HTTP/1.1\r\nHost: app.test\r\n\r\n" * 2
        + b"GET /ok HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
        timeout=10,
    )
    head = b"HTTP/1.1 200 OK\r\n"
    assert data.count(head) == 3
    for part in data.split(head)[1:]:
        assert part.split(b"\r\n\r\n", 1)[1] == BODY
