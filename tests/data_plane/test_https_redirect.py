"""Per-proxy scheme policy on the real data plane: HTTP -> HTTPS 308 once a certificate for the host is
served (never for ACME challenges), `redirect_http_to_https` off, HTTPS-only and HTTP-only proxies (421),
HSTS on HTTPS responses only; and the redirect-target builder refusing hosts that are not DNS names."""

from __future__ import annotations

import socket

import pytest
import redis

from data_plane.protocol.https_redirect import https_location
from shared import keys
from tests.certificates.test_cert_store import LocalCA
from tests.data_plane.backends import HttpBackend
from tests.data_plane.conftest import DataPlane
from tests.data_plane.helpers import configure, get, proxy_to
from tests.data_plane.tls_plane import https_request, store_certificate

pytestmark = pytest.mark.timeout(60)


def test_https_location_keeps_target_and_refuses_non_dns_hosts() -> None:
    assert https_location("app.test", b"/a/b?c=1&d", 443) == b"https://app.test/a/b?c=1&d"
    assert https_location("app.test", b"/", 8443) == b"https://app.test:8443/"
    assert https_location("xn--bcher-kva.example", b"/", 443) == b"https://xn--bcher-kva.example/"
    for host in ("evil.com/x.app.test", "evil@x.app.test", "a b.test", "", "-bad.test", "a..test", "x" * 254):
        assert https_location(host, b"/", 443) is None, host
    assert https_location("app.test", b"*", 443) is None


def test_http_is_redirected_once_the_certificate_is_live(
    tls_plane: tuple[DataPlane, int], redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    plane, https_port = tls_plane
    configure(redis_sync, plane, [proxy_to(http_backend.url, "app.test")])
    # No certificate yet: plain HTTP is served (the certificate may still be on its way from the CA).
    status, headers, _ = get(plane, "/echo?x=1", host="app.test")
    assert status == 200 and "location" not in headers

    ca = LocalCA()
    store_certificate(redis_sync, plane, ca.issue("app", ["app.test"]))
    requests_before = len(http_backend.requests)
    status, headers, body = get(plane, "/echo?x=1&y=%20", host="app.test:8080")
    assert status == 308, body
    assert headers["location"] == f"https://app.test:{https_port}/echo?x=1&y=%20"
    assert headers["location"].encode() in body
    # A POST is redirected too (308 keeps the method); its body is never read, so the connection closes.
    status, headers, _ = get(plane, "/echo", host="app.test", method="POST", body=b"payload")
    assert status == 308 and headers.get("connection") == "close"
    assert len(http_backend.requests) == requests_before  # nothing reached the backend over HTTP

    # ACME challenges are never redirected (the CA validates over plain HTTP).
    token = "tok_" + "B" * 40
    redis_sync.set(keys.acme_challenge(token), f"{token}.thumb", ex=60)
    status, _, body = get(plane, f"/.well-known/acme-challenge/{token}", host="app.test")
    assert (status, body) == (200, f"{token}.thumb".encode())

    # HTTPS serves it, with no HSTS header since the proxy has none configured.
    status, response_headers, _ = https_request(https_port, "app.test", "/echo", ca.pem)
    assert status == 200
    assert "strict-transport-security" not in dict(response_headers)


def test_scheme_switches_and_hsts(
    tls_plane: tuple[DataPlane, int], redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    plane, https_port = tls_plane
    ca = LocalCA()
    year = 365 * 24 * 3600
    configure(
        redis_sync,
        plane,
        [
            proxy_to(http_backend.url, "stay.test", redirect_http_to_https=False, hsts_max_age_seconds=year),
            proxy_to(http_backend.url, "secure.test", enable_http=False),
            proxy_to(http_backend.url, "plain.test", enable_https=False),
        ],
    )
    store_certificate(redis_sync, plane, ca.issue("multi", ["stay.test", "secure.test", "plain.test"]))

    # Redirect off: HTTP is served, and HSTS is never sent over plain HTTP.
    status, headers, _ = get(plane, "/echo", host="stay.test")
    assert status == 200 and "strict-transport-security" not in headers
    status, response_headers, _ = https_request(https_port, "stay.test", "/echo", ca.pem)
    assert status == 200
    assert [v for k, v in response_headers if k == "strict-transport-security"] == [f"max-age={year}"]

    # HTTPS-only with its certificate live: redirected; plain-HTTP-only: 421 on HTTPS.
    status, headers, _ = get(plane, "/echo", host="secure.test")
    assert status == 308 and headers["location"] == f"https://secure.test:{https_port}/echo"
    status, _, body = https_request(https_port, "plain.test", "/echo", ca.pem)
    assert status == 421 and b"plain.test is not served over HTTPS" in body
    status, headers, _ = get(plane, "/echo", host="plain.test")
    assert status == 200 and "location" not in headers


def test_https_only_proxy_without_certificate_answers_421(
    data_plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    # This plane has no HTTPS listener at all (no KEK): nothing can be live, so nothing is redirected.
    configure(
        redis_sync,
        data_plane,
        [
            proxy_to(http_backend.url, "secure.test", enable_http=False),
            proxy_to(http_backend.url, "app.test"),
        ],
    )
    status, headers, body = get(data_plane, "/echo", host="secure.test")
    assert status == 421 and b"secure.test is served over HTTPS only" in body
    assert "location" not in headers
    status, _, _ = get(data_plane, "/echo", host="app.test")
    assert status == 200


def test_wildcard_proxy_never_redirects_to_a_foreign_host(
    tls_plane: tuple[DataPlane, int], redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    plane, https_port = tls_plane
    configure(redis_sync, plane, [proxy_to(http_backend.url, "*.app.test")])
    store_certificate(redis_sync, plane, LocalCA().issue("wild", ["*.app.test"]))
    status, headers, _ = get(plane, "/", host="one.app.test")
    assert status == 308 and headers["location"] == f"https://one.app.test:{https_port}/"
    # The first label is not a DNS label, yet the wildcard certificate and proxy both match by suffix;
    # echoed, it would send the browser to https://intranet-host/...
    with socket.create_connection(("127.0.0.1", plane.http_port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: intranet-host/x.app.test\r\n\r\n")
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"location" not in answer.lower()
