"""`/api/v1/logs/`: the request log of the data plane (search, stats, live tail). The admin sees every
proxy's entries; an ordinary token only those of the proxies it owns. OAuth and change audit logs live
next to it under /api/v1/logs/oauth/ and /api/v1/logs/audit/."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from ..logs.entries import LogEntry
from ..logs.query import STREAM_ID, LogFilter, StatusFilter, invalid, normalise_host, time_range
from ..logs.stats import StatsRequest, pick_granularity
from ..principal import Principal
from ..runtime import Runtime
from .deps import PrincipalDep, RuntimeDep

router = APIRouter(prefix="/api/v1/logs", tags=["logs"])

MAX_PAGE = 500
_TIME_HELP = "ISO 8601 (2026-12-05T10:00:00Z), Unix seconds, or a duration back from now: 90s, 15m, 2h, 7d"


class LogPage(BaseModel):
    items: list[LogEntry]  # the indexer's own record (a dataclass): one field list for both
    next_cursor: str | None
    since: float
    until: float
    scanned: int
    partial: bool
    index: str
    indexer: dict[str, Any]


Text = Annotated[str | None, Query(max_length=512)]


async def _filter(
    runtime: Runtime,
    principal: Principal,
    *,
    since: str | None,
    until: str | None,
    host: str | None,
    client_ip: str | None,
    user: str | None,
    client_id: str | None,
    status: str | None,
    method: str | None,
    path_prefix: str | None,
    mcp_method: str | None,
    tool: str | None,
    request_id: str | None,
    upstream_error: bool,
    errors: bool,
    slow: bool,
    min_duration_ms: float | None,
) -> LogFilter:
    start, end = time_range(since, until, now=time.time())
    wanted_host = normalise_host(host) if host else None
    logs = runtime.request_logs
    minimum = None if min_duration_ms is None else min_duration_ms / 1000
    if slow:
        minimum = max(minimum or 0.0, logs.slow_threshold_seconds)

    def given(value: str | None) -> str | None:
        return value if value else None

    return LogFilter(
        since=start,
        until=end,
        host=wanted_host,
        client_ip=given(client_ip),
        user=given(user),
        client_id=given(client_id),
        status=StatusFilter.parse(status) if status else None,
        method=method.upper() if method else None,
        path_prefix=given(path_prefix),
        mcp_method=given(mcp_method),
        tool=given(tool),
        request_id=given(request_id),
        upstream_error=upstream_error,
        errors=errors,
        min_duration_seconds=minimum,
        scope=await logs.scope(principal, wanted_host),
    )


class _Filters:
    """The filter query parameters shared by search and tail (one declaration, one OpenAPI text)."""

    def __init__(
        self,
        since: Annotated[
            str | None, Query(max_length=64, description=f"start; default: 1h before until. {_TIME_HELP}")
        ] = None,
        until: Annotated[
            str | None, Query(max_length=64, description=f"end; default: now. {_TIME_HELP}")
        ] = None,
        host: Annotated[str | None, Query(max_length=253, description="proxy host, exactly")] = None,
        client_ip: Text = None,
        user: Annotated[str | None, Query(max_length=512, description="login or subject")] = None,
        client_id: Annotated[str | None, Query(max_length=512, description="OAuth client id")] = None,
        status: Annotated[str | None, Query(max_length=8, description="404, or a class: 4xx")] = None,
        method: Annotated[str | None, Query(max_length=32)] = None,
        path_prefix: Text = None,
        mcp_method: Annotated[
            str | None, Query(max_length=512, description="JSON-RPC method: tools/call")
        ] = None,
        tool: Annotated[str | None, Query(max_length=512, description="MCP tool name")] = None,
        request_id: Annotated[str | None, Query(max_length=128, description="X-Request-Id")] = None,
        upstream_error: Annotated[
            bool, Query(description="the upstream failed (unreachable, 502, 504)")
        ] = False,
        errors: Annotated[bool, Query(description="5xx answers and upstream failures")] = False,
        slow: Annotated[bool, Query(description="took at least LOG_SLOW_THRESHOLD_SECONDS")] = False,
        min_duration_ms: Annotated[float | None, Query(ge=0, le=86_400_000)] = None,
    ) -> None:
        self.values: dict[str, Any] = {
            "since": since,
            "until": until,
            "host": host,
            "client_ip": client_ip,
            "user": user,
            "client_id": client_id,
            "status": status,
            "method": method,
            "path_prefix": path_prefix,
            "mcp_method": mcp_method,
            "tool": tool,
            "request_id": request_id,
            "upstream_error": upstream_error,
            "errors": errors,
            "slow": slow,
            "min_duration_ms": min_duration_ms,
        }


FiltersDep = Annotated[_Filters, Depends()]


def _cursor(value: str | None, field: str) -> str | None:
    if value is None or value == "":
        return None
    if not STREAM_ID.match(value):
        raise invalid(field, "expected a stream id like 1733390000000-0 (from next_cursor)")
    return value


@router.get("/", response_model=LogPage)
async def search_logs(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    filters: FiltersDep,
    limit: Annotated[
        int, Query(ge=1, le=MAX_PAGE, description=f"entries per page (at most {MAX_PAGE})")
    ] = 50,
    cursor: Annotated[
        str | None, Query(max_length=48, description="next_cursor of the previous page")
    ] = None,
) -> LogPage:
    """Request-log entries, newest first, filtered; page on with `cursor`. Entries the indexer has not
    reached yet are found too (read from the stream)."""
    query = await _filter(runtime, principal, **filters.values)
    page = await runtime.request_logs.search(query, limit=limit, cursor=_cursor(cursor, "cursor"))
    return LogPage(
        items=list(page.items),
        next_cursor=page.next_cursor,
        since=query.since,
        until=query.until,
        scanned=page.scanned,
        partial=page.partial,
        index=page.index,
        indexer=await runtime.request_logs.indexer_state(),
    )


@router.get("/stats")
async def log_stats(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    since: Annotated[
        str | None, Query(max_length=64, description=f"default: 1h before until. {_TIME_HELP}")
    ] = None,
    until: Annotated[str | None, Query(max_length=64, description=f"default: now. {_TIME_HELP}")] = None,
    host: Annotated[str | None, Query(max_length=253, description="one proxy host")] = None,
    bucket: Annotated[
        str, Query(max_length=8, description="minute, hour, or auto (minute up to 6h)")
    ] = "auto",
    top: Annotated[int, Query(ge=1, le=50, description="entries of each top list")] = 5,
) -> dict[str, Any]:
    """Per proxy and per minute or hour: requests, status classes, latency p50/p95/p99, bytes, unique IPs
    and users, top paths, users and MCP tools; and totals over the range."""
    start, end = time_range(since, until, now=time.time())
    wanted_host = normalise_host(host) if host else None
    logs = runtime.request_logs
    scope = await logs.scope(principal, wanted_host)
    request = StatsRequest(start, end, pick_granularity(bucket, start, end), top, wanted_host, scope)
    return await logs.stats(request)


@router.get("/tail", response_class=StreamingResponse)
async def tail_logs(
    request: Request,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    filters: FiltersDep,
    after: Annotated[
        str | None, Query(max_length=48, description="resume after this id (an end event's)")
    ] = None,
    max_seconds: Annotated[
        float | None,
        Query(gt=0, le=86_400, description="end after this long (capped by LOG_TAIL_MAX_SECONDS)"),
    ] = None,
) -> StreamingResponse:
    """New entries as Server-Sent Events (`entry` events, then an `end` event with `resume_after`)."""
    query = await _filter(runtime, principal, **filters.values)
    stream = runtime.request_logs.tail(
        query, after=_cursor(after, "after"), max_seconds=max_seconds, disconnected=request.is_disconnected
    )
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
