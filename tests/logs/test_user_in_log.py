"""On a protected proxy the data plane logs who a request ran as (the verified token's login, else its
subject), and the indexer makes it a search filter and a stats dimension; an anonymous refusal has no user."""

from __future__ import annotations

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
