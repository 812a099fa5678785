"""The live tail over real HTTP: a `python -m control_plane` process streams SSE while a real data plane
serves requests. Only the caller's own proxies' entries arrive; a tail ends with a resume point; a client
that goes away stops the server's blocking reads."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import redis.asyncio as aioredis

from shared import keys
from tests.control_plane.conftest import ADMIN
from tests.data_plane.conftest import DataPlane

from .conftest import World, wait_until


async def events(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(event name, data) pairs of an SSE stream; comments are skipped."""
    name, data = "", ""
    async for line in lines:
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
        elif line == "" and name:
            yield name, json.loads(data)
            name, data = "", ""


async def get(plane: DataPlane, host: str, path: str) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        await client.get(f"{plane.url}{path}", headers={"Host": host})


async def blocked_tail_reads(redis: aioredis.Redis) -> int:
    clients = await redis.client_list()
    return sum(1 for c in clients if c.get("cmd") == "xread" and "b" in c.get("flags", ""))


async def test_a_tail_streams_new_entries_of_the_callers_proxies_only(
    world: World, redis_client: aioredis.Redis
) -> None:
    async with httpx.AsyncClient(base_url=world.cp.url, timeout=httpx.Timeout(20.0, read=20.0)) as api:
        async with api.stream(
            "GET", "/api/v1/logs/tail", params={"max_seconds": 60}, headers=world.alice
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            stream = events(response.aiter_lines())
            name, _data = await anext(stream)
            assert name == "start"
            await get(world.plane, "bob.test.localhost", "/bob-only")
            await get(world.plane, "alice.test.localhost", "/one")
            await get(world.plane, "bob.test.localhost", "/bob-only")
            await get(world.plane, "alice.test.localhost", "/status/418")
            received = []
            async for name, data in stream:
                assert name == "entry"
                received.append(data)
                if len(received) == 2:
                    break
            assert [(e["host"], e["path"], e["status"]) for e in received] == [
                ("alice.test.localhost", "/one", 200),
                ("alice.test.localhost", "/status/418", 418),
            ]
            await wait_until(lambda: blocked_tail_reads(redis_client), "the tail is blocked reading")
        # The client went away: the server stops reading for it (well before its 60 s bound).
        await wait_until(
            lambda: _none(blocked_tail_reads(redis_client)), "the tail stopped after the client left", 10.0
        )


async def _none(count: Any) -> bool:
    return await count == 0


async def test_a_tail_ends_with_where_to_resume_and_resumes_without_gaps(
    world: World, redis_client: aioredis.Redis
) -> None:
    await get(world.plane, "alice.test.localhost", "/before")
    await wait_until(lambda: redis_client.xlen(keys.request_log_stream()), "the first entry is written")
    ((first_id, _),) = await redis_client.xrange(keys.request_log_stream())
    await get(world.plane, "alice.test.localhost", "/after-1")
    await get(world.plane, "alice.test.localhost", "/after-2")
    await wait_until(
        lambda: _equals(redis_client.xlen(keys.request_log_stream()), 3), "three entries are written"
    )
    async with httpx.AsyncClient(base_url=world.cp.url, timeout=20) as api:
        response = await api.get(
            "/api/v1/logs/tail",
            params={"after": first_id, "max_seconds": 0.5, "path_prefix": "/after"},
            headers=ADMIN,
        )
    assert response.status_code == 200
    got = [item async for item in events(_lines(response.text))]
    names = [name for name, _ in got]
    assert names == ["start", "entry", "entry", "end"]
    assert [data["path"] for name, data in got if name == "entry"] == ["/after-1", "/after-2"]
    last_id = got[2][1]["id"]
    assert got[-1][1]["resume_after"] == last_id


async def _equals(value: Any, expected: int) -> bool:
    return await value == expected


async def _lines(text: str) -> AsyncIterator[str]:
    for line in text.split("\n"):
        yield line


async def test_tail_refuses_bad_input(world: World) -> None:
    async with httpx.AsyncClient(base_url=world.cp.url, timeout=20) as api:
        bad_after = await api.get("/api/v1/logs/tail", params={"after": "x"}, headers=ADMIN)
        assert bad_after.status_code == 422
        other = await api.get("/api/v1/logs/tail", params={"host": "bob.test.localhost"}, headers=world.alice)
        assert other.status_code == 403
        anonymous = await api.get("/api/v1/logs/tail")
        assert anonymous.status_code == 401
