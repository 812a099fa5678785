"""Issuance through the REAL data plane: `python -m data_plane` listens on Pebble's httpPort and answers the
HTTP-01 challenge from Redis, then serves the issued certificate on its HTTPS listener (picked up by the
config-version bump the certificate write makes).

With two replicas on one port (SO_REUSEPORT) the kernel hands each of Pebble's validation connections to
either process; each replica's `mhp_acme_challenges_answered_total` (its own internal /metrics) counts what
it answered, and Pebble's log counts what it asked, so the test proves both replicas answered and that every
validation was answered exactly once.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.harness.pebble import Pebble
from tests.harness.prometheus import sample_value
from tests.harness.services import RedisServer, free_port

from .conftest import ADMIN, CERTS, wait_for_status
from .pebble_data_plane import start_data_plane
from .tls_probe import handshake

pytestmark = pytest.mark.certificates

# Orders to place at most before concluding that one replica never gets a validation connection. Each order
# of DOMAINS_PER_ORDER names makes Pebble open 3 connections per name (its multi-perspective validation), so
# one order lands entirely on one of two replicas with probability about 2 * 2**-18.
MAX_ORDERS = 5
DOMAINS_PER_ORDER = 6
_VALIDATION = re.compile(r"Attempting to validate w/ HTTP: http://([^:/]+)[:/]")


@pytest.fixture
def real_data_plane(redis_server: RedisServer, pebble: Pebble, tmp_path: Path) -> Iterator[int]:
    """A real data plane on Pebble's httpPort; yields its HTTPS port."""
    data_plane = start_data_plane(redis_server, pebble, tmp_path, free_port())
    try:
        yield data_plane.https_port
    finally:
        data_plane.service.stop()


@dataclass(frozen=True)
class Replicas:
    https_port: int  # shared by both (SO_REUSEPORT), as is Pebble's httpPort
    internal_ports: tuple[int, int]  # one each: /metrics of that process alone


@pytest.fixture
def two_replicas(redis_server: RedisServer, pebble: Pebble, tmp_path: Path) -> Iterator[Replicas]:
    """Two data-plane processes sharing Pebble's httpPort and one HTTPS port (SO_REUSEPORT)."""
    https_port = free_port()
    first = start_data_plane(redis_server, pebble, tmp_path, https_port, reuse_port=True)
    try:
        second = start_data_plane(redis_server, pebble, tmp_path, https_port, reuse_port=True)
        try:
            yield Replicas(https_port, (first.internal_port, second.internal_port))
        finally:
            second.service.stop()
    finally:
        first.service.stop()


async def challenges_answered(internal_port: int) -> int:
    """`mhp_acme_challenges_answered_total` of the one data-plane process behind `internal_port`."""
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{internal_port}/metrics")
    assert response.status_code == 200, response.text
    value = sample_value(response.text, "mhp_acme_challenges_answered_total")
    assert value is not None, f"no mhp_acme_challenges_answered_total on :{internal_port}/metrics"
    return int(value)


def pebble_validations(pebble: Pebble, domains: list[str]) -> int:
    """HTTP-01 requests Pebble made for `domains` (one log line per request, several per authorisation)."""
    text = pebble.pebble.log_path.read_text(errors="replace")
    wanted = set(domains)
    return sum(1 for match in _VALIDATION.finditer(text) if match.group(1) in wanted)


async def test_issued_through_real_data_plane_and_served_by_it(
    api_with_worker: httpx.AsyncClient, real_data_plane: int, pebble: Pebble
) -> None:
    created = await api_with_worker.post(
        CERTS, json={"cert_name": "real", "domains": ["real.example.com"]}, headers=ADMIN
    )
    assert created.status_code == 201, created.text
    body = await wait_for_status(api_with_worker, "real", {"active", "failed"})
    assert body["status"] == "active", body["error"]

    root = pebble.root_pem()
    deadline = time.monotonic() + 10
    while True:
        peer = await handshake(real_data_plane, "real.example.com")
        if peer.serial == body["serial"] or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert peer.serial == body["serial"]
    verified = await handshake(real_data_plane, "real.example.com", root)
    assert verified.alpn == "http/1.1"
    assert (await handshake(real_data_plane, "nobody.example.com")).common_name == "fallback.test.localhost"


async def test_two_replicas_both_answer_challenges_and_serve_the_certificate(
    api_with_worker: httpx.AsyncClient, two_replicas: Replicas, pebble: Pebble
) -> None:
    # Pebble validates every name on its own connections; the kernel spreads them over both replicas at
    # random, and whichever one is reached must answer from the shared Redis. Order until both have answered.
    ports = two_replicas.internal_ports
    assert [await challenges_answered(port) for port in ports] == [0, 0]
    answered = [0, 0]
    validations = 0
    body: dict[str, object] = {}
    domains: list[str] = []
    for order in range(MAX_ORDERS):
        name = f"replicas{order}"
        domains = [f"o{order}-r{i}.replicas.example.com" for i in range(DOMAINS_PER_ORDER)]
        created = await api_with_worker.post(
            CERTS, json={"cert_name": name, "domains": domains}, headers=ADMIN
        )
        assert created.status_code == 201, created.text
        body = await wait_for_status(api_with_worker, name, {"active", "failed"})
        assert body["status"] == "active", body["error"]
        # Active means Pebble got every validation response, so every answer is already counted.
        validations += pebble_validations(pebble, domains)
        answered = [await challenges_answered(port) for port in ports]
        assert validations >= DOMAINS_PER_ORDER * (order + 1)
        assert sum(answered) == validations, f"replicas answered {answered}, Pebble asked {validations} times"
        if all(answered):
            break
    assert all(answered), (
        f"after {MAX_ORDERS} orders ({validations} validations) one replica never answered a challenge: "
        f"answered per replica {answered}; is SO_REUSEPORT spreading connections?"
    )

    root = pebble.root_pem()
    served = domains[0]
    for _ in range(4):  # new connections land on either replica; each must serve the new certificate
        deadline = time.monotonic() + 10
        while True:
            peer = await handshake(two_replicas.https_port, served)
            if peer.serial == body["serial"] or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert peer.serial == body["serial"]
    assert (await handshake(two_replicas.https_port, served, root)).alpn == "http/1.1"
