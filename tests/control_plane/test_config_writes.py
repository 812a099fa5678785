"""The config-write contract: one transaction bumps the version and appends change events, then a wake-up
is published; concurrent writers never lose a check; a damaged stored row never breaks the API."""

from __future__ import annotations

import asyncio

import httpx
import redis.asyncio as aioredis

from shared import keys
from shared.models import ChangeEvent

from .conftest import ADMIN

PROXIES = "/api/v1/proxy/targets/"


async def events(redis_client: aioredis.Redis) -> list[ChangeEvent]:
    return [ChangeEvent.from_stream_fields(f) for _id, f in await redis_client.xrange(keys.changes_stream())]


async def test_each_write_bumps_version_appends_event_and_publishes(
    api: httpx.AsyncClient, redis_client: aioredis.Redis
) -> None:
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(keys.changes_channel())
    assert (await pubsub.get_message(timeout=5))["type"] == "subscribe"  # type: ignore[index]
    try:
        create = await api.post(
            PROXIES, json={"hostname": "App.Example.COM", "target_url": "http://127.0.0.1:1"}, headers=ADMIN
        )
        assert create.status_code == 201
        patch = await api.patch(f"{PROXIES}app.example.com", json={"enabled": False}, headers=ADMIN)
        assert patch.status_code == 200
        delete = await api.delete(f"{PROXIES}app.example.com", headers=ADMIN)
        assert delete.status_code == 204

        assert await redis_client.get(keys.config_version()) == "3"
        got = [(e.version, e.kind, e.action, e.name, e.owner) for e in await events(redis_client)]
        assert got == [
            (1, "proxy", "created", "app.example.com", "admin"),
            (2, "proxy", "updated", "app.example.com", "admin"),
            (3, "proxy", "deleted", "app.example.com", "admin"),
        ]
        wakeups = []
        while len(wakeups) < 3:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
            assert message is not None, f"only got wake-ups {wakeups}"
            wakeups.append(message["data"])
        assert wakeups == ["1", "2", "3"]
    finally:
        await pubsub.aclose()


async def test_rejected_writes_change_nothing(api: httpx.AsyncClient, redis_client: aioredis.Redis) -> None:
    await api.post(
        PROXIES, json={"hostname": "a.example.com", "target_url": "http://127.0.0.1:1"}, headers=ADMIN
    )
    before = await redis_client.get(keys.config_version())
    assert (
        await api.post(PROXIES, json={"hostname": "a.example.com", "target_url": "http://x"}, headers=ADMIN)
    ).status_code == 409
    assert (
        await api.post(PROXIES, json={"hostname": "*.com", "target_url": "http://x"}, headers=ADMIN)
    ).status_code == 422
    assert (await api.delete(f"{PROXIES}missing.example.com", headers=ADMIN)).status_code == 404
    assert await redis_client.get(keys.config_version()) == before
    assert len(await events(redis_client)) == 1


async def test_concurrent_creates_of_one_name_yield_one_winner(
    api: httpx.AsyncClient, redis_client: aioredis.Redis
) -> None:
    async def attempt(i: int) -> int:
        response = await api.post(
            PROXIES,
            json={"hostname": "race.example.com", "target_url": f"http://127.0.0.1:{1000 + i}"},
            headers=ADMIN,
        )
        return response.status_code

    statuses = await asyncio.gather(*(attempt(i) for i in range(12)))
    assert sorted(statuses) == [201] + [409] * 11
    assert await redis_client.hlen(keys.proxies()) == 1
    assert await redis_client.get(keys.config_version()) == "1"


async def test_a_damaged_row_is_skipped_not_fatal(
    api: httpx.AsyncClient, redis_client: aioredis.Redis
) -> None:
    await api.post(
        PROXIES, json={"hostname": "good.example.com", "target_url": "http://127.0.0.1:1"}, headers=ADMIN
    )
    await redis_client.hset(
        keys.proxies(), "bad.example.com", '{"hostname": "bad.example.com", "target_url": 5'
    )
    listing = await api.get(PROXIES, headers=ADMIN)
    assert listing.status_code == 200
    assert [p["hostname"] for p in listing.json()] == ["good.example.com"]
    # It reads as absent, a create cannot silently overwrite it, and the admin can delete it.
    assert (await api.get(f"{PROXIES}bad.example.com", headers=ADMIN)).status_code == 404
    again = await api.post(
        PROXIES, json={"hostname": "bad.example.com", "target_url": "http://127.0.0.1:1"}, headers=ADMIN
    )
    assert again.status_code == 409
    assert (await api.delete(f"{PROXIES}bad.example.com", headers=ADMIN)).status_code == 204
    assert await redis_client.hexists(keys.proxies(), "bad.example.com") == 0
    assert (
        await api.post(
            PROXIES, json={"hostname": "bad.example.com", "target_url": "http://127.0.0.1:1"}, headers=ADMIN
        )
    ).status_code == 201
