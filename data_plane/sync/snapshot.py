"""Read the routing configuration from Redis in one transaction and compile it into a RouteTable.

One MULTI (GET config version, HGETALL proxies, HGETALL routes) gives a consistent snapshot. Rows that fail
to validate are skipped and logged, so one bad row never blanks the table; a failure to read at all raises
and the caller keeps its last good table."""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
from pydantic import ValidationError

from data_plane.routing.route_table import RouteTable, build_table
from shared import keys
from shared.models import ProxyTarget, Route

log = logging.getLogger(__name__)


async def read_version(redis: aioredis.Redis) -> int:
    raw = await redis.get(keys.config_version())
    return int(raw) if raw else 0


async def load_table(redis: aioredis.Redis) -> RouteTable:
    async with redis.pipeline(transaction=True) as pipe:
        pipe.get(keys.config_version())
        pipe.hgetall(keys.proxies())
        pipe.hgetall(keys.routes())
        raw_version, raw_proxies, raw_routes = await pipe.execute()
    version = int(raw_version) if raw_version else 0
    return compile_snapshot(version, raw_proxies, raw_routes)


def compile_snapshot(version: int, raw_proxies: dict[str, str], raw_routes: dict[str, str]) -> RouteTable:
    proxies: list[ProxyTarget] = []
    for name, value in raw_proxies.items():
        try:
            proxies.append(ProxyTarget.model_validate_json(value))
        except ValidationError as exc:
            log.warning("proxy %r in Redis is invalid and skipped: %s", name, exc.errors()[:3])
    routes: list[Route] = []
    for name, value in raw_routes.items():
        try:
            routes.append(Route.model_validate_json(value))
        except ValidationError as exc:
            log.warning("route %r in Redis is invalid and skipped: %s", name, exc.errors()[:3])
    return build_table(version, proxies, routes)
