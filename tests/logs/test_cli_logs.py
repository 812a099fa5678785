"""`mhp logs ...` as a real subprocess against `python -m control_plane` (with its indexer) and a real data
plane serving the requests that make the entries."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from typing import Any

import httpx
import pytest

from tests.control_plane.conftest import ADMIN_TOKEN
from tests.control_plane.test_cli import mhp_argv

from .conftest import World, wait_until

pytestmark = pytest.mark.slow
INDEXER = True  # plane_pair runs the control plane's indexer for this module


async def mhp(world: World, *args: str, token: str = ADMIN_TOKEN) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MHP_") and k != "ADMIN_TOKEN"}
    env.update(MHP_API_URL=world.cp.url, MHP_ENV_FILE=os.devnull, MHP_TOKEN=token)
    return await asyncio.to_thread(
        subprocess.run, [*mhp_argv(), *args], env=env, capture_output=True, text=True, timeout=60
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


async def traffic(world: World) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        for host, path in (
            ("alice.test.localhost", "/hello"),
            ("alice.test.localhost", "/status/502"),
            ("alice.test.localhost", "/slow?seconds=0.4"),
            ("bob.test.localhost", "/bob"),
        ):
            await client.get(f"{world.plane.url}{path}", headers={"Host": host})


async def indexed(world: World, count: int) -> bool:
    async with httpx.AsyncClient(base_url=world.cp.url, timeout=10) as api:
        body: dict[str, Any] = (
            await api.get("/api/v1/logs/", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        ).json()
    return len(body["items"]) == count and body["indexer"]["unindexed"] == 0


@pytest.fixture
async def logged(world: World) -> World:
    await traffic(world)
    await wait_until(lambda: indexed(world, 4), "4 entries indexed")
    return world


async def test_search_errors_slow_as_tables_and_json(logged: World) -> None:
    table = ok(await mhp(logged, "logs", "search", "--since", "15m"))
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["TIME", "HOST", "CLIENT", "METHOD"]
    assert "USER" not in lines[0]  # nobody signed in: the column would only say "-"
    assert len(lines) == 5
    assert any("/status/502" in line and "502" in line for line in lines)

    errors = ok(await mhp(logged, "logs", "errors", "--json"))
    items = json.loads(errors)["items"]
    assert [(i["path"], i["status"]) for i in items] == [("/status/502", 502)]

    slow = json.loads(ok(await mhp(logged, "logs", "slow", "--json")))["items"]
    assert [i["path"] for i in slow] == ["/slow?seconds=REDACTED"]

    mine = json.loads(ok(await mhp(logged, "--json", "logs", "search", token=logged.tokens["bob"])))
    assert [i["host"] for i in mine["items"]] == ["bob.test.localhost"]

    refused = await mhp(
        logged, "logs", "search", "--host", "alice.test.localhost", token=logged.tokens["bob"]
    )
    assert refused.returncode == 1 and "403" in refused.stderr

    bad = await mhp(logged, "logs", "search", "--since", "last tuesday")
    assert bad.returncode == 1 and "since" in bad.stderr


async def test_pages_and_cursor(logged: World) -> None:
    first = json.loads(ok(await mhp(logged, "logs", "search", "--limit", "3", "--json")))
    assert len(first["items"]) == 3 and first["next_cursor"]
    rest = json.loads(
        ok(await mhp(logged, "logs", "search", "--limit", "3", "--cursor", first["next_cursor"], "--json"))
    )
    assert len(rest["items"]) == 1
    everything = json.loads(ok(await mhp(logged, "logs", "search", "--limit", "1", "--all", "--json")))
    assert len(everything["items"]) == 4


async def test_stats_table(logged: World) -> None:
    out = ok(await mhp(logged, "logs", "stats", "--since", "1h"))
    header, *rows = out.splitlines()
    assert header.split()[:3] == ["HOST", "REQUESTS", "2XX"]
    alice = next(row for row in rows if row.startswith("alice.test.localhost"))
    assert alice.split()[1:6] == ["3", "2", "0", "0", "1"]
    everyone = next(row for row in rows if row.startswith("(all)"))
    assert everyone.split()[1] == "4"
    assert "(all):\n  top paths:" in out
    data = json.loads(ok(await mhp(logged, "logs", "stats", "--json", "--bucket", "hour")))
    assert data["bucket"] == "hour"
    assert sum(p["totals"]["requests"] for p in data["proxies"]) == 4
    assert data["all"]["totals"]["requests"] == 4
    # One row per bucket: every proxy together without --host, the named proxy's with it.
    by_bucket = ok(await mhp(logged, "logs", "stats", "--by-bucket", "--bucket", "hour"))
    assert sum(int(row.split()[3]) for row in by_bucket.splitlines()[1:] if row.startswith("(all) ")) == 4
    mine = ok(
        await mhp(
            logged, "logs", "stats", "--by-bucket", "--bucket", "hour", "--host", "alice.test.localhost"
        )
    )
    assert (
        sum(int(row.split()[3]) for row in mine.splitlines()[1:] if row.startswith("alice.test.localhost "))
        == 3
    )


async def test_tail_prints_the_last_entries_and_follows(logged: World) -> None:
    out = ok(await mhp(logged, "logs", "tail", "-n", "2"))
    lines = out.splitlines()
    assert len(lines) == 2
    assert "bob.test.localhost" in lines[-1]  # oldest first, like tail(1)

    env = {k: v for k, v in os.environ.items() if not k.startswith("MHP_") and k != "ADMIN_TOKEN"}
    env.update(MHP_API_URL=logged.cp.url, MHP_ENV_FILE=os.devnull, MHP_TOKEN=logged.tokens["alice"])
    follower = await asyncio.create_subprocess_exec(
        *mhp_argv(), "logs", "tail", "-f", "-n", "1", "--json", env=env, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert follower.stdout is not None
        first = json.loads(await asyncio.wait_for(follower.stdout.readline(), 30))
        assert first["host"] == "alice.test.localhost"
        async with httpx.AsyncClient(timeout=10) as client:
            await client.get(f"{logged.plane.url}/bob-again", headers={"Host": "bob.test.localhost"})
            await client.get(f"{logged.plane.url}/followed", headers={"Host": "alice.test.localhost"})
        followed = json.loads(await asyncio.wait_for(follower.stdout.readline(), 30))
        assert (followed["host"], followed["path"]) == ("alice.test.localhost", "/followed")
    finally:
        follower.terminate()
        await follower.wait()
