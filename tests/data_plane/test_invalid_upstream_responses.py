"""Responses the upstream-response parser refuses, end to end: the client gets a 502 that says why, and the
upstream connection that carried it is closed, never pooled (the next request opens a new one)."""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Iterator

import pytest
import redis

from tests.data_plane.backends import RawUpstream
from tests.data_plane.conftest import DataPlane
from tests.data_plane.helpers import configure, proxy_to

pytestmark = pytest.mark.proxy

GOOD = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
BAD = {
    "/cl-te": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n0\r\n\r\n",
    "/duplicate-cl": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!",
    "/obs-fold": b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok",
    "/bare-lf": b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
    "/nul": b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok",
    "/te-gzip": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nok",
    "/not-http": b"SSH-2.0-OpenSSH_9.6\r\n",
}


class CannedUpstream(RawUpstream):
    """Answers each request on a keep-alive connection with the canned bytes its path names."""

    def __init__(self) -> None:
        self.connections_closed_by_peer = 0
        super().__init__()

    def _exchanges(self, sock: socket.socket) -> None:
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = sock.recv(65536)
                    if not data:
                        self.connections_closed_by_peer += 1
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                path = head.split(b" ")[1].decode()
                sock.sendall(BAD.get(path, GOOD))
        except OSError:
            self.connections_closed_by_peer += 1
            raise


@pytest.fixture
def upstream() -> Iterator[CannedUpstream]:
    server = CannedUpstream()
    yield server
    server.close()


@pytest.mark.parametrize("path", sorted(BAD))
def test_an_invalid_response_is_a_502_and_its_connection_is_not_reused(
    path: str, data_plane: DataPlane, redis_sync: redis.Redis, upstream: CannedUpstream
) -> None:
    configure(redis_sync, data_plane, [proxy_to(f"http://127.0.0.1:{upstream.port}")])
    conn = http.client.HTTPConnection("127.0.0.1", data_plane.http_port, timeout=10)
    try:
        conn.request("GET", "/good", headers={"Host": "app.test"})
        assert conn.getresponse().read() == b"ok"
        conn.request("GET", path, headers={"Host": "app.test"})
        response = conn.getresponse()
        body = response.read()
        assert response.status == 502, body
        assert body.startswith(b"upstream sent an invalid response: "), body
        assert response.getheader("connection") == "close"
    finally:
        conn.close()
    assert upstream.connections_accepted == 1
    conn = http.client.HTTPConnection("127.0.0.1", data_plane.http_port, timeout=10)
    try:
        conn.request("GET", "/good", headers={"Host": "app.test"})
        assert conn.getresponse().read() == b"ok"
    finally:
        conn.close()
    # The connection that carried the invalid response was closed by the proxy, and a new one served.
    assert upstream.connections_accepted == 2
    # The upstream's thread notices the proxy's close when it next runs (late on a busy machine).
    deadline = time.monotonic() + 10
    while upstream.connections_closed_by_peer < 1:
        assert time.monotonic() < deadline, "the proxy never closed the connection that carried it"
        time.sleep(0.02)
