"""Deleting a token deletes everything it owns, in one transaction, with a change event per object."""

from __future__ import annotations

import asyncio

import httpx
import redis.asyncio as aioredis

from control_plane.runtime import default_cascade
from shared import keys
from shared.models import ChangeEvent, ProxyTarget

from .conftest import ADMIN, bearer, create_token

PROXIES = "/api/v1/proxy/targets/"
ROUTES = "/api/v1/routes/"


async def test_every_owned_kind_is_registered() -> None:
    assert set(default_cascade().kinds) >= {"proxy", "route"}


async def test_token_delete_cascades_to_its_objects_only(
    api: httpx.AsyncClient, redis_client: aioredis.Redis
) -> None:
    alice = bearer(await create_token(api, "alice"))
    bob = bearer(await create_token(api, "bob"))
    for owner, headers in (("alice", alice), ("bob", bob)):
        for n in (1, 2):
            host = f"{owner}{n}.example.com"
            assert (
                await api.post(
                    PROXIES, json={"hostname": host, "target_url": "http://127.0.0.1:1"}, headers=headers
                )
            ).status_code == 201
            assert (
                await api.post(
                    ROUTES,
                    json={
                        "id": f"{owner}-r{n}",
                        "path_pattern": "/",
                        "target_proxy": host,
                        "scope": "proxies",
                        "proxy_hostnames": [host],
                    },
                    headers=headers,
                )
            ).status_code == 201
    await api.post(
        PROXIES, json={"hostname": "admin.example.com", "target_url": "http://127.0.0.1:1"}, headers=ADMIN
    )
    await api.post(
        ROUTES, json={"id": "admin-r", "path_pattern": "/", "target_url": "http://h"}, headers=ADMIN
    )
    version_before = int(await redis_client.get(keys.config_version()) or 0)
    last_id = (await redis_client.xrevrange(keys.changes_stream(), count=1))[0][0]

    assert (await api.delete("/api/v1/tokens/alice", headers=ADMIN)).status_code == 204

    assert sorted(await redis_client.hkeys(keys.proxies())) == [
        "admin.example.com",
        "bob1.example.com",
        "bob2.example.com",
    ]
    assert sorted(await redis_client.hkeys(keys.routes())) == ["admin-r", "bob-r1", "bob-r2"]
    assert sorted(await redis_client.hkeys(keys.tokens())) == ["bob"]
    assert (await api.get(PROXIES, headers=alice)).status_code == 401

    # One transaction: one version bump, and every deletion recorded at that version.
    assert int(await redis_client.get(keys.config_version())) == version_before + 1
    new_events = [
        ChangeEvent.from_stream_fields(f)
        for _id, f in await redis_client.xrange(keys.changes_stream(), min=f"({last_id}")
    ]
    assert {(e.kind, e.name) for e in new_events} == {
        ("proxy", "alice1.example.com"),
        ("proxy", "alice2.example.com"),
        ("route", "alice-r1"),
        ("route", "alice-r2"),
        ("token", "alice"),
    }
    assert {e.version for e in new_events} == {version_before + 1}
    assert {e.action for e in new_events} == {"deleted"}

    # Bob is untouched and still works.
    assert len((await api.get(PROXIES, headers=bob)).json()) == 2


async def test_writes_racing_the_token_deletion_leave_no_orphans(
    api: httpx.AsyncClient, redis_client: aioredis.Redis
) -> None:
    for round_number in range(5):
        alice = bearer(await create_token(api, f"alice{round_number}"))

        async def create(i: int, headers: dict[str, str] = alice, n: int = round_number) -> int:
            body = {"hostname": f"p{n}-{i}.example.com", "target_url": "http://127.0.0.1:1"}
            return (await api.post(PROXIES, json=body, headers=headers)).status_code

        async def delete(n: int = round_number) -> int:
            return (await api.delete(f"/api/v1/tokens/alice{n}", headers=ADMIN)).status_code

        statuses = await asyncio.gather(
            *(create(i) for i in range(10)), delete(), *(create(i) for i in range(10, 20))
        )
        assert set(statuses) <= {201, 204, 401}, statuses
        owners = {
            ProxyTarget.model_validate_json(v).owner for v in (await redis_client.hvals(keys.proxies()))
        }
        assert f"alice{round_number}" not in owners


async def _hget_calls(redis_client: aioredis.Redis) -> int:
    stats = await redis_client.info("commandstats")
    return int(stats.get("cmdstat_hget", {}).get("calls", 0))


async def test_the_change_audit_reads_a_cascades_old_rows_in_one_round_trip_per_collection(
    api: httpx.AsyncClient, redis_client: aioredis.Redis
) -> None:
    """Deleting a token with 2 proxies or with 8 costs the same number of HGETs (the old rows the audit diffs
    are read with one HMGET per collection), and every row still gets its entry."""
    hget_calls = []
    for name, count in (("few", 2), ("many", 8)):
        headers = bearer(await create_token(api, name))
        for n in range(count):
            body = {"hostname": f"{name}{n}.example.com", "target_url": "http://127.0.0.1:1"}
            assert (await api.post(PROXIES, json=body, headers=headers)).status_code == 201
        await redis_client.config_resetstat()
        assert (await api.delete(f"/api/v1/tokens/{name}", headers=ADMIN)).status_code == 204
        hget_calls.append(await _hget_calls(redis_client))
        entries = await redis_client.xrevrange(keys.audit_changes_stream(), count=count + 1)
        deleted = [e for _, e in entries if '"kind":"proxy"' in e["e"] and '"action":"deleted"' in e["e"]]
        assert len(deleted) == count
        assert all('"target_url":{"old":"http://127.0.0.1:1"' in e["e"] for e in deleted)
    assert hget_calls[0] == hget_calls[1], hget_calls
