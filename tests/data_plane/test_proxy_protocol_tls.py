"""PROXY protocol in front of TLS (PROXY_PROTOCOL_TLS_PORT: an L4 load balancer passing TLS through): the
header from a trusted peer names the client, the TLS handshake that follows uses SNI as usual, and no byte of
the ClientHello is lost even when it arrives in the same segment as the header. Untrusted peers and malformed
headers are refused before any TLS, counted and logged."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.certificates.test_cert_store import LocalCA
from tests.data_plane.backends import HttpBackend
from tests.data_plane.conftest import DataPlane
from tests.data_plane.helpers import configure, echo_headers, proxy_to
from tests.data_plane.test_proxy_protocol_listener import v2_header
from tests.data_plane.tls_plane import start_tls_plane, store_certificate
from tests.harness.services import RedisServer, free_port

pytestmark = [pytest.mark.proxy, pytest.mark.timeout(60)]

REQUEST = b"GET /echo HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n"


@pytest.fixture
def proxied_tls(
    redis_sync: redis.Redis, redis_server: RedisServer, tmp_path: Path
) -> Iterator[tuple[DataPlane, int]]:
    """A plane whose PROXY+TLS port trusts only 127.0.0.1 (so 127.0.0.2 is an untrusted peer)."""
    port = free_port()
    plane, _https_port = start_tls_plane(
        redis_server,
        tmp_path,
        extra_env={"PROXY_PROTOCOL_TLS_PORT": str(port), "TRUSTED_PROXY_CIDRS": "127.0.0.1/32"},
    )
    try:
        yield plane, port
    finally:
        plane.service.stop()


def _tls_exchange(sock: socket.socket, prefix: bytes, server_name: str, root_pem: str) -> bytes:
    """Handshake over `sock` through memory BIOs, sending `prefix` in the SAME write as the ClientHello,
    then send REQUEST and read the response until the server closes."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    context = ssl.create_default_context(cadata=root_pem)
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    first = True
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            pending = outgoing.read()
            sock.sendall(prefix + pending if first else pending)
            first = False
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("server closed during the handshake") from None
            incoming.write(data)
    tls.write(REQUEST)
    sock.sendall(outgoing.read())
    answer = b""
    while True:
        try:
            chunk = tls.read(65536)
            if not chunk:  # the TLS layer saw the end of the stream
                return answer
            answer += chunk
        except ssl.SSLWantReadError:
            data = sock.recv(65536)
            if not data:
                return answer
            incoming.write(data)
        except ssl.SSLZeroReturnError:
            return answer


def test_proxy_header_then_tls_names_the_client(
    proxied_tls: tuple[DataPlane, int], redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    plane, port = proxied_tls
    ca = LocalCA()
    configure(redis_sync, plane, [proxy_to(http_backend.url, "app.test")])
    store_certificate(redis_sync, plane, ca.issue("app", ["app.test"]))
    headers_v1 = b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 443\r\n"
    for header, client in ((headers_v1, "203.0.113.7"), (v2_header("198.51.100.9", 4444), "198.51.100.9")):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            answer = _tls_exchange(sock, header, "app.test", ca.pem)
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
        seen = echo_headers(answer.split(b"\r\n\r\n", 1)[1])
        assert seen["x-forwarded-for"] == [client]
        assert seen["x-forwarded-proto"] == ["https"]
    # The header arriving in a segment of its own works the same way.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(headers_v1)
        answer = _tls_exchange(sock, b"", "app.test", ca.pem)
    assert answer.startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize(
    ("source", "data", "reason"),
    [
        ("127.0.0.2", b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 443\r\n", "untrusted address"),
        ("127.0.0.1", b"PROXY TCP4 not-an-ip 10.0.0.1 5555 443\r\n", "malformed PROXY header"),
        ("127.0.0.1", b"\x16\x03\x01\x00\xff\x01\x00\x00\xfb\x03\x03", "malformed PROXY header"),
    ],
    ids=["untrusted", "malformed", "tls-without-header"],
)
def test_bad_or_untrusted_proxy_header_is_refused(
    proxied_tls: tuple[DataPlane, int], source: str, data: bytes, reason: str
) -> None:
    plane, port = proxied_tls
    with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0)) as sock:
        sock.sendall(data)
        try:
            received = sock.recv(65536)
        except ConnectionResetError:
            received = b""
    assert received == b""
    assert plane.metric("mhp_tls_handshakes_total", result="proxy_header") == 1
    log_text = plane.service.log_path.read_text(errors="replace")
    assert f"TLS handshake from {source} failed (proxy_header): " in log_text and reason in log_text
    assert "Traceback" not in log_text
