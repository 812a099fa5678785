"""The request log: one Redis stream entry per request, written in batches off the response path.

Connection handlers call `submit(entry)`, which only appends to an in-memory backlog and never awaits, so a
slow or absent Redis can never delay a response. One writer task (`run()`) drains the backlog in order, in
batches: each batch is one Lua script call that runs the batch's XADDs (approximate MAXLEN) atomically, so a
batch lands whole or not at all (a reply lost in transit can still duplicate a batch: delivery is
at-least-once), and Redis answers it with one reply, not one per entry (reading 200 replies cost the event
loop about 2 ms per batch, and 10 us per request). `close()` flushes within a time bound.

Short Redis outages lose nothing: while Redis is unreachable the writer keeps its batch and retries with
capped, jittered backoff, and new entries wait in the backlog behind it; after the reconnect everything is
written in the order it was submitted. The backlog is bounded by its approximate memory
(`max_backlog_bytes`, see `entry_size_bytes`) and by how long an entry may wait (`max_backlog_age_seconds`,
from the entry's own `time` to the newest entry's, or to the wall clock while nothing arrives); beyond
either bound the OLDEST entries are dropped (the newest say most about an ongoing incident) and counted as
`backlog_dropped`. Entries of a write in flight are never dropped from under it: the bound then takes the
oldest entries after them.

What is never logged: Authorization, cookies and other headers are not fields of an entry at all, and the
query string keeps its parameter names but loses every value except those of a small allowlist of parameters
known to be harmless (SAFE_QUERY_PARAMETERS). An allowlist, not a denylist, because secrets arrive under names
nobody can list in advance (`sig`, `X-Amz-Signature`, `sessionId`, `jwt`, ...); operators still see which
parameters a request carried. Path segments are logged as sent; a secret in a path segment is the upstream
application's design choice and is out of our reach.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, fields
from itertools import islice
from typing import Final
from urllib.parse import unquote_plus

import redis.asyncio as aioredis
from redis.exceptions import (
    ClusterDownError,
    ConnectionError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared import keys

log = logging.getLogger(__name__)

REDACTED: Final = "REDACTED"
# Parameters whose values carry paging/formatting/protocol choices only. Free-text ones (q, search, email)
# are left out on purpose: they carry personal data.
SAFE_QUERY_PARAMETERS: Final = frozenset(
    {
        "page",
        "per_page",
        "page_size",
        "limit",
        "offset",
        "sort",
        "order",
        "format",
        "lang",
        "locale",
        "v",
        "version",
        "include",
        "fields",
        "view",
        "tab",
        "type",
        "mode",
        "download",
        # OAuth request parameters that are public by design and what one needs to debug a failing login.
        "response_type",
        "response_mode",
        "grant_type",
        "client_id",
        "code_challenge_method",
        "prompt",
    }
)
# Even an allowlisted value is kept only when it is short and plainly harmless, so `page=1;token=abc` or a
# percent-encoded payload hidden under an allowed name is still redacted.
_SAFE_VALUE_RE: Final = re.compile(r"[A-Za-z0-9._~,:\-]{0,64}")
MAX_LOGGED_PATH_CHARS: Final = 2048
_USERINFO_RE: Final = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*://)[^/?#@]*@")

# Failures that say "Redis is not available right now": keep the batch and retry. Any other ResponseError
# (wrong key type, ACL refusal, ...) would fail forever, so that batch is dropped and counted instead.
_RETRYABLE: Final = (
    ConnectionError,
    RedisTimeoutError,
    TimeoutError,
    OSError,
    ReadOnlyError,
    TryAgainError,
    ClusterDownError,
    OutOfMemoryError,
)


@dataclass(slots=True)
class RequestLogEntry:
    time: float
    client_ip: str
    host: str
    method: str
    path: str
    status: int
    bytes_in: int
    bytes_out: int
    duration_seconds: float
    upstream: str
    route_id: str
    request_id: str
    user: str = ""
    client_id: str = ""  # the verified token's OAuth client, on a protected proxy
    # The request's Mcp-Method / Mcp-Name headers: on a protected proxy as the auth gate checked them against
    # the body; on an unprotected one as sent (well-formed values only; its body is never read).
    mcp_method: str = ""
    mcp_tool: str = ""

    def to_stream_fields(self) -> dict[str, str]:
        """Stream fields, with the query string redacted (the only place an entry is serialised)."""
        return {
            "time": repr(self.time),
            "client_ip": self.client_ip,
            "host": self.host,
            "method": self.method,
            "path": redact_path(self.path),
            "status": str(self.status),
            "bytes_in": str(self.bytes_in),
            "bytes_out": str(self.bytes_out),
            "duration_seconds": f"{self.duration_seconds:.6f}",
            "upstream": self.upstream,
            "route_id": self.route_id,
            "request_id": self.request_id,
            "user": self.user,
            "client_id": self.client_id,
            "mcp_method": self.mcp_method,
            "mcp_tool": self.mcp_tool,
        }

    @classmethod
    def from_stream_fields(cls, data: dict[str, str]) -> RequestLogEntry:
        """Read an entry back (the control plane's log API, tests); missing fields raise KeyError."""
        return cls(
            time=float(data["time"]),
            client_ip=data["client_ip"],
            host=data["host"],
            method=data["method"],
            path=data["path"],
            status=int(data["status"]),
            bytes_in=int(data["bytes_in"]),
            bytes_out=int(data["bytes_out"]),
            duration_seconds=float(data["duration_seconds"]),
            upstream=data["upstream"],
            route_id=data["route_id"],
            request_id=data["request_id"],
            user=data.get("user", ""),
            client_id=data.get("client_id", ""),
            mcp_method=data.get("mcp_method", ""),
            mcp_tool=data.get("mcp_tool", ""),
        )


ENTRY_FIELDS: Final = tuple(field.name for field in fields(RequestLogEntry))


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


class _XaddPacker:
    """RESP for `XADD stream MAXLEN ~ n * field value ...` per entry, and for a batch: one EVALSHA (or EVAL,
    when Redis lost its script cache) of BATCH_SCRIPT with the values of every entry.

    redis-py's generic packer spends ~40 us per 13-field entry on type checks and per-argument joins, ~10% of
    a core at a few thousand requests/s. Everything but the values is the same for every entry, so it is
    packed once; an entry costs one UTF-8 encode per value and one %-format (what redis-py would send, byte
    for byte)."""

    def __init__(self, stream: str, maxlen: int) -> None:
        head = [b"XADD", stream.encode(), b"MAXLEN", b"~", str(maxlen).encode(), b"*"]
        template = [b"*%d\r\n" % (len(head) + 2 * len(ENTRY_FIELDS))]
        template += [_bulk(arg).replace(b"%", b"%%") for arg in head]
        for name in ENTRY_FIELDS:
            template.append(_bulk(name.encode()))
            template.append(b"$%d\r\n%s\r\n")
        self._template = b"".join(template)
        self._values_template = b"$%d\r\n%s\r\n" * len(ENTRY_FIELDS)
        self._script_args = _bulk(b"1") + _bulk(stream.encode()) + _bulk(str(maxlen).encode())
        self._evalsha = _bulk(b"EVALSHA") + _bulk(BATCH_SCRIPT_SHA1.encode())
        self._eval = _bulk(b"EVAL") + _bulk(BATCH_SCRIPT.encode())

    def _values(self, entry: RequestLogEntry) -> tuple[bytes | int, ...]:
        # The values of to_stream_fields() in ENTRY_FIELDS order, without building its dict (per request).
        values: list[bytes | int] = []
        for value in (
            repr(entry.time),
            entry.client_ip,
            entry.host,
            entry.method,
            redact_path(entry.path),
            str(entry.status),
            str(entry.bytes_in),
            str(entry.bytes_out),
            f"{entry.duration_seconds:.6f}",
            entry.upstream,
            entry.route_id,
            entry.request_id,
            entry.user,
            entry.client_id,
            entry.mcp_method,
            entry.mcp_tool,
        ):
            data = value.encode()
            values += (len(data), data)
        return tuple(values)

    def pack(self, entry: RequestLogEntry) -> bytes:
        return self._template % self._values(entry)

    def pack_batch(self, entries: list[RequestLogEntry], *, with_script: bool = False) -> bytes:
        """The script call writing `entries`: EVALSHA, or EVAL carrying the script (`with_script`)."""
        # EVAL(SHA), the script or its SHA1, numkeys, the stream, MAXLEN, then the values.
        arguments = 5 + len(ENTRY_FIELDS) * len(entries)
        parts = [b"*%d\r\n" % arguments, self._eval if with_script else self._evalsha, self._script_args]
        template = self._values_template
        parts += [template % self._values(entry) for entry in entries]
        return b"".join(parts)


# ARGV[1] is MAXLEN, then ENTRY_FIELDS' values of each entry in turn; KEYS[1] the stream. Returns the count.
BATCH_SCRIPT: Final = (
    "local fields = {"
    + ", ".join(f"'{name}'" for name in ENTRY_FIELDS)
    + "}\n"
    + """local width = #fields
local written = 0
for first = 2, #ARGV, width do
  local command = {'XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*'}
  for index = 1, width do
    command[#command + 1] = fields[index]
    command[#command + 1] = ARGV[first + index - 1]
  end
  redis.call(unpack(command))
  written = written + 1
end
return written
"""
)
BATCH_SCRIPT_SHA1: Final = hashlib.sha1(BATCH_SCRIPT.encode()).hexdigest()


def redact_path(path: str) -> str:
    """Keep the path and the query's parameter names; replace values that are not known to be harmless.

    Also drops credentials from an absolute-form target (`http://user:pass@host/`) and any fragment, which
    clients should never send and which OAuth implicit-style flows use to carry tokens.
    """
    if len(path) <= MAX_LOGGED_PATH_CHARS and path.startswith("/") and "?" not in path and "#" not in path:
        return path  # the common case, unchanged by every rule below
    path, hash_sign, fragment = path.partition("#")
    base, question, query = path.partition("?")
    base = _USERINFO_RE.sub(r"\1", base, count=1)
    if question:
        base = f"{base}?{_redact_query(query)}"
    if hash_sign:
        base = f"{base}#{REDACTED}" if fragment else f"{base}#"
    if len(base) > MAX_LOGGED_PATH_CHARS:
        base = base[: MAX_LOGGED_PATH_CHARS - 3] + "..."
    return base


def _redact_query(query: str) -> str:
    parts = []
    # ';' separates parameters for some frameworks; splitting on it too means no value hides behind one.
    for part in re.split(r"[&;]", query):
        name, equals, value = part.partition("=")
        safe = unquote_plus(name).lower() in SAFE_QUERY_PARAMETERS
        if not equals:
            # A bare item ("?eyJhbGciOi...") is a value with no name; only an allowlisted word is kept.
            parts.append(part if safe or not part else REDACTED)
        elif safe and _SAFE_VALUE_RE.fullmatch(value):
            parts.append(part)
        else:
            parts.append(f"{name}={REDACTED}" if value else f"{name}=")
    return "&".join(parts)


# What one queued entry holds besides its path: the slotted object, its floats and ints, the short strings
# made per request (client IP, request id, numbers); measured with tracemalloc at about 450 bytes on CPython
# 3.11-3.13 and rounded up. Host, method, upstream, route id and user are shared with the route table or the
# token cache, so an entry adds nothing for them.
ENTRY_OVERHEAD_BYTES: Final = 512
DEFAULT_MAX_BACKLOG_BYTES: Final = 64 * 1024 * 1024
DEFAULT_MAX_BACKLOG_AGE_SECONDS: Final = 60.0


def entry_size_bytes(entry: RequestLogEntry) -> int:
    """The approximate memory an entry holds in the backlog (inlined in RequestLog.submit)."""
    return ENTRY_OVERHEAD_BYTES + len(entry.path) + len(entry.mcp_tool)


class RequestLog:
    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        max_backlog_bytes: int = DEFAULT_MAX_BACKLOG_BYTES,
        max_backlog_age_seconds: float = DEFAULT_MAX_BACKLOG_AGE_SECONDS,
        batch_size: int = 200,
        flush_interval_seconds: float = 0.25,
        stream_maxlen: int = 100000,
        retry_initial_seconds: float = 0.1,
        retry_max_seconds: float = 5.0,
        write_timeout_seconds: float = 5.0,
        on_drop: Callable[[int], object] | None = None,
        on_backlog_drop: Callable[[int], object] | None = None,
    ) -> None:
        if max_backlog_bytes < 1 or batch_size < 1 or stream_maxlen < 1:
            raise ValueError("max_backlog_bytes, batch_size and stream_maxlen must be at least 1")
        if max_backlog_age_seconds <= 0:
            raise ValueError("max_backlog_age_seconds must be positive")
        self._redis = redis
        self._max_backlog_bytes = max_backlog_bytes
        self._max_backlog_age = max_backlog_age_seconds
        self._batch_size = batch_size
        self._flush_interval_seconds = flush_interval_seconds
        self._stream_maxlen = stream_maxlen
        self._retry_initial_seconds = retry_initial_seconds
        self._retry_max_seconds = retry_max_seconds
        self._write_timeout_seconds = write_timeout_seconds
        # e.g. Metrics.log_dropped_total.inc, called with the number of entries just dropped (any reason).
        self._on_drop = on_drop
        # e.g. Metrics.log_backlog_dropped_total.inc: the subset dropped because the backlog overflowed.
        self._on_backlog_drop = on_backlog_drop
        # Oldest first. An entry's `time` is when it was made, just before submit(): the age bound reads it.
        self._queue: deque[RequestLogEntry] = deque()
        self._backlog_bytes = 0
        # How many entries at the head of the queue a write in flight holds (the bound must skip them).
        self._in_flight = 0
        self._wake = asyncio.Event()  # set by submit() (first entry, full batch) and by close()
        self._close_requested = asyncio.Event()  # only close(): the one thing that may cut a backoff short
        self._finished = asyncio.Event()
        self._running = False
        self._closing = False
        self._close_deadline = 0.0
        # The in-flight write's deadline, so close() can pull it in.
        self._write_deadline: asyncio.Timeout | None = None
        self._dropped = 0
        self._backlog_dropped = 0
        self._packer = _XaddPacker(keys.request_log_stream(), stream_maxlen)
        self._written = 0
        self._write_failures = 0
        self._failing = False

    @property
    def dropped(self) -> int:
        """Entries lost for any reason: the backlog overflowed (`backlog_dropped`), Redis refused them, or
        they were submitted after close() or still queued when close() ran out of time."""
        return self._dropped

    @property
    def backlog_dropped(self) -> int:
        """The oldest entries dropped because the backlog passed its byte or age bound (a long outage)."""
        return self._backlog_dropped

    @property
    def written(self) -> int:
        return self._written

    @property
    def pending(self) -> int:
        return len(self._queue)

    @property
    def backlog_bytes(self) -> int:
        """The approximate memory the queued entries hold (see entry_size_bytes)."""
        return self._backlog_bytes

    @property
    def writing(self) -> bool:
        """A batch write to Redis is in flight."""
        return self._write_deadline is not None

    @property
    def write_failures(self) -> int:
        """Batch writes that failed and will be retried (Redis unreachable); for health reporting."""
        return self._write_failures

    def submit(self, entry: RequestLogEntry) -> None:
        """Queue an entry; never blocks. Past the backlog's bounds the oldest entries make room (counted);
        after close() the entry itself is dropped and counted."""
        if self._closing:
            self._drop(1)
            return
        queue = self._queue
        queue.append(entry)
        # entry_size_bytes(entry), inlined: this runs once per request.
        self._backlog_bytes += ENTRY_OVERHEAD_BYTES + len(entry.path)
        if (
            self._backlog_bytes > self._max_backlog_bytes
            or queue[0].time < entry.time - self._max_backlog_age
        ):
            self._trim(entry.time)
        # Wake the writer on the first entry (it then lingers up to flush_interval) and on a full batch.
        if len(queue) == 1 or len(queue) >= self._batch_size:
            self._wake.set()

    def _trim(self, now: float) -> None:
        """Drop the oldest entries not held by a write in flight until the backlog is within its bounds."""
        queue = self._queue
        protected = self._in_flight
        cutoff = now - self._max_backlog_age
        dropped = 0
        while len(queue) > protected:
            entry = queue[protected]
            if self._backlog_bytes <= self._max_backlog_bytes and entry.time >= cutoff:
                break
            if protected:
                del queue[protected]  # O(protected): at most one batch, and only while a write is in flight
            else:
                queue.popleft()
            self._backlog_bytes -= entry_size_bytes(entry)
            dropped += 1
        if dropped:
            before = self._backlog_dropped
            self._backlog_dropped += dropped
            if before == 0 or before // 10000 != self._backlog_dropped // 10000:  # not once per request
                log.warning(
                    "request log backlog full: dropped the oldest entries, %d so far", before + dropped
                )
            if self._on_backlog_drop is not None:
                self._on_backlog_drop(dropped)
            self._drop(dropped)

    async def run(self) -> None:
        """The writer loop. Returns after close(); raises nothing but CancelledError."""
        if self._running:
            if self._closing:
                # close() got here first (e.g. the writer task had not started yet) and is flushing itself.
                await self._finished.wait()
                return
            raise RuntimeError("RequestLog.run() is already running")
        self._running = True
        try:
            await self._write_loop()
        finally:
            self._running = False
            self._finished.set()

    async def close(self, timeout_seconds: float = 5.0) -> None:
        """Stop taking entries, write what is queued within `timeout_seconds`, drop the rest, end run()."""
        loop = asyncio.get_running_loop()
        if not self._closing:
            self._closing = True
            self._close_deadline = loop.time() + timeout_seconds
        self._wake.set()
        self._close_requested.set()
        in_flight = self._write_deadline
        if in_flight is not None and (in_flight.when() or float("inf")) > self._close_deadline:
            # A write started before close() may hang on an unresponsive Redis for write_timeout_seconds.
            in_flight.reschedule(self._close_deadline)
        if self._running:
            # run() honours the deadline itself; the grace covers cleaning up a write that was cut short.
            try:
                async with asyncio.timeout(max(self._close_deadline - loop.time(), 0.0) + 1.0):
                    await self._finished.wait()
            except TimeoutError:
                log.warning("request log writer did not stop in time; %d entries unwritten", self.pending)
        elif not self._finished.is_set():
            await self.run()

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = self._retry_initial_seconds
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if len(self._queue) < self._batch_size and not self._closing:
                # Linger so a trickle of requests still goes out as one pipeline rather than one each.
                self._wake.clear()
                await _wait_for(self._wake, self._flush_interval_seconds)
            if await self._write_batch():
                backoff = self._retry_initial_seconds
                continue
            if self._closing and loop.time() >= self._close_deadline:
                log.warning("request log closing, Redis unavailable: dropping %d entries", len(self._queue))
                self._drop(len(self._queue))
                self._queue.clear()
                self._backlog_bytes = 0
                return
            if self._queue:
                # Nothing may be submitted during a long outage: the age bound still applies to what waits.
                self._trim(time.time())
            delay = backoff * random.uniform(0.5, 1.0)  # jitter: replicas must not reconnect in lockstep
            if self._closing:
                await asyncio.sleep(min(delay, max(self._close_deadline - loop.time(), 0.0)))
            else:
                # Only close() cuts a backoff short: waking on submit() would retry once per request.
                await _wait_for(self._close_requested, delay)
            backoff = min(backoff * 2, self._retry_max_seconds)

    async def _write_batch(self) -> bool:
        """Write the head of the queue; True when it left the queue (written or dropped), False to retry."""
        batch = list(islice(self._queue, self._batch_size))
        timeout = self._write_timeout_seconds
        if self._closing:
            timeout = min(timeout, max(self._close_deadline - asyncio.get_running_loop().time(), 0.05))
        try:
            async with asyncio.timeout(timeout) as deadline:
                self._write_deadline = deadline
                self._in_flight = len(batch)
                try:
                    await self._execute_batch(batch)
                finally:
                    self._write_deadline = None
                    self._in_flight = 0
        except _RETRYABLE as error:
            self._write_failures += 1
            if not self._failing:
                self._failing = True
                log.warning("request log: Redis unavailable (%s); retrying, %d queued", error, self.pending)
            return False
        except RedisError as error:  # ResponseError & co: this batch would fail the same way forever
            log.error("request log: Redis refused a batch of %d entries, dropped: %s", len(batch), error)
            self._discard(len(batch))
            self._drop(len(batch))
            return True
        except Exception:
            # A bug must not stop logging for good, nor loop forever on the same batch.
            log.exception("request log: unexpected error writing a batch of %d entries, dropped", len(batch))
            self._discard(len(batch))
            self._drop(len(batch))
            return True
        if self._failing:
            self._failing = False
            log.info("request log: Redis reachable again")
        self._discard(len(batch))
        self._written += len(batch)
        return True

    async def _execute_batch(self, batch: list[RequestLogEntry]) -> None:
        """Run the batch script (sent whole once Redis answers NOSCRIPT, e.g. after a restart).

        Raises ResponseError for a refused batch, ConnectionError & co when Redis is not reachable. A
        connection left mid-reply (error, timeout, cancellation) is disconnected, not reused."""
        pool = self._redis.connection_pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
        try:
            await connection.send_packed_command(self._packer.pack_batch(batch))
            try:
                written = await connection.read_response()
            except NoScriptError:
                await connection.send_packed_command(self._packer.pack_batch(batch, with_script=True))
                written = await connection.read_response()
            if written != len(batch):
                raise ResponseError(f"unexpected reply to the batch script: {written!r}")
        except BaseException as error:
            if not isinstance(error, ResponseError):
                await connection.disconnect(nowait=True)
            raise
        finally:
            await pool.release(connection)

    def _discard(self, count: int) -> None:
        # The bound never takes entries a write holds (_in_flight), so the head is still this batch.
        for _ in range(count):
            self._backlog_bytes -= entry_size_bytes(self._queue.popleft())

    def _drop(self, count: int) -> None:
        if count <= 0:
            return
        self._dropped += count
        if self._on_drop is not None:
            self._on_drop(count)


async def _wait_for(event: asyncio.Event, timeout_seconds: float) -> None:
    """Wait until `event` is set or `timeout_seconds` pass, whichever is first."""
    try:
        async with asyncio.timeout(timeout_seconds):
            await event.wait()
    except TimeoutError:
        pass
