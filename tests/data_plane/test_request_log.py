"""Request log against a real redis-server: batching, the drop counter, Redis restarts, and redaction.

Waits poll Redis or the log's counters under a generous deadline; the deadline only stops a hung test, no
assertion depends on how long anything took.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from data_plane.request_log import (
    ENTRY_FIELDS,
    MAX_LOGGED_PATH_CHARS,
    RequestLog,
    RequestLogEntry,
    entry_size_bytes,
    redact_path,
)
from shared import keys
from tests.harness.services import RedisServer, start_redis

STREAM = keys.request_log_stream()


# Entries are made "now", a millisecond apart, as a data plane would make them: the backlog's age bound reads
# `time` (and compares it with the wall clock while Redis is away).
NOW = time.time()


@pytest.fixture(autouse=True)
def _now() -> None:
    """NOW is each test's start, not the module's import: in a full run a test starts minutes after
    collection, and entries that old are past the backlog's age bound (dropped during an outage)."""
    global NOW
    NOW = time.time()


def entry(number: int, path: str = "/mcp", at: float | None = None) -> RequestLogEntry:
    return RequestLogEntry(
        time=NOW + number / 1000 if at is None else at,
        client_ip="203.0.113.9",
        host="mcp.example.com",
        method="POST",
        path=path,
        status=200,
        bytes_in=120,
        bytes_out=4096,
        duration_seconds=0.0125,
        upstream="http://127.0.0.1:3000",
        route_id="r-mcp",
        request_id=f"req-{number:05d}",
        user="octocat",
    )


async def killed(server: RedisServer) -> None:
    """SIGKILL the server and wait until it is gone: entries submitted right after the signal must meet a
    dead Redis (a dying one could still take them, and a test waiting for failures would wait forever)."""
    server.service.signal(signal.SIGKILL)
    process = server.service.process
    assert process is not None
    await asyncio.to_thread(process.wait, 10)


async def wait_until(predicate: Callable[[], object], what: str, deadline_seconds: float = 20.0) -> None:
    try:
        async with asyncio.timeout(deadline_seconds):
            while True:
                result = predicate()
                if asyncio.iscoroutine(result):
                    result = await result
                if result:
                    return
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"gave up waiting: {what}") from None


async def request_ids(client: aioredis.Redis) -> list[str]:
    return [fields["request_id"] for _, fields in await client.xrange(STREAM)]


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[tuple[RedisServer, aioredis.Redis, Path]]:
    """A Redis this test may stop and restart (the session one is shared)."""
    server = start_redis(tmp_path / "first")
    client = aioredis.Redis.from_url(
        server.url, password=server.password, decode_responses=True, socket_connect_timeout=1
    )
    try:
        yield server, client, tmp_path
    finally:
        await client.aclose()
        server.service.stop()


async def test_entries_land_in_order_in_one_script_call_per_batch(
    own_redis: tuple[RedisServer, aioredis.Redis, Path],
) -> None:
    # A Redis of its own: command counts on the shared one would include other processes' traffic.
    _, redis_client, _ = own_redis
    await redis_client.config_resetstat()
    request_log = RequestLog(redis_client, batch_size=200, flush_interval_seconds=0.05)
    writer = asyncio.create_task(request_log.run())
    for number in range(450):
        request_log.submit(entry(number))

    await wait_until(lambda: request_log.written == 450, "450 entries written")
    stats = await redis_client.info("commandstats")
    # 200 + 200 + 50: three script calls (one reply each), not 450 round trips. The first EVALSHA finds no
    # script (NOSCRIPT) and is sent again as EVAL.
    assert stats["cmdstat_xadd"]["calls"] == 450
    ran = {
        name: stats[f"cmdstat_{name}"]["calls"] - stats[f"cmdstat_{name}"].get("failed_calls", 0)
        for name in ("evalsha", "eval")
        if f"cmdstat_{name}" in stats
    }
    assert ran == {"evalsha": 2, "eval": 1}, stats
    assert await request_ids(redis_client) == [f"req-{n:05d}" for n in range(450)]

    _, stored = (await redis_client.xrange(STREAM, count=1))[0]
    assert set(stored) == set(ENTRY_FIELDS)
    assert RequestLogEntry.from_stream_fields(stored) == entry(0)
    assert request_log.dropped == 0

    await request_log.close()
    assert writer.done() and writer.exception() is None


async def test_a_lone_entry_is_written_without_waiting_for_a_full_batch(redis_client: aioredis.Redis) -> None:
    request_log = RequestLog(redis_client, batch_size=200, flush_interval_seconds=0.01)
    writer = asyncio.create_task(request_log.run())
    await asyncio.sleep(0)
    request_log.submit(entry(1))
    await wait_until(lambda: redis_client.xlen(STREAM), "the lone entry reached Redis")
    request_log.submit(entry(2))
    await wait_until(lambda: request_log.written == 2, "the second lone entry reached Redis")
    assert await request_ids(redis_client) == ["req-00001", "req-00002"]
    await request_log.close()
    await writer


async def test_a_backlog_past_its_byte_bound_drops_the_oldest_and_counts(
    redis_client: aioredis.Redis,
) -> None:
    reported: list[int] = []
    backlog_reported: list[int] = []
    request_log = RequestLog(
        redis_client,
        max_backlog_bytes=10 * entry_size_bytes(entry(0)),
        batch_size=4,
        on_drop=reported.append,
        on_backlog_drop=backlog_reported.append,
    )
    for number in range(25):  # no writer runs: everything stays in the backlog
        request_log.submit(entry(number))
    assert request_log.dropped == request_log.backlog_dropped == 15
    assert sum(reported) == sum(backlog_reported) == 15
    assert request_log.pending == 10
    assert request_log.backlog_bytes == 10 * entry_size_bytes(entry(0))

    await request_log.close()  # never ran: close() flushes by itself
    assert await request_ids(redis_client) == [f"req-{n:05d}" for n in range(15, 25)]
    assert request_log.backlog_bytes == 0

    request_log.submit(entry(99))  # closed: nobody would ever write it
    assert request_log.dropped == 16
    assert request_log.backlog_dropped == 15


async def test_a_backlog_past_its_age_bound_drops_the_oldest(redis_client: aioredis.Redis) -> None:
    request_log = RequestLog(redis_client, max_backlog_age_seconds=60.0)
    for number in range(5):  # made at NOW, NOW + 10, ... NOW + 40
        request_log.submit(entry(number, at=NOW + 10 * number))
    request_log.submit(entry(5, at=NOW + 75))  # 0 and 1 are now more than 60 s older, 2 is 55 s older
    assert request_log.backlog_dropped == request_log.dropped == 2
    assert request_log.pending == 4
    await request_log.close()
    assert await request_ids(redis_client) == [f"req-{n:05d}" for n in range(2, 6)]


async def test_while_redis_is_away_the_age_bound_applies_without_new_entries(
    own_redis: tuple[RedisServer, aioredis.Redis, Path],
) -> None:
    server, client, _ = own_redis
    request_log = RequestLog(client, max_backlog_age_seconds=60.0, retry_initial_seconds=0.02)
    writer = asyncio.create_task(request_log.run())
    await killed(server)
    made = time.time() - 120.0  # the same moment: the newest entry does not age the others out
    for number in range(3):
        request_log.submit(entry(number, at=made))
    await wait_until(lambda: request_log.backlog_dropped == 3, "the writer aged out what waited")
    assert request_log.pending == 0 and request_log.written == 0
    await request_log.close(timeout_seconds=0.2)
    await writer


async def test_stream_is_capped_by_maxlen(redis_client: aioredis.Redis) -> None:
    request_log = RequestLog(redis_client, batch_size=500, stream_maxlen=100)
    for number in range(2000):
        request_log.submit(entry(number))
    await request_log.close()
    length = await redis_client.xlen(STREAM)
    # MAXLEN ~ trims whole radix-tree nodes (100 entries each by default), so the cap is approximate.
    assert 100 <= length < 400
    assert (await request_ids(redis_client))[-1] == "req-01999"


async def test_an_outage_within_the_backlog_loses_nothing_and_keeps_the_order(
    own_redis: tuple[RedisServer, aioredis.Redis, Path],
) -> None:
    server, client, tmp_path = own_redis
    request_log = RequestLog(
        client,
        batch_size=10,
        flush_interval_seconds=0.01,
        retry_initial_seconds=0.02,
        retry_max_seconds=0.2,
        write_timeout_seconds=2.0,
    )
    writer = asyncio.create_task(request_log.run())
    for number in range(5):
        request_log.submit(entry(number))
    await wait_until(lambda: request_log.written == 5, "first entries written")

    await killed(server)
    for number in range(5, 10):
        request_log.submit(entry(number))
    await wait_until(lambda: request_log.write_failures >= 2, "writer noticed Redis is gone and retried")
    assert not writer.done()
    for number in range(10, 500):
        request_log.submit(entry(number))
        if number % 50 == 0:
            await asyncio.sleep(0)  # let the writer retry between submissions, as under real traffic
    assert request_log.dropped == 0
    assert request_log.pending == 495

    second = start_redis(tmp_path / "second", port=server.port, password=server.password)
    try:
        await wait_until(lambda: request_log.written == 500, "the backlog written after the restart")
        # The new server started empty, so the stream holds exactly what waited while Redis was down.
        assert await request_ids(client) == [f"req-{n:05d}" for n in range(5, 500)]
        assert request_log.dropped == 0
        assert request_log.pending == 0 and request_log.backlog_bytes == 0
        await request_log.close()
        await writer
    finally:
        second.service.stop()


async def test_an_outage_past_the_backlog_bound_drops_exactly_the_oldest(
    own_redis: tuple[RedisServer, aioredis.Redis, Path],
) -> None:
    server, client, tmp_path = own_redis
    # A long backoff: after its first failed attempt the writer sleeps, so no write is in flight while the
    # backlog overflows, and close() (which cuts a backoff short) flushes after the restart.
    request_log = RequestLog(
        client,
        max_backlog_bytes=40 * entry_size_bytes(entry(0)),
        batch_size=10,
        flush_interval_seconds=0.01,
        retry_initial_seconds=120.0,
        retry_max_seconds=120.0,
        write_timeout_seconds=2.0,
    )
    writer = asyncio.create_task(request_log.run())
    request_log.submit(entry(0))
    await wait_until(lambda: request_log.written == 1, "first entry written")
    await killed(server)
    request_log.submit(entry(1))
    await wait_until(
        lambda: request_log.write_failures == 1 and not request_log.writing, "writer backing off"
    )
    for number in range(2, 101):
        request_log.submit(entry(number))
    assert request_log.pending == 40
    assert request_log.backlog_dropped == request_log.dropped == 60

    second = start_redis(tmp_path / "second", port=server.port, password=server.password)
    try:
        async with asyncio.timeout(30):  # a hang guard; close() interrupts the 120 s backoff
            await request_log.close(timeout_seconds=20.0)
            await writer
        assert await request_ids(client) == [f"req-{n:05d}" for n in range(61, 101)]
        assert request_log.written == 41
        assert request_log.backlog_dropped == request_log.dropped == 60
    finally:
        second.service.stop()


async def test_the_bound_never_takes_entries_from_a_write_in_flight(
    own_redis: tuple[RedisServer, aioredis.Redis, Path],
) -> None:
    server, _, _ = own_redis
    client = aioredis.Redis.from_url(
        server.url, password=server.password, decode_responses=True, socket_timeout=600.0
    )
    request_log = RequestLog(
        client,
        max_backlog_bytes=8 * entry_size_bytes(entry(0)),
        batch_size=3,
        flush_interval_seconds=0.01,
        write_timeout_seconds=600.0,
    )
    writer = asyncio.create_task(request_log.run())
    await client.ping()  # connected before the freeze, so the batch script itself hangs
    server.service.signal(signal.SIGSTOP)
    try:
        for number in range(3):
            request_log.submit(entry(number))
        await wait_until(lambda: request_log.writing, "a batch of three in flight")
        for number in range(3, 20):
            request_log.submit(entry(number))
        # 20 entries, room for 8: the three in flight stay, the 12 oldest behind them go.
        assert request_log.backlog_dropped == 12
        assert request_log.pending == 8
    finally:
        server.service.signal(signal.SIGCONT)
    await wait_until(lambda: request_log.written == 8, "everything left written")
    assert await request_ids(client) == [f"req-{n:05d}" for n in (0, 1, 2, *range(15, 20))]
    await request_log.close()
    await writer
    await client.aclose()


async def test_close_before_the_writer_task_starts_still_flushes(redis_client: aioredis.Redis) -> None:
    request_log = RequestLog(redis_client)
    writer = asyncio.create_task(request_log.run())  # not started yet when close() runs
    request_log.submit(entry(1))
    await request_log.close()
    await writer
    assert await request_ids(redis_client) == ["req-00001"]


async def test_new_entries_do_not_cut_the_retry_backoff_short(
    own_redis: tuple[RedisServer, aioredis.Redis, Path],
) -> None:
    server, client, _ = own_redis
    request_log = RequestLog(
        client, batch_size=10, retry_initial_seconds=60.0, retry_max_seconds=60.0, write_timeout_seconds=2.0
    )
    writer = asyncio.create_task(request_log.run())
    server.service.stop()
    request_log.submit(entry(0))
    await wait_until(lambda: request_log.write_failures == 1, "first failed attempt")
    # A steady stream of requests while Redis is down: each would wake a naive writer into another attempt.
    for number in range(1, 300):
        request_log.submit(entry(number))
        await asyncio.sleep(0)
    assert request_log.write_failures == 1
    async with asyncio.timeout(20):  # close() must interrupt the 60 s backoff; this only guards a hang
        await request_log.close(timeout_seconds=0.2)
        await writer
    assert request_log.dropped == 300


async def test_close_with_redis_down_returns_and_counts_the_loss(
    own_redis: tuple[RedisServer, aioredis.Redis, Path],
) -> None:
    server, client, _ = own_redis
    request_log = RequestLog(client, retry_initial_seconds=0.02, write_timeout_seconds=0.5)
    writer = asyncio.create_task(request_log.run())
    server.service.stop()
    for number in range(3):
        request_log.submit(entry(number))
    async with asyncio.timeout(20):  # a hang guard, not a latency assertion
        await request_log.close(timeout_seconds=0.3)
        await writer
    assert request_log.dropped == 3
    assert request_log.written == 0


async def test_close_cuts_short_a_write_hung_on_a_frozen_redis(
    own_redis: tuple[RedisServer, aioredis.Redis, Path],
) -> None:
    server, _, _ = own_redis
    # Long client timeouts: only close() may end the hung write (redis-py's own default would after 5 s).
    client = aioredis.Redis.from_url(
        server.url, password=server.password, decode_responses=True, socket_timeout=600.0
    )
    request_log = RequestLog(client, write_timeout_seconds=600.0)
    writer = asyncio.create_task(request_log.run())
    await client.ping()  # connect and authenticate before the freeze, so the XADD itself hangs
    server.service.signal(signal.SIGSTOP)  # accepts bytes into its socket, never answers
    try:
        request_log.submit(entry(1))
        await wait_until(lambda: request_log.writing, "a write is in flight")
        async with asyncio.timeout(30):  # a hang guard: without close() the write would wait 600 s
            await request_log.close(timeout_seconds=0.2)
            await writer
        assert request_log.dropped == 1
        assert request_log.written == 0
    finally:
        server.service.signal(signal.SIGCONT)
        await client.aclose()


async def test_a_batch_redis_refuses_is_dropped_and_logging_continues(redis_client: aioredis.Redis) -> None:
    await redis_client.set(STREAM, "not a stream")  # every XADD now fails with WRONGTYPE
    request_log = RequestLog(redis_client, batch_size=10, flush_interval_seconds=0.01)
    writer = asyncio.create_task(request_log.run())
    for number in range(3):
        request_log.submit(entry(number))
    await wait_until(lambda: request_log.dropped == 3, "refused batch dropped")
    await redis_client.delete(STREAM)
    for number in range(3, 5):
        request_log.submit(entry(number))
    await wait_until(lambda: request_log.written == 2, "later entries written")
    assert await request_ids(redis_client) == ["req-00003", "req-00004"]
    await request_log.close()
    await writer


async def test_cancelling_the_writer_propagates(redis_client: aioredis.Redis) -> None:
    request_log = RequestLog(redis_client)
    writer = asyncio.create_task(request_log.run())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError):
        await request_log.run()  # one writer per log
    writer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writer


async def test_secrets_in_the_query_never_reach_redis(redis_client: aioredis.Redis) -> None:
    request_log = RequestLog(redis_client)
    request_log.submit(entry(1, "/oauth/callback?code=S3CRET-CODE&state=S3CRET-STATE&page=2"))
    request_log.submit(entry(2, "/sse?access_token=eyJS3CRET&sessionId=S3CRET-SESSION"))
    await request_log.close()
    raw = str(await redis_client.xrange(STREAM))
    assert "S3CRET" not in raw
    paths = [fields["path"] for _, fields in await redis_client.xrange(STREAM)]
    assert paths == [
        "/oauth/callback?code=REDACTED&state=REDACTED&page=2",
        "/sse?access_token=REDACTED&sessionId=REDACTED",
    ]


@pytest.mark.parametrize(
    ("path", "logged"),
    [
        ("/plain/path", "/plain/path"),
        ("/mcp?token=abc", "/mcp?token=REDACTED"),
        ("/x?Access_Token=abc&REFRESH_TOKEN=def", "/x?Access_Token=REDACTED&REFRESH_TOKEN=REDACTED"),
        (
            "/x?client_secret=a&password=b&api_key=c&key=d&id_token=e",
            "/x?client_secret=REDACTED&password=REDACTED&api_key=REDACTED&key=REDACTED&id_token=REDACTED",
        ),
        ("/s3?X-Amz-Signature=abc&sig=def", "/s3?X-Amz-Signature=REDACTED&sig=REDACTED"),
        ("/list?page=2&limit=50&sort=name", "/list?page=2&limit=50&sort=name"),
        (
            "/authorize?response_type=code&client_id=c-123&code_challenge=xyz&state=s&redirect_uri=https%3A%2F%2Fa",
            "/authorize?response_type=code&client_id=c-123&code_challenge=REDACTED&state=REDACTED"
            "&redirect_uri=REDACTED",
        ),
        ("/list?PAGE=3", "/list?PAGE=3"),
        ("/list?page=2;token=abc", "/list?page=2&token=REDACTED"),
        ("/list?page=%27%20or%201", "/list?page=REDACTED"),
        ("/list?page=" + "9" * 65, "/list?page=REDACTED"),
        ("/x?q=my+email%40example.com", "/x?q=REDACTED"),
        ("/x?eyJhbGciOiJIUzI1NiJ9", "/x?REDACTED"),
        ("/x?download", "/x?download"),
        ("/x?sig=", "/x?sig="),
        ("/x?a=1&&b=2", "/x?a=REDACTED&&b=REDACTED"),
        ("/x?", "/x?"),
        ("/x?a=b=c", "/x?a=REDACTED"),
        ("http://alice:pw@example.com/x?page=1", "http://example.com/x?page=1"),
        ("/cb#access_token=abc", "/cb#REDACTED"),
        ("/cb?page=1#access_token=abc", "/cb?page=1#REDACTED"),
        ("/a@b/c", "/a@b/c"),
    ],
)
def test_query_values_are_redacted_unless_allowlisted(path: str, logged: str) -> None:
    assert redact_path(path) == logged


def test_logged_path_length_is_bounded() -> None:
    logged = redact_path("/" + "a" * 10_000)
    assert len(logged) == MAX_LOGGED_PATH_CHARS
    assert logged.endswith("...")


async def test_values_with_non_ascii_percent_and_resp_syntax_round_trip(redis_client: aioredis.Redis) -> None:
    # The log packs RESP itself: lengths must count UTF-8 bytes, and '%', '$', '*' or CRLF-looking text in
    # a value must land as plain data, not as protocol.
    tricky = RequestLogEntry(
        time=1_800_000_000.25,
        client_ip="2001:db8::1",
        host="bücher.example%20.com",
        method="GET",
        path="/ä/%s/$5/*3/100%25",
        status=599,
        bytes_in=0,
        bytes_out=2**40,
        duration_seconds=0.0,
        upstream="http://127.0.0.1:1/%d",
        route_id="",
        request_id="r\r\n$1",
        user="名前",
    )
    request_log = RequestLog(redis_client, flush_interval_seconds=0.01)
    writer = asyncio.create_task(request_log.run())
    request_log.submit(tricky)
    request_log.submit(entry(7))
    await wait_until(lambda: request_log.written == 2, "both entries written")
    stored = [RequestLogEntry.from_stream_fields(fields) for _, fields in await redis_client.xrange(STREAM)]
    assert stored == [tricky, entry(7)]
    await request_log.close()
    await writer


def test_packed_xadd_is_what_redis_py_would_send() -> None:
    # The hand-written packer must stay byte-identical to redis-py's for the same fields, in field order,
    # with the query redacted exactly as to_stream_fields() does.
    from redis.connection import Connection as SyncConnection

    from data_plane.request_log import _XaddPacker

    item = RequestLogEntry(
        time=1_800_000_000.5,
        client_ip="10.0.0.1",
        host="a.example.com",
        method="POST",
        path="/p?token=secret&page=2",
        status=201,
        bytes_in=5,
        bytes_out=7,
        duration_seconds=0.0123456789,
        upstream="http://up:1",
        route_id="r1",
        request_id="id-1",
        user="alice",
    )
    expected = b"".join(
        SyncConnection().pack_command(
            "XADD",
            STREAM,
            "MAXLEN",
            "~",
            1000,
            "*",
            *[part for pair in item.to_stream_fields().items() for part in pair],
        )
    )
    assert b"secret" not in expected
    assert _XaddPacker(STREAM, 1000).pack(item) == expected
