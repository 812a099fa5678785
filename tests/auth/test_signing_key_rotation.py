"""Token-signing keys live in Redis, encrypted with the KEK, shared by every control-plane replica and
rotated without restarts. Two real control planes on one Redis and a real data plane in front of a real MCP
server: the ring is generated once (no key in the environment), a token signed before a rotation keeps
working, a token signed after it by EITHER control plane verifies, the JWKS lists both keys, and once the
retirement time has passed the old keys leave the JWKS and their tokens are refused.

The replicas re-read the ring only once an hour here (OAUTH_SIGNING_KEYS_REFRESH_SECONDS), so the second
one can only learn of a rotation through the wake-up the rotation publishes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from jose import jwt

from shared import keys
from shared.encryption import new_key_b64
from tests.control_plane.conftest import ADMIN, RunningControlPlane, bearer, create_token, start_control_plane
from tests.data_plane.conftest import DataPlane, start_data_plane
from tests.harness.services import RedisServer, free_port

from .conftest import data_plane_caught_up, oauth_control_plane_env, protect

pytestmark = [pytest.mark.auth, pytest.mark.slow]

HOST = "127.0.0.1"
KEYS = "/api/v1/oauth/keys/"
ACCESS_TOKEN_TTL_SECONDS = 600
DEADLINE_SECONDS = 30.0  # generous: a bound on waiting, never a measured duration
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-03-26",
        "capabilities": {},
        "clientInfo": {"name": "k", "version": "1"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


@dataclass
class Replicas:
    issuer: str
    first: RunningControlPlane
    second: RunningControlPlane


@pytest.fixture
def replicas(redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path) -> Iterator[Replicas]:
    """Two control planes sharing Redis, the KEK and the issuer URL, with no signing key configured."""
    kek = new_key_b64()
    ports = (free_port(), free_port())
    issuer = f"http://127.0.0.1:{ports[0]}"
    started = []
    try:
        for index, port in enumerate(ports):
            env = oauth_control_plane_env(redis_server, port, "")
            env.update(
                OAUTH_ISSUER=issuer,
                KEY_ENCRYPTION_KEY_B64=kek,
                BASE_DOMAIN="test.localhost",
                OAUTH_ACCESS_TOKEN_TTL_SECONDS=str(ACCESS_TOKEN_TTL_SECONDS),
                OAUTH_SIGNING_KEYS_REFRESH_SECONDS="3600",
            )
            service = start_control_plane(env, port, tmp_path / f"cp{index}")
            started.append(RunningControlPlane(url=f"http://127.0.0.1:{port}", service=service, env=env))
        yield Replicas(issuer, started[0], started[1])
    finally:
        for replica in started:
            replica.service.stop()


async def _until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not await condition():
        assert time.monotonic() < deadline, f"not within {DEADLINE_SECONDS} s: {what}"
        await asyncio.sleep(0.1)


def _kid(token: str) -> str:
    kid: str = jwt.get_unverified_header(token)["kid"]
    return kid


async def _jwks_kids(http: httpx.AsyncClient) -> list[str]:
    return [key["kid"] for key in (await http.get("/jwks.json")).json()["keys"]]


async def _redis_jwks_kids(redis_client: aioredis.Redis) -> list[str]:
    return [key["kid"] for key in json.loads(await redis_client.get(keys.oauth_jwks()))["keys"]]


@pytest.fixture
async def clients(replicas: Replicas) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    async with (
        httpx.AsyncClient(base_url=replicas.first.url, timeout=20) as first,
        httpx.AsyncClient(base_url=replicas.second.url, timeout=20) as second,
    ):
        yield first, second


async def test_rotation_reaches_every_replica_and_data_plane_and_old_keys_retire(
    replicas: Replicas,
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
    redis_client: aioredis.Redis,
    redis_server: RedisServer,
    mcp_upstream: str,
    tmp_path: Path,
) -> None:
    first, second = clients
    plane: DataPlane = start_data_plane(
        redis_server, tmp_path / "dp", {"OAUTH_ISSUER": replicas.issuer, "BASE_DOMAIN": "test.localhost"}
    )
    try:
        origin = f"http://{HOST}:{plane.http_port}"
        resource = f"{origin}/mcp"
        await protect(first, HOST, users=["*"], target_url=mcp_upstream)
        created = await first.post(
            "/api/v1/oauth/clients/",
            json={
                "client_name": "Job",
                "redirect_uris": ["http://127.0.0.1/x"],
                "allow_client_credentials": True,
            },
            headers=ADMIN,
        )
        assert created.status_code == 201, created.text
        machine = (created.json()["client_id"], created.json()["client_secret"])
        response = await first.put(
            f"/api/v1/proxy/targets/{HOST}/auth",
            json={"allowed_users": ["*"], "allowed_clients": [machine[0]]},
            headers=ADMIN,
        )
        assert response.status_code == 200, response.text

        async def token(http: httpx.AsyncClient) -> str:
            issued = await http.post(
                "/token", data={"grant_type": "client_credentials", "resource": resource}, auth=machine
            )
            assert issued.status_code == 200, issued.text
            value: str = issued.json()["access_token"]
            return value

        async def status_at_data_plane(access_token: str) -> int:
            await data_plane_caught_up(redis_client, plane)
            async with httpx.AsyncClient(base_url=origin, timeout=20) as on_resource:
                headers = {**MCP_HEADERS, "Authorization": f"Bearer {access_token}"}
                return (await on_resource.post("/mcp", json=INITIALIZE, headers=headers)).status_code

        # One ring, generated in Redis (nothing in the environment), shared by both replicas.
        before = await token(first)
        old_kid = _kid(before)
        assert _kid(await token(second)) == old_kid
        assert await _jwks_kids(first) == await _jwks_kids(second) == [old_kid]
        assert await _redis_jwks_kids(redis_client) == [old_kid]
        stored = await redis_client.get(keys.oauth_signing_keys())
        assert "mhp-enc:v1:" in stored and "PRIVATE KEY" not in stored and "BEGIN" not in stored
        assert await status_at_data_plane(before) == 200

        # Rotate through the first replica, with the default retirement.
        rotated = await first.post(f"{KEYS}rotate", headers=ADMIN)
        assert rotated.status_code == 200, rotated.text
        listing = {key["kid"]: key for key in rotated.json()}
        [new_kid] = [kid for kid, key in listing.items() if key["active"]]
        assert new_kid != old_kid and set(listing) == {old_kid, new_kid}
        # The old key verifies at least as long as the tokens it signed live.
        assert listing[old_kid]["retires_at"] >= time.time() + ACCESS_TOKEN_TTL_SECONDS - 5
        assert listing[new_kid]["retires_at"] is None
        assert "private_key_encrypted" not in rotated.text and "mhp-enc" not in rotated.text

        after_first = await token(first)
        assert _kid(after_first) == new_kid

        async def second_signs_with_the_new_key() -> bool:
            return _kid(await token(second)) == new_kid

        await _until(second_signs_with_the_new_key, "the second replica signs with the new key")
        after_second = await token(second)
        for http in (first, second):
            assert set(await _jwks_kids(http)) == {old_kid, new_kid}
        assert set(await _redis_jwks_kids(redis_client)) == {old_kid, new_kid}
        assert (await second.get(KEYS, headers=ADMIN)).json() == rotated.json()
        for access_token in (before, after_first, after_second):
            assert await status_at_data_plane(access_token) == 200

        # Rotate again through the second replica, retiring every older key two seconds later.
        rotated = await second.post(f"{KEYS}rotate", json={"retire_previous_after_seconds": 2}, headers=ADMIN)
        assert rotated.status_code == 200, rotated.text
        [newest] = [key["kid"] for key in rotated.json() if key["active"]]

        async def only_the_newest_is_published() -> bool:
            return (
                await _redis_jwks_kids(redis_client)
                == await _jwks_kids(first)
                == await _jwks_kids(second)
                == [newest]
            )

        await _until(only_the_newest_is_published, "the retired keys leave the JWKS")
        assert [key["kid"] for key in (await first.get(KEYS, headers=ADMIN)).json()] == [newest]
        for access_token in (before, after_first, after_second):
            assert await status_at_data_plane(access_token) == 401
        assert await status_at_data_plane(await token(first)) == 200
    finally:
        plane.service.stop()


async def test_signing_key_endpoints_are_for_the_admin_only(
    http: httpx.AsyncClient, cp: RunningControlPlane
) -> None:
    ordinary = bearer(await create_token(http, "ordinary"))
    for method, path in (("GET", KEYS), ("POST", f"{KEYS}rotate")):
        assert (await http.request(method, path)).status_code == 401, path
        refused = await http.request(method, path, headers=ordinary)
        assert refused.status_code == 403 and "admin" in refused.json()["detail"], path
        allowed = await http.request(method, path, headers=ADMIN)
        assert allowed.status_code == 200, allowed.text
        assert [key["active"] for key in allowed.json()].count(True) == 1
    invalid = await http.post(f"{KEYS}rotate", json={"retire_previous_after_seconds": -1}, headers=ADMIN)
    assert invalid.status_code == 422
