"""The indexer and retention against a real redis-server, with entries written by the data plane's own
request-log writer: idempotency by entry, taking over a stopped consumer's entries, searches that find
entries the indexer has not reached, and trimming that leaves no index entry behind."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from control_plane.logs.indexer import LogIndexer
from control_plane.logs.query import HostScope, LogFilter
from control_plane.logs.retention import LogRetention
from control_plane.logs.search import LogSearch
from control_plane.logs.stats import LogStats, StatsRequest
from data_plane.request_log import RequestLog, RequestLogEntry
from shared import keys

from .conftest import wait_until

STREAM = keys.request_log_stream()
HOST = "mcp.example.com"


def entry(number: int, *, host: str = HOST, status: int = 200, user: str = "octocat") -> RequestLogEntry:
    return RequestLogEntry(
        time=time.time(),
        client_ip=f"203.0.113.{number % 7}",
        host=host,
        method="POST",
        path=f"/mcp/{number % 3}?token=x",
        status=status,
        bytes_in=100,
        bytes_out=1000,
        duration_seconds=0.002 * (number % 50),
        upstream="http://127.0.0.1:3000",
        route_id="",
        request_id=f"req-{number:06d}",
        user=user,
    )


async def write(redis: aioredis.Redis, entries: list[RequestLogEntry]) -> None:
    """Through the data plane's writer (its Lua batch script), as a running data plane would."""
    request_log = RequestLog(redis, flush_interval_seconds=0.01)
    writer = asyncio.create_task(request_log.run())
    for item in entries:
        request_log.submit(item)
    await wait_until(lambda: request_log.written == len(entries), "entries written")
    await request_log.close()
    await writer


def indexer(redis: aioredis.Redis, name: str, *, claim_idle_seconds: float = 60.0) -> LogIndexer:
    return LogIndexer(
        redis,
        minute_ttl_seconds=3600,
        hour_ttl_seconds=86400,
        request_id_ttl_seconds=86400,
        batch_size=100,
        claim_idle_seconds=claim_idle_seconds,
        block_seconds=0.05,
        name=name,
    )


async def drain(consumer: LogIndexer) -> None:
    while await consumer.run_once(block=False):
        pass


async def totals(redis: aioredis.Redis, host: str = HOST) -> dict[str, object]:
    now = time.time()
    stats = LogStats(redis, minute_retention_seconds=86400, hour_retention_seconds=86400)
    answer = await stats.stats(StatsRequest(now - 3600, now + 60, "hour", 5, host, None))
    if not answer["proxies"]:
        return {"requests": 0}
    result: dict[str, object] = answer["proxies"][0]["totals"]
    return result


@pytest.fixture
async def redis(redis_client: aioredis.Redis) -> AsyncIterator[aioredis.Redis]:
    yield redis_client


async def test_every_entry_counts_once_however_often_it_is_delivered(redis: aioredis.Redis) -> None:
    await write(redis, [entry(n) for n in range(250)] + [entry(n, status=503) for n in range(250, 260)])
    consumer = indexer(redis, "a")
    await drain(consumer)
    assert consumer.counted == 260
    first = await totals(redis)
    assert first["requests"] == 260
    assert first["status"] == {"1xx": 0, "2xx": 250, "3xx": 0, "4xx": 0, "5xx": 10}  # type: ignore[comparison-overlap]
    assert first["unique_ips"] == 7
    assert first["unique_users"] == 1
    index_size = await redis.zcard(keys.log_index("host", HOST))
    assert index_size == 260
    assert await redis.zcard(keys.log_index("class", "5xx")) == 10
    assert await redis.zcard(keys.log_index("user", "octocat")) == 260

    # The same entries again (a retried batch, a claim racing a slow replica): nothing changes.
    everything = [entry_id for entry_id, _ in await redis.xrange(STREAM)]
    assert await consumer.index_ids(everything[:100]) == 100
    assert await consumer.index_ids(everything) == 260
    assert consumer.counted == 260
    assert await totals(redis) == first
    assert await redis.zcard(keys.log_index("host", HOST)) == index_size

    # A copy the data plane's at-least-once writer appended again (same request id, new stream id).
    await write(redis, [entry(5)])
    await drain(consumer)
    assert consumer.counted == 260
    assert (await totals(redis))["requests"] == 260


async def test_a_stopped_consumers_entries_are_taken_over(redis: aioredis.Redis) -> None:
    await write(redis, [entry(n) for n in range(40)])
    crashed = indexer(redis, "crashed")
    await crashed.ensure_group()
    # It read the entries and stopped before indexing them: they are pending on it.
    delivered = await redis.xreadgroup(keys.request_log_index_group(), "crashed", {STREAM: ">"}, count=100)
    assert len(delivered[0][1]) == 40
    pending = await redis.xpending(STREAM, keys.request_log_index_group())
    assert pending["pending"] == 40

    survivor = indexer(redis, "survivor", claim_idle_seconds=0.0)
    await drain(survivor)
    assert survivor.counted == 40
    assert (await redis.xpending(STREAM, keys.request_log_index_group()))["pending"] == 0
    assert (await totals(redis))["requests"] == 40

    # The stopped replica coming back and indexing what it had read counts nothing twice.
    assert await crashed.index_ids([entry_id for entry_id, _ in delivered[0][1]]) == 40
    assert crashed.counted == 0
    assert (await totals(redis))["requests"] == 40


async def test_replicas_share_the_work(redis: aioredis.Redis) -> None:
    await write(redis, [entry(n) for n in range(300)])
    first, second = indexer(redis, "one"), indexer(redis, "two")
    while await first.run_once(block=False) + await second.run_once(block=False):
        pass
    assert first.counted > 0 and second.counted > 0
    assert first.counted + second.counted == 300
    assert (await totals(redis))["requests"] == 300


async def test_search_finds_entries_the_indexer_has_not_reached(redis: aioredis.Redis) -> None:
    await write(redis, [entry(n) for n in range(30)])
    consumer = indexer(redis, "a")
    await drain(consumer)
    await write(redis, [entry(n) for n in range(30, 50)])  # not indexed yet
    # And some delivered but still pending (a replica in the middle of a batch).
    await redis.xreadgroup(keys.request_log_index_group(), "busy", {STREAM: ">"}, count=5)
    now = time.time()
    searcher = LogSearch(redis, scan_limit=10_000)
    scope = HostScope.of("alice", {HOST: "alice"})
    page = await searcher.search(LogFilter(since=now - 600, until=now + 60, scope=scope), limit=500)
    assert page.index == "host"
    numbers = [int(item.request_id.removeprefix("req-")) for item in page.items]
    assert numbers == list(range(49, -1, -1))  # all 50, newest first, none twice
    assert await redis.zcard(keys.log_index("host", HOST)) == 30


async def test_a_search_stops_at_its_scan_budget_and_says_where_to_go_on(redis: aioredis.Redis) -> None:
    await write(redis, [entry(n) for n in range(120)] + [entry(120, status=404)])
    await write(redis, [entry(n, host="other.example.com") for n in range(121, 400)])
    await drain(indexer(redis, "a"))
    now = time.time()
    searcher = LogSearch(redis, scan_limit=100)
    query = LogFilter(since=now - 600, until=now + 60, method="GET")
    page = await searcher.search(query, limit=10)
    assert page.items == [] and page.partial and page.scanned == 100
    assert page.next_cursor is not None
    following = await searcher.search(query, limit=10, cursor=page.next_cursor)
    assert following.scanned == 100 and following.next_cursor != page.next_cursor


async def test_retention_trims_the_stream_and_its_indexes(redis: aioredis.Redis) -> None:
    now = time.time()
    old_ms = int((now - 3 * 86400) * 1000)
    # Entries from three days ago (explicit ids: the stream is empty, so older ids are still allowed).
    for number in range(5):
        fields = entry(number, host="old.example.com").to_stream_fields()
        await redis.xadd(STREAM, fields, id=f"{old_ms + number}-0")  # type: ignore[arg-type]
    await write(redis, [entry(n) for n in range(5, 25)])
    await drain(indexer(redis, "a"))
    assert await redis.zcard(keys.log_index("host", "old.example.com")) == 5

    retention = LogRetention(redis, max_age_seconds=86400, max_entries=1_000_000)
    result = await retention.trim(now)
    assert result["entries"] == 5
    assert not await redis.exists(keys.log_index("host", "old.example.com"))
    assert keys.log_index("host", "old.example.com") not in await redis.smembers(keys.log_index_keys())
    assert await redis.zcard(keys.log_index("host", HOST)) == 20

    # By size: keep 8 entries; no index entry older than the stream's first entry survives.
    result = await LogRetention(redis, max_age_seconds=86400, max_entries=8).trim(now)
    assert result["entries"] == 12
    first_id = (await redis.xrange(STREAM, count=1))[0][0]
    first_ms = int(first_id.split("-")[0])
    for key in await redis.smembers(keys.log_index_keys()):
        oldest = await redis.zrange(key, 0, 0, withscores=True)
        assert oldest and oldest[0][1] >= first_ms, key
    searcher = LogSearch(redis, scan_limit=10_000)
    page = await searcher.search(LogFilter(since=now - 5 * 86400, until=now + 60, host=HOST), limit=500)
    assert len(page.items) == 8


async def test_request_ids_are_found_in_their_shard_and_in_an_older_indexers_hash(
    redis: aioredis.Redis,
) -> None:
    await write(redis, [entry(n) for n in range(60)])
    await drain(indexer(redis, "a"))
    ids = {fields["request_id"]: entry_id for entry_id, fields in await redis.xrange(STREAM)}
    hour = int(next(iter(ids.values())).split("-")[0]) // 3_600_000
    # The indexer's Lua and shared/keys.py put each request id in the same small hash.
    for request_id, entry_id in ids.items():
        key = keys.log_request_ids(hour, request_id)
        assert await redis.hget(key, request_id) == entry_id
        assert await redis.object("encoding", key) == "listpack"
    assert len({keys.log_request_ids(hour, request_id) for request_id in ids}) > 30

    # An entry an indexer before the shards recorded (one hash per hour) is still found by its request id.
    now = time.time()
    searcher = LogSearch(redis, scan_limit=10_000)
    request_id, entry_id = next(iter(ids.items()))
    await redis.hdel(keys.log_request_ids(hour, request_id), request_id)
    await redis.hset(keys.log_request_ids_unsharded(hour), request_id, entry_id)
    page = await searcher.search(LogFilter(since=now - 600, until=now + 60, request_id=request_id), limit=10)
    assert page.index == "request-id"
    assert [item.id for item in page.items] == [entry_id]
