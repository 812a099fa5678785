"""Host-port allocation (`/api/v1/ports/`) against real control-plane processes and a real Redis: atomic
across two replicas under load, never a port another program holds, never a restricted one, ordinary
tokens inside PORT_RANGES and on 127.0.0.1 unless granted, release, and leaked allocations reclaimed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from shared import keys
from tests.harness.services import RedisServer, free_port, start_redis

from .conftest import ADMIN, RunningControlPlane, bearer, control_plane_env, start_control_plane

PORTS = "/api/v1/ports/"
RANGE_SIZE = 300
CONCURRENT = 200
BOUND_ELSEWHERE = 100


def _bindable(port: int) -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("0.0.0.0", port))
        return True
    except OSError:
        return False


def free_window(size: int) -> int:
    """The first port of `size` consecutive ports that nothing on this host holds (below the ephemeral range,
    so the kernel does not hand them out meanwhile)."""
    start = 22000
    while start + size < 32000:
        blocked = next((p for p in range(start, start + size) if not _bindable(p)), None)
        if blocked is None:
            return start
        start = blocked + 1
    raise AssertionError(f"no {size} consecutive free ports below 32000")


@contextlib.contextmanager
def listening(ports: list[int]) -> Iterator[None]:
    """Another program holding these ports (listening on 127.0.0.1 only)."""
    sockets = []
    try:
        for port in ports:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", port))
            sock.listen()
            sockets.append(sock)
        yield
    finally:
        for sock in sockets:
            sock.close()


def _start(redis_server: RedisServer, log_dir: Path, **extra: str) -> RunningControlPlane:
    port = free_port()
    env = control_plane_env(redis_server, port)
    env.update(ACME_WORKER_ENABLED="false", **extra)
    return RunningControlPlane(f"http://127.0.0.1:{port}", start_control_plane(env, port, log_dir), env)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """This module's own redis-server (it overrides the session's for these tests and their `redis_client`).
    The reclaim test waits for its control plane's reconcile pass, and the control plane another module
    keeps running for the whole session (the auth tests') takes the same reconcile lock for 27 s of every
    30 s on a shared Redis: the reclaim would then come only from that one, up to 30 s later."""
    server = start_redis(tmp_path_factory.mktemp("redis-ports"))
    try:
        yield server
    finally:
        server.service.stop()


@pytest.fixture
async def two_replicas(
    redis_client: aioredis.Redis, redis_server: RedisServer, tmp_path: Path
) -> AsyncIterator[tuple[list[RunningControlPlane], int]]:
    first = free_window(RANGE_SIZE)
    ranges = f"{first}-{first + RANGE_SIZE - 1}"
    planes = [_start(redis_server, tmp_path / f"cp{i}", PORT_RANGES=ranges) for i in range(2)]
    try:
        yield planes, first
    finally:
        for plane in planes:
            plane.service.stop()


async def test_two_replicas_allocate_200_distinct_ports_and_skip_ports_in_use(
    two_replicas: tuple[list[RunningControlPlane], int],
) -> None:
    planes, first = two_replicas
    held = list(range(first, first + BOUND_ELSEWHERE))  # another program's, inside the range
    limits = httpx.Limits(max_connections=CONCURRENT, max_keepalive_connections=CONCURRENT)
    with listening(held):
        async with (
            httpx.AsyncClient(base_url=planes[0].url, timeout=60, limits=limits) as a,
            httpx.AsyncClient(base_url=planes[1].url, timeout=60, limits=limits) as b,
        ):
            clients = [a, b]
            responses = await asyncio.gather(
                *(
                    clients[i % 2].post(PORTS, json={"purpose": f"load {i}"}, headers=ADMIN)
                    for i in range(CONCURRENT)
                )
            )
            assert [r.status_code for r in responses] == [201] * CONCURRENT, [
                r.text for r in responses if r.status_code != 201
            ][:3]
            ports = [r.json()["port"] for r in responses]
            assert len(set(ports)) == CONCURRENT
            assert not set(ports) & set(held), "a port another program holds was handed out"
            assert set(ports) == set(range(first + BOUND_ELSEWHERE, first + RANGE_SIZE))
            # The range is used up: the next one is a clear 409, not a port in use.
            full = await a.post(PORTS, json={}, headers=ADMIN)
            assert full.status_code == 409 and "no free tcp port" in full.json()["detail"]
            listed = (await b.get(PORTS, headers=ADMIN)).json()
            assert sorted(item["port"] for item in listed) == sorted(ports)


@pytest.fixture
async def plane(
    redis_client: aioredis.Redis, redis_server: RedisServer, tmp_path: Path
) -> AsyncIterator[RunningControlPlane]:
    first = free_window(20)
    running = _start(
        redis_server,
        tmp_path / "cp",
        PORT_RANGES=f"{first}-{first + 19}",
        SERVICE_RECONCILE_INTERVAL_SECONDS="0.5",
        PORT_RECONCILE_GRACE_SECONDS="1",
    )
    try:
        yield running
    finally:
        running.service.stop()


@pytest.fixture
async def http(plane: RunningControlPlane) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=plane.url, timeout=30) as client:
        yield client


async def _token(http: httpx.AsyncClient, name: str, grants: list[str] | None = None) -> dict[str, str]:
    made = await http.post("/api/v1/tokens/", json={"name": name, "grants": grants or []}, headers=ADMIN)
    assert made.status_code == 201, made.text
    return bearer(made.json()["token"])


def _range_of(plane: RunningControlPlane) -> tuple[int, int]:
    low, high = plane.env["PORT_RANGES"].split("-")
    return int(low), int(high)


async def test_restricted_ports_and_ranges(http: httpx.AsyncClient, plane: RunningControlPlane) -> None:
    tenant = await _token(http, "tenant")
    api_port = int(plane.env["API_PORT"])
    for port in (22, 80, 443, api_port):
        refused = await http.post(PORTS, json={"port": port}, headers=ADMIN)
        assert refused.status_code == 422 and "restricted" in refused.text, refused.text
        check = (await http.get(f"{PORTS}{port}/check", headers=tenant)).json()
        assert check["available"] is False and "restricted" in check["reason"]
    outside = free_window(1) + 5000
    refused = await http.post(PORTS, json={"port": outside}, headers=tenant)
    assert refused.status_code == 422 and "outside the ranges" in refused.text
    if _bindable(outside):  # the admin may name a port outside the ranges
        assert (await http.post(PORTS, json={"port": outside}, headers=ADMIN)).status_code == 201


async def test_a_port_another_program_holds_is_refused(
    http: httpx.AsyncClient, plane: RunningControlPlane
) -> None:
    low, _high = _range_of(plane)
    with listening([low]):
        refused = await http.post(PORTS, json={"port": low}, headers=ADMIN)
        assert refused.status_code == 409 and "in use on this host" in refused.json()["detail"]
        check = (await http.get(f"{PORTS}{low}/check", headers=ADMIN)).json()
        assert check == {"port": low, "protocol": "tcp", "available": False, "reason": check["reason"]}
        assert "in use" in check["reason"]
    assert (await http.post(PORTS, json={"port": low}, headers=ADMIN)).status_code == 201
    again = await http.post(PORTS, json={"port": low}, headers=ADMIN)
    assert again.status_code == 409 and "already allocated" in again.json()["detail"]


async def test_public_binds_need_a_grant_and_owners_see_their_own(
    http: httpx.AsyncClient, plane: RunningControlPlane
) -> None:
    alice = await _token(http, "alice")
    bob = await _token(http, "bob", grants=["public-ports"])
    refused = await http.post(PORTS, json={"bind": "0.0.0.0"}, headers=alice)
    assert refused.status_code == 403 and "public-ports" in refused.json()["detail"]
    mine = await http.post(PORTS, json={"purpose": "dev server"}, headers=alice)
    public = await http.post(
        PORTS, json={"bind": "0.0.0.0", "purpose": "game", "protocol": "udp"}, headers=bob
    )
    assert mine.status_code == 201 and public.status_code == 201, public.text
    assert public.json()["bind"] == "0.0.0.0" and public.json()["owner"] == "bob"
    alice_port, bob_port = mine.json()["port"], public.json()["port"]

    everything = (await http.get(PORTS, headers=ADMIN)).json()
    assert {(p["port"], p["owner"], p["bind"], p["purpose"]) for p in everything} == {
        (alice_port, "alice", "127.0.0.1", "dev server"),
        (bob_port, "bob", "0.0.0.0", "game"),
    }
    assert [p["port"] for p in (await http.get(PORTS, headers=alice)).json()] == [alice_port]
    assert (
        await http.get(f"{PORTS}{bob_port}", params={"protocol": "udp"}, headers=alice)
    ).status_code == 403
    assert (
        await http.delete(f"{PORTS}{bob_port}", params={"protocol": "udp"}, headers=alice)
    ).status_code == 403
    assert (await http.delete(f"{PORTS}{alice_port}", headers=alice)).status_code == 204
    assert (await http.get(f"{PORTS}{alice_port}", headers=alice)).status_code == 404
    # Deleting a token releases its ports with everything else it owns.
    assert (await http.delete("/api/v1/tokens/bob", headers=ADMIN)).status_code == 204
    assert (await http.get(PORTS, headers=ADMIN)).json() == []


async def test_leaked_allocations_are_reclaimed(
    http: httpx.AsyncClient, plane: RunningControlPlane, redis_client: aioredis.Redis
) -> None:
    """What a crash between allocating and saving leaves behind (an allocation naming a service that was
    never saved, or a token that is gone) is freed after the grace period; live ones stay."""
    low, _high = _range_of(plane)
    kept = await http.post(PORTS, json={"port": low, "purpose": "kept"}, headers=ADMIN)
    assert kept.status_code == 201
    old = time.time() - 3600
    leaked = {
        keys.port_field("tcp", low + 1): {"port": low + 1, "owner": "admin", "service": "never-saved"},
        keys.port_field("tcp", low + 2): {"port": low + 2, "owner": "gone-token"},
    }
    for field, values in leaked.items():
        allocation = {"allocation_id": field, "created_at": old, **values}
        await redis_client.hset(keys.ports(), field, json.dumps(allocation))

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        fields = set(await redis_client.hkeys(keys.ports()))
        if fields == {keys.port_field("tcp", low)}:
            break
        await asyncio.sleep(0.2)
    assert set(await redis_client.hkeys(keys.ports())) == {keys.port_field("tcp", low)}
