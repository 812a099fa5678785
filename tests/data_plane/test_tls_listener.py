"""The real data plane (`python -m data_plane`) on TLS and ACME: HTTPS listener with SNI certificates from
Redis, fallback for unknown names, live certificate swap on a config-version bump, ACME HTTP-01 answers on
the plain port before routing, and garbage on the TLS port closed cleanly without tracebacks."""

from __future__ import annotations

import re
import socket
import ssl
from pathlib import Path

import pytest
import redis

from data_plane.io.tls_listener import classify_handshake_error
from shared import keys
from tests.certificates.test_cert_store import LocalCA
from tests.data_plane.backends import HttpBackend
from tests.data_plane.conftest import DataPlane
from tests.data_plane.helpers import configure, get, proxy_to
from tests.data_plane.tls_plane import (
    bump,
    client_context,
    https_request,
    peer_certificate,
    start_tls_plane,
    store_certificate,
)
from tests.harness.services import RedisServer

pytestmark = pytest.mark.timeout(60)


def test_https_serves_stored_certificate_proxies_and_falls_back(
    tls_plane: tuple[DataPlane, int], redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    plane, https_port = tls_plane
    ca = LocalCA()
    cert = ca.issue("app", ["app.test"])
    store_certificate(redis_sync, plane, cert)
    configure(redis_sync, plane, [proxy_to(http_backend.url, "app.test")])

    served = peer_certificate(https_port, "app.test", ca.pem)  # verifies chain and hostname
    assert format(served.serial_number, "x") == cert.serial
    fallback = peer_certificate(https_port, "unknown.test", None)
    assert fallback.serial_number != served.serial_number

    status, _headers, body = https_request(https_port, "app.test", "/hello", ca.pem)
    assert status == 200, body
    assert _handshake_count(plane, "ok") >= 3
    # A client that ends TLS properly (close_notify, as wrk and browsers do): asyncio warns once per such
    # connection when the protocol asks to stay half-open, which ours must not do on TLS.
    with socket.create_connection(("127.0.0.1", https_port), timeout=5) as raw:
        tls = client_context(ca.pem).wrap_socket(raw, server_hostname="app.test")
        tls.sendall(b"GET /hello HTTP/1.1\r\nHost: app.test\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += tls.recv(65536)
        head, _, body = answer.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?im)^content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        while len(body) < length:
            body += tls.recv(65536)
        assert head.startswith(b"HTTP/1.1 200 ")
        tls.unwrap()  # the whole answer is read: only the server's close_notify can follow
    peer_certificate(https_port, "app.test", ca.pem)  # the close above was handled before this handshake
    assert "eof_received" not in plane.service.log_path.read_text(errors="replace")


def test_renewal_swaps_certificate_for_new_handshakes(
    tls_plane: tuple[DataPlane, int], redis_sync: redis.Redis
) -> None:
    plane, https_port = tls_plane
    ca = LocalCA()
    first = ca.issue("app", ["app.test"])
    redis_sync.hset(keys.certificates(), "app", first.model_dump_json())
    bump(redis_sync, plane)
    assert format(peer_certificate(https_port, "app.test", ca.pem).serial_number, "x") == first.serial
    renewed = ca.issue("app", ["app.test"])
    # Written without a change event, as an older control plane or a hand edit would: the version moves
    # without an entry in the changes stream, a gap the data plane closes by reloading everything.
    redis_sync.hset(keys.certificates(), "app", renewed.model_dump_json())
    bump(redis_sync, plane)
    assert format(peer_certificate(https_port, "app.test", ca.pem).serial_number, "x") == renewed.serial


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


def _handshake_count(plane: DataPlane, result: str) -> float:
    return plane.metric("mhp_tls_handshakes_total", result=result)


@pytest.mark.parametrize(
    ("garbage", "result", "reason"),
    [
        (b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n", "plain_http", "plain HTTP request sent to the HTTPS"),
        (b"\x16\x03\x01\x00\xff\x01\x00\x00\xfb\x03\x03" + b"\x00" * 10, "closed", "closed the connection"),
        (b"\x00\x01garbage\r\n\r\n" * 4, "not_tls", "not a TLS ClientHello"),
    ],
    ids=["plain-http", "truncated-client-hello", "garbage"],
)
def test_garbage_on_tls_port_closes_cleanly_and_is_logged(
    tls_plane: tuple[DataPlane, int], garbage: bytes, result: str, reason: str
) -> None:
    plane, https_port = tls_plane
    before = _handshake_count(plane, result)  # the readiness probe's connect-and-close counts as "closed"
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
    # Counted and logged with the peer and the reason; the listener still works; no traceback.
    assert _handshake_count(plane, result) == before + 1
    assert all(_handshake_count(plane, other) == 0 for other in ("plain_http", "not_tls") if other != result)
    log_text = plane.service.log_path.read_text(errors="replace")
    assert f"TLS handshake from 127.0.0.1 failed ({result}): " in log_text
    assert reason in log_text
    peer_certificate(https_port, "x.test", None)
    assert plane.health()[0] == 200
    assert "Traceback" not in plane.service.log_path.read_text(errors="replace")


def test_handshake_errors_are_classified_for_the_metric_and_log() -> None:
    # The exception shapes asyncio/uvloop raise from connect_accepted_socket.
    timeout = ConnectionAbortedError(
        "SSL handshake is taking longer than 10.0 seconds: aborting the connection"
    )
    assert classify_handshake_error(timeout, 10.0)[0] == "timeout"
    assert classify_handshake_error(TimeoutError(), 10.0)[0] == "timeout"
    assert classify_handshake_error(ConnectionResetError(), 10.0)[0] == "closed"
    assert classify_handshake_error(ConnectionAbortedError("peer aborted"), 10.0)[0] == "closed"
    eof = ssl.SSLEOFError(8, "EOF occurred in violation of protocol")
    assert classify_handshake_error(eof, 10.0)[0] == "closed"
    assert classify_handshake_error(ValueError("odd"), 10.0)[0] == "tls_error"


def test_silent_client_is_closed_after_the_handshake_timeout(
    redis_sync: redis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    plane, https_port = start_tls_plane(
        redis_server, tmp_path, extra_env={"DP_TLS_HANDSHAKE_TIMEOUT_SECONDS": "0.5"}
    )
    try:
        with socket.create_connection(("127.0.0.1", https_port), timeout=10) as sock:
            sock.sendall(b"\x16\x03\x01")  # a ClientHello that never completes
            try:
                closed = sock.recv(65536) == b""
            except ConnectionResetError:
                closed = True
        assert closed  # the server hung up; recv did not run into the client's own 10 s timeout
        assert _handshake_count(plane, "timeout") == 1
        log_text = plane.service.log_path.read_text(errors="replace")
        assert "failed (timeout): handshake not completed within 0.5s" in log_text
    finally:
        plane.service.stop()


def _get_over_tls(tls: ssl.SSLSocket, host: str) -> bytes:
    tls.sendall(f"GET /hello HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    answer = b""
    while chunk := tls.recv(65536):
        answer += chunk
    return answer


def _serve_app(plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend) -> LocalCA:
    """app.test proxied to the backend over HTTPS, with a certificate of a new local CA (returned)."""
    ca = LocalCA()
    store_certificate(redis_sync, plane, ca.issue("app", ["app.test"]))
    configure(redis_sync, plane, [proxy_to(http_backend.url, "app.test")])
    return ca


def test_tls13_session_resumes_from_the_one_ticket_sent(
    tls_plane: tuple[DataPlane, int], redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    # One TLS 1.3 ticket per full handshake (data_plane.tls.contexts.SESSION_TICKETS): a client that kept it
    # resumes without a full handshake, and is proxied as before.
    plane, https_port = tls_plane
    ca = _serve_app(plane, redis_sync, http_backend)
    context = client_context(ca.pem)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    with socket.create_connection(("127.0.0.1", https_port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="app.test") as tls:
            assert _get_over_tls(tls, "app.test").startswith(b"HTTP/1.1 200 ")
            session = tls.session  # TLS 1.3 tickets arrive after the handshake: read before taking it
            assert not tls.session_reused
    assert session is not None and session.has_ticket
    with socket.create_connection(("127.0.0.1", https_port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="app.test", session=session) as tls:
            assert _get_over_tls(tls, "app.test").startswith(b"HTTP/1.1 200 ")
            assert tls.session_reused


def test_a_burst_of_new_connections_is_accepted_and_served(
    tls_plane: tuple[DataPlane, int], redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    # More connections queued at once than one wake-up of the listener accepts (ACCEPT_BATCH): every one is
    # accepted, handshaken and answered, and each handshake is counted once.
    from data_plane.io.tls_listener import ACCEPT_BATCH

    plane, https_port = tls_plane
    ca = _serve_app(plane, redis_sync, http_backend)
    before = _handshake_count(plane, "ok")
    count = ACCEPT_BATCH * 2 + 5
    raws = [socket.create_connection(("127.0.0.1", https_port), timeout=10) for _ in range(count)]
    try:
        context = client_context(ca.pem)
        answers = []
        for raw in raws:
            with context.wrap_socket(raw, server_hostname="app.test") as tls:
                answers.append(_get_over_tls(tls, "app.test"))
    finally:
        for raw in raws:
            raw.close()
    assert all(answer.startswith(b"HTTP/1.1 200 ") for answer in answers)
    assert _handshake_count(plane, "ok") == before + count
