"""Upstream connections that end: a close-delimited response, `Connection: close` with a length, and a pooled
connection the upstream drops. Whatever way an upstream connection ends, the next request to the same origin
is answered promptly: on a new connection, or (a GET the upstream hung up on without a byte of answer) retried
once on a new connection, or a 502 when retrying could repeat a request that has a body. A hang would show as
the client's timeout (10 s, far below the proxy's 60 s read timeout) and fail the test.

The upstream is a raw socket, so every byte and every close is exactly what the test says."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import closing

import pytest
import redis

from tests.data_plane.backends import RawUpstream
from tests.data_plane.conftest import DataPlane
from tests.data_plane.helpers import configure, proxy_to, raw_exchange

pytestmark = pytest.mark.proxy

CLIENT_TIMEOUT_SECONDS = 10.0
BIG = bytes(range(256)) * 4096  # 1 MiB: more than the socket buffers hold, so reading pauses on the way


class EndingUpstream(RawUpstream):
    """Each request's path says how the answer ends; `/good` is an ordinary keep-alive answer."""

    def __init__(self) -> None:
        self.closed_by_us = threading.Event()  # set when this server closed a connection on purpose
        self.requests: list[str] = []
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
            length = _content_length(head)
            while len(buffer) < length:
                data = sock.recv(65536)
                if not data:
                    return
                buffer += data
            buffer = buffer[length:]
            self.requests.append(path)
            if path == "/hangup-next":
                # The next request on this connection is read and then dropped without a byte of answer: for
                # the proxy, a pooled connection that was closed before the request arrived.
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                while b"\r\n\r\n" not in buffer:
                    data = sock.recv(65536)
                    if not data:
                        return
                    buffer += data
                self.closed_by_us.set()
                return
            if not self._answer(sock, path):
                self.closed_by_us.set()
                return

    def _answer(self, sock: socket.socket, path: str) -> bool:
        """Write the answer for `path`; False when the connection ends after it."""
        if path == "/close-delimited":
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
            for piece in (b"until ", b"the ", b"end"):
                time.sleep(0.01)
                sock.sendall(piece)
            return False
        if path == "/close-delimited-late-close":
            sock.sendall(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")
            time.sleep(0.3)  # the whole body is there long before the close that ends it
            return False
        if path == "/close-delimited-in-one-write":
            sock.sendall(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")
            return False
        if path == "/close-delimited-http10":
            sock.sendall(b"HTTP/1.0 200 OK\r\n\r\nuntil the end")
            return False
        if path == "/close-delimited-big":
            sock.sendall(b"HTTP/1.1 200 OK\r\n\r\n")
            sock.sendall(BIG)
            return False
        if path == "/close-with-length":
            sock.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 4\r\n\r\ndone")
            return False
        if path == "/close-with-length-lingering":
            # Says close but keeps its socket open until the proxy closes it.
            sock.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 4\r\n\r\ndone")
            sock.settimeout(30)
            while sock.recv(65536):
                pass
            return False
        if path == "/drop-when-idle":
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            return False  # keep-alive promised, then closed while the proxy holds it idle
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood")
        return True


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


@pytest.fixture
def upstream() -> Iterator[EndingUpstream]:
    server = EndingUpstream()
    yield server
    server.close()


def _request(
    conn: http.client.HTTPConnection, path: str, method: str = "GET", body: bytes | None = None
) -> tuple[int, bytes]:
    conn.request(method, path, body=body, headers={"Host": "app.test"})
    response = conn.getresponse()
    return response.status, response.read()


def _fresh(plane: DataPlane) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", plane.http_port, timeout=CLIENT_TIMEOUT_SECONDS)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/close-delimited", b"until the end"),
        ("/close-delimited-late-close", b"until the end"),
        ("/close-delimited-in-one-write", b"until the end"),
        ("/close-delimited-http10", b"until the end"),
        ("/close-delimited-big", BIG),
        ("/close-with-length", b"done"),
        ("/close-with-length-lingering", b"done"),
    ],
)
def test_after_a_connection_ending_answer_the_next_request_goes_to_a_new_connection(
    path: str, expected: bytes, data_plane: DataPlane, redis_sync: redis.Redis, upstream: EndingUpstream
) -> None:
    configure(redis_sync, data_plane, [proxy_to(upstream.url)])
    conn = _fresh(data_plane)
    try:
        assert _request(conn, path) == (200, expected)
        # On the same client connection (it stays usable when the proxy could frame the body for it)...
        if conn.sock is None:
            conn = _fresh(data_plane)
        assert _request(conn, "/good") == (200, b"good")
        assert _request(conn, path) == (200, expected)
    finally:
        conn.close()
    # ...and on a new one.
    conn = _fresh(data_plane)
    try:
        assert _request(conn, "/good") == (200, b"good")
        assert _request(conn, "/good") == (200, b"good")
    finally:
        conn.close()
    # Each connection-ending answer cost its upstream connection; /good's connection was kept and reused.
    assert upstream.connections_accepted == 3
    assert upstream.requests == [path, "/good", path, "/good", "/good"]


def test_a_pooled_connection_the_upstream_closed_while_idle_is_not_used(
    data_plane: DataPlane, redis_sync: redis.Redis, upstream: EndingUpstream
) -> None:
    configure(redis_sync, data_plane, [proxy_to(upstream.url)])
    with closing(_fresh(data_plane)) as conn:
        assert _request(conn, "/drop-when-idle") == (200, b"ok")
    assert upstream.closed_by_us.wait(CLIENT_TIMEOUT_SECONDS)
    with closing(_fresh(data_plane)) as conn:
        # A body, so the proxy may not retry it: it must not be sent on the dead connection at all.
        assert _request(conn, "/good", method="POST", body=b"payload") == (200, b"good")
        assert _request(conn, "/good") == (200, b"good")
    assert upstream.connections_accepted == 2


def test_a_get_the_upstream_hung_up_on_is_retried_once_on_a_new_connection(
    data_plane: DataPlane, redis_sync: redis.Redis, upstream: EndingUpstream
) -> None:
    configure(redis_sync, data_plane, [proxy_to(upstream.url)])
    with closing(_fresh(data_plane)) as conn:
        assert _request(conn, "/hangup-next") == (200, b"ok")
        assert _request(conn, "/good") == (200, b"good")
    assert upstream.closed_by_us.is_set()
    assert upstream.connections_accepted == 2
    assert upstream.requests == ["/hangup-next", "/good"]


@pytest.mark.parametrize(("method", "body"), [("POST", b"payload"), ("POST", None)])
def test_a_request_that_may_not_be_repeated_gets_a_502_when_the_upstream_hangs_up(
    method: str, body: bytes | None, data_plane: DataPlane, redis_sync: redis.Redis, upstream: EndingUpstream
) -> None:
    configure(redis_sync, data_plane, [proxy_to(upstream.url)])
    with closing(_fresh(data_plane)) as conn:
        assert _request(conn, "/hangup-next") == (200, b"ok")
        status, answer = _request(conn, "/good", method=method, body=body)
        assert (status, answer) == (502, b"upstream closed or reset the connection\n")
    # Not repeated on another connection; the origin still serves the next request.
    with closing(_fresh(data_plane)) as conn:
        assert _request(conn, "/good") == (200, b"good")
    assert upstream.requests == ["/hangup-next", "/good"]
    assert upstream.connections_accepted == 2


@pytest.mark.parametrize(
    ("request_head", "body"),
    [
        # HTTP/1.0: the body is delimited by our close as well; HTTP/1.1: we chunk it, then close.
        (b"GET /close-delimited HTTP/1.0\r\nHost: app.test\r\n\r\n", b"\r\n\r\nuntil the end"),
        (
            b"GET /close-delimited HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
            b"\r\n\r\n6\r\nuntil \r\n4\r\nthe \r\n3\r\nend\r\n0\r\n\r\n",
        ),
    ],
)
def test_a_close_delimited_answer_to_a_client_that_closes_ends_both_connections(
    request_head: bytes, body: bytes, data_plane: DataPlane, redis_sync: redis.Redis, upstream: EndingUpstream
) -> None:
    configure(redis_sync, data_plane, [proxy_to(upstream.url)])
    for _ in range(2):
        # raw_exchange reads until the proxy closes (a hang is its socket timeout).
        answer = raw_exchange(data_plane, request_head, timeout=CLIENT_TIMEOUT_SECONDS)
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer
        assert answer.endswith(body), answer
    with closing(_fresh(data_plane)) as conn:
        assert _request(conn, "/good") == (200, b"good")
    assert upstream.connections_accepted == 3
