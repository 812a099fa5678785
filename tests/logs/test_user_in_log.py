"""On a protected proxy the data plane logs who a request ran as (the verified token's login, else its
subject), and the indexer makes it a search filter and a stats dimension; an anonymous refusal has no user."""

from __future__ import annotations

import json
import time

import redis
import redis.asyncio as aioredis

from control_plane.logs.indexer import LogIndexer
from control_plane.logs.query import LogFilter
from control_plane.logs.search import LogSearch
from control_plane.oauth.signing import SigningKeys
from shared import keys
from tests.data_plane.backends import HttpBackend
from tests.data_plane.conftest import DataPlane, redis_sync  # noqa: F401
from tests.data_plane.protected_plane import HOST, call, plane, protect, signer, token  # noqa: F401
from tests.harness.services import RedisServer

from .conftest import wait_until


async def test_the_verified_user_is_logged_and_searchable(
    plane: DataPlane,  # noqa: F811
    redis_sync: redis.Redis,  # noqa: F811
    redis_server: RedisServer,
    backend: HttpBackend,
    signer: SigningKeys,  # noqa: F811
) -> None:
    protect(redis_sync, plane, backend.url, allowed_users=["alice", "bob"])
    assert call(plane, "/mcp", bearer=token(signer, plane))[0] == 200
    assert call(plane, "/mcp", bearer=token(signer, plane, login="bob", sub="github:1002"))[0] == 200
    assert call(plane, "/mcp", bearer=token(signer, plane, login="", sub="github:1001"))[0] in (200, 403)
    assert call(plane, "/mcp")[0] == 401
    stream = keys.request_log_stream()
    await wait_until(lambda: redis_sync.xlen(stream) == 4, "four entries written")
    users = [fields["user"] for _id, fields in redis_sync.xrange(stream)]
    assert users[:2] == ["alice", "bob"]
    assert users[3] == ""

    client = aioredis.Redis.from_url(redis_server.url, password=redis_server.password, decode_responses=True)
    try:
        indexer = LogIndexer(
            client, minute_ttl_seconds=3600, hour_ttl_seconds=3600, request_id_ttl_seconds=3600, name="t"
        )
        while await indexer.run_once(block=False):
            pass
        now = time.time()
        page = await LogSearch(client, scan_limit=1000).search(
            LogFilter(since=now - 600, until=now + 60, user="bob"), limit=10
        )
        assert [(e.host, e.user) for e in page.items] == [(HOST, "bob")]
        assert page.index == "user"
    finally:
        await client.aclose()


async def test_the_oauth_client_and_mcp_tool_are_logged_and_searchable(
    plane: DataPlane,  # noqa: F811
    redis_sync: redis.Redis,  # noqa: F811
    redis_server: RedisServer,
    backend: HttpBackend,
    signer: SigningKeys,  # noqa: F811
) -> None:
    protect(redis_sync, plane, backend.url)
    call_tool = json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "search", "arguments": {}}}
    ).encode()
    mcp = {"Content-Type": "application/json", "Mcp-Method": "tools/call", "Mcp-Name": "search"}
    bearer = token(signer, plane, client_id="mcp-inspector")
    # Twice with the same token: the second answer comes from the gate's memo and must log the same.
    for _ in range(2):
        assert call(plane, "/mcp", bearer=bearer, body=call_tool, headers=mcp)[0] == 200
    assert call(plane, "/mcp", bearer=token(signer, plane), body=b"{}")[0] == 200
    stream = keys.request_log_stream()
    await wait_until(lambda: redis_sync.xlen(stream) == 3, "three entries written")
    logged = [
        (fields["client_id"], fields["mcp_method"], fields["mcp_tool"])
        for _id, fields in redis_sync.xrange(stream)
    ]
    assert logged == [
        ("mcp-inspector", "tools/call", "search"),
        ("mcp-inspector", "tools/call", "search"),
        ("mhp_test", "", ""),
    ]

    client = aioredis.Redis.from_url(redis_server.url, password=redis_server.password, decode_responses=True)
    try:
        indexer = LogIndexer(
            client, minute_ttl_seconds=3600, hour_ttl_seconds=3600, request_id_ttl_seconds=3600, name="t"
        )
        while await indexer.run_once(block=False):
            pass
        now = time.time()
        search = LogSearch(client, scan_limit=1000)
        by_tool = await search.search(LogFilter(since=now - 600, until=now + 60, tool="search"), limit=10)
        assert [(e.client_id, e.mcp_tool) for e in by_tool.items] == [("mcp-inspector", "search")] * 2
        by_client = await search.search(
            LogFilter(since=now - 600, until=now + 60, client_id="mhp_test"), limit=10
        )
        assert [e.mcp_method for e in by_client.items] == [""]
    finally:
        await client.aclose()
