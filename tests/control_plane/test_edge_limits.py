"""The control plane's edge protections against real `python -m control_plane` processes (issue 9, items 7
and 8): request bodies bounded while they stream, per-client-IP rate limits shared through Redis by every
replica, short-lived unused registrations."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from shared import keys
from tests.harness.services import RedisServer

from .conftest import ADMIN, RunningControlPlane, bearer, serving

PROXIES = "/api/v1/proxy/targets/"


@pytest.fixture(scope="module")
def limited(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningControlPlane]:
    with serving(
        redis_server,
        tmp_path_factory.mktemp("limited"),
        RATE_LIMIT_REGISTER="3",
        RATE_LIMIT_API_AUTH_FAILURES="2",
        RATE_LIMIT_WINDOW_SECONDS="600",
        OAUTH_UNUSED_CLIENT_TTL_SECONDS="120",
    ) as plane:
        yield plane


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def _raw(port: int, head: bytes, body_chunks: Iterator[bytes] | None = None) -> bytes:
    """Send a head (and then chunks until the server stops reading); return what the server answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        try:
            for chunk in body_chunks or iter(()):
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed after answering 413: what we want
        answer = b""
        try:
            while data := sock.recv(65536):
                answer += data
        except (ConnectionResetError, TimeoutError):
            pass
        return answer


def _huge_chunked_body(total_bytes: int) -> Iterator[bytes]:
    piece = b"a" * 65536
    sent = 0
    while sent < total_bytes:
        yield b"%x\r\n%s\r\n" % (len(piece), piece)
        sent += len(piece)
    yield b"0\r\n\r\n"


async def test_a_300_mb_token_request_is_refused_while_it_streams(
    limited: RunningControlPlane, redis_client: aioredis.Redis
) -> None:
    port = int(limited.env["API_PORT"])
    before = _rss_kib(limited.service.pid)
    # Declared up front: refused before a byte of the body is read.
    declared = (
        b"POST /token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 300000000\r\n\r\n"
    )
    answer = await asyncio.to_thread(_raw, port, declared)
    assert _status_of(answer) == 413, answer[:200]
    assert b"invalid_request" in answer and b"65536 bytes" in answer
    # Not declared (chunked): cut off once it passes the limit, whatever follows. (/register reads its body
    # whatever the server's configuration; /token here answers 503 before reading, having no signing key.)
    chunked = (
        b"POST /register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    answer = await asyncio.to_thread(_raw, port, chunked, _huge_chunked_body(300 * 1024 * 1024))
    assert _status_of(answer) == 413, answer[:200]
    grown_mib = (_rss_kib(limited.service.pid) - before) / 1024
    assert grown_mib < 32, f"RSS grew by {grown_mib:.0f} MiB while refusing the body"
    # The service is fine afterwards.
    async with httpx.AsyncClient(base_url=limited.url) as http:
        assert (await http.get("/health")).status_code == 200


async def test_the_management_api_has_its_own_larger_limit(
    limited: RunningControlPlane, redis_client: aioredis.Redis
) -> None:
    async with httpx.AsyncClient(base_url=limited.url) as http:
        big = {
            "hostname": "big.example.com",
            "target_url": "http://127.0.0.1:3000",
            "x": "a" * (2 * 1024 * 1024),
        }
        response = await http.post(PROXIES, json=big, headers=ADMIN)
        assert response.status_code == 413
        assert "1048576 bytes" in response.json()["detail"]
        # 100 KiB is fine for the API (then refused for the unknown field), too much for /register.
        medium = {"hostname": "m.example.com", "target_url": "http://127.0.0.1:3000", "x": "a" * 100_000}
        assert (await http.post(PROXIES, json=medium, headers=ADMIN)).status_code == 422
        registration = await http.post(
            "/register", json={"redirect_uris": ["http://127.0.0.1/cb"], "x": "a" * 100_000}
        )
        assert registration.status_code == 413
        assert await redis_client.hlen(keys.proxies()) == 0


async def _register(http: httpx.AsyncClient) -> httpx.Response:
    return await http.post(
        "/register", json={"redirect_uris": ["http://127.0.0.1:9/cb"], "client_name": "flood"}
    )


async def test_registrations_are_rate_limited_per_client_ip_across_replicas(
    limited: RunningControlPlane,
    redis_server: RedisServer,
    redis_client: aioredis.Redis,
    tmp_path: Path,
) -> None:
    async with httpx.AsyncClient(base_url=limited.url) as http:
        for _ in range(3):
            assert (await _register(http)).status_code == 201
        refused = await _register(http)
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) > 0
        assert refused.json()["error"] == "temporarily_unavailable"
    # Another replica on the same Redis knows this client already used its registrations.
    with serving(redis_server, tmp_path, RATE_LIMIT_REGISTER="3", RATE_LIMIT_WINDOW_SECONDS="600") as replica:
        async with httpx.AsyncClient(base_url=replica.url) as http:
            assert (await _register(http)).status_code == 429
        # Another client address has its own allowance, and cannot borrow one by claiming a forwarded
        # address: 127.0.0.2 is not a trusted proxy (TRUSTED_PROXY_CIDRS is 127.0.0.1 and ::1).
        other = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        async with httpx.AsyncClient(base_url=replica.url, transport=other) as http:
            assert (await _register(http)).status_code == 201
            for _ in range(2):
                spoofed = await http.post(
                    "/register",
                    json={"redirect_uris": ["http://127.0.0.1:9/cb"]},
                    headers={"X-Forwarded-For": "203.0.113.9"},
                )
                assert spoofed.status_code == 201
            assert (await _register(http)).status_code == 429
        # A trusted proxy (the data plane on 127.0.0.1) names the client it speaks for.
        async with httpx.AsyncClient(base_url=replica.url) as http:
            forwarded = await http.post(
                "/register",
                json={"redirect_uris": ["http://127.0.0.1:9/cb"]},
                headers={"X-Forwarded-For": "198.51.100.4"},
            )
            assert forwarded.status_code == 201


async def test_guessing_api_tokens_is_slowed_down(
    limited: RunningControlPlane, redis_client: aioredis.Redis
) -> None:
    async with httpx.AsyncClient(base_url=limited.url) as http:
        good = await http.get(PROXIES, headers=ADMIN)
        assert good.status_code == 200  # successes are not counted
        for guess in ("acm_guess-1", "acm_guess-2"):
            assert (await http.get(PROXIES, headers=bearer(guess))).status_code == 401
        blocked = await http.get(PROXIES, headers=bearer("acm_guess-3"))
        assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 0
        assert "too many requests" in blocked.json()["detail"]


async def test_unused_registrations_expire_soon_and_use_renews_them(
    limited: RunningControlPlane, redis_client: aioredis.Redis
) -> None:
    other = httpx.AsyncHTTPTransport(local_address="127.0.0.3")  # a fresh rate-limit allowance
    async with httpx.AsyncClient(base_url=limited.url, transport=other) as http:
        registered = (await _register(http)).json()
        key = keys.oauth_client(registered["client_id"])
        assert 0 < await redis_client.ttl(key) <= 120
        # Reading the registration (RFC 7592) is a use of it.
        read = await http.get(
            f"/register/{registered['client_id']}",
            headers=bearer(registered["registration_access_token"]),
        )
        assert read.status_code == 200
        assert await redis_client.ttl(key) > 86400
