"""The real data plane (`python -m data_plane`) on TLS and ACME: HTTPS listener with SNI certificates from
Redis, fallback for unknown names, live certificate swap on a config-version bump, ACME HTTP-01 answers on
the plain port before routing, and garbage on the TLS port closed cleanly without tracebacks."""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from cryptography import x509

from shared import keys
from tests.certificates.conftest import KEK_B64
from tests.certificates.test_cert_store import LocalCA
from tests.data_plane.backends import HttpBackend
from tests.data_plane.conftest import DataPlane, start_data_plane
from tests.data_plane.helpers import configure, get, proxy_to
from tests.harness.services import RedisServer, free_port

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def tls_plane(
    redis_sync: redis.Redis, redis_server: RedisServer, tmp_path: Path
) -> Iterator[tuple[DataPlane, int]]:
    https_port = free_port()
    plane = start_data_plane(
        redis_server,
        tmp_path,
        extra_env={
            "HTTPS_PORT": str(https_port),
            "KEY_ENCRYPTION_KEY_B64": KEK_B64,
            "BASE_DOMAIN": "fallback.test",
        },
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", https_port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(plane.service.log_tail()) from None
                time.sleep(0.05)
        yield plane, https_port
    finally:
        plane.service.stop()


def _bump(client: redis.Redis, plane: DataPlane) -> None:
    version = int(client.incr(keys.config_version()))
    client.publish(keys.changes_channel(), str(version))
    plane.wait_for_version(version)


def _peer(port: int, server_name: str, root_pem: str | None) -> x509.Certificate:
    context = ssl.create_default_context(cadata=root_pem) if root_pem else ssl._create_unverified_context()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
            der = tls.getpeercert(binary_form=True)
            assert der is not None
            return x509.load_der_x509_certificate(der)


def test_https_serves_stored_certificate_proxies_and_falls_back(
    tls_plane: tuple[DataPlane, int], redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    plane, https_port = tls_plane
    ca = LocalCA()
    cert = ca.issue("app", ["app.test"])
    redis_sync.hset(keys.certificates(), cert.cert_name, cert.model_dump_json())
    configure(redis_sync, plane, [proxy_to(http_backend.url, "app.test")])

    served = _peer(https_port, "app.test", ca.pem)  # verifies chain and hostname
    assert format(served.serial_number, "x") == cert.serial
    fallback = _peer(https_port, "unknown.test", None)
    assert fallback.serial_number != served.serial_number

    context = ssl.create_default_context(cadata=ca.pem)
    conn = http.client.HTTPSConnection("127.0.0.1", https_port, timeout=10, context=context)
    raw = socket.create_connection(("127.0.0.1", https_port), timeout=10)
    # Connect by hand: HTTPSConnection would send SNI "127.0.0.1"; the proxy is named app.test.
    conn.sock = context.wrap_socket(raw, server_hostname="app.test")
    assert conn.sock.selected_alpn_protocol() in (None, "http/1.1")
    conn.request("GET", "/hello", headers={"Host": "app.test"})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    assert response.status == 200, body


def test_renewal_swaps_certificate_for_new_handshakes(
    tls_plane: tuple[DataPlane, int], redis_sync: redis.Redis
) -> None:
    plane, https_port = tls_plane
    ca = LocalCA()
    first = ca.issue("app", ["app.test"])
    redis_sync.hset(keys.certificates(), "app", first.model_dump_json())
    _bump(redis_sync, plane)
    assert format(_peer(https_port, "app.test", ca.pem).serial_number, "x") == first.serial
    renewed = ca.issue("app", ["app.test"])
    redis_sync.hset(keys.certificates(), "app", renewed.model_dump_json())
    _bump(redis_sync, plane)
    assert format(_peer(https_port, "app.test", ca.pem).serial_number, "x") == renewed.serial


def test_acme_challenge_answered_on_any_host_before_routing(
    data_plane: DataPlane, redis_sync: redis.Redis
) -> None:
    token = "tok_" + "A" * 40
    redis_sync.set(keys.acme_challenge(token), f"{token}.thumbprint", ex=60)
    status, headers, body = get(data_plane, f"/.well-known/acme-challenge/{token}", host="nobody.example")
    assert (status, body) == (200, f"{token}.thumbprint".encode())
    assert headers["content-type"].startswith("text/plain")
    status, _, _ = get(data_plane, "/.well-known/acme-challenge/unknown-token", host="nobody.example")
    assert status == 404
    status, _, _ = get(data_plane, "/.well-known/acme-challenge/bad%2Ftoken", host="nobody.example")
    assert status == 404
    # Anything else still goes through routing: unknown host.
    status, _, body = get(data_plane, "/.well-known/other", host="nobody.example")
    assert status == 404 and b"unknown host" in body


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n",
        b"\x16\x03\x01\x00\xff\x01\x00\x00\xfb\x03\x03" + b"\x00" * 10,
    ],
    ids=["plain-http", "truncated-client-hello"],
)
def test_garbage_on_tls_port_closes_cleanly(tls_plane: tuple[DataPlane, int], garbage: bytes) -> None:
    plane, https_port = tls_plane
    with socket.create_connection(("127.0.0.1", https_port), timeout=15) as sock:
        sock.sendall(garbage)
        if garbage.startswith(b"\x16"):
            sock.shutdown(socket.SHUT_WR)  # truncated: the server sees EOF mid-handshake
        try:
            received = sock.recv(65536)
            while received and not received.startswith(b"HTTP"):
                more = sock.recv(65536)
                if not more:
                    break
                received += more
        except ConnectionResetError:
            received = b""
    assert not received.startswith(b"HTTP/1.1 200")
    # The listener still works and nothing spilled a traceback into the log.
    _peer(https_port, "x.test", None)
    assert plane.health()[0] == 200
    assert "Traceback" not in plane.service.log_path.read_text(errors="replace")
