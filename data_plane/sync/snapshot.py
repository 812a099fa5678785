"""Read the routing and protection configuration from Redis in one transaction and compile it.

One MULTI (GET config version, HGETALL proxies, HGETALL routes, HGETALL proxy-auth, HGETALL
proxy-resources, GET JWKS, ZRANGE revoked jtis, HGETALL service endpoints) gives a consistent snapshot: a
proxy and its protection always come from the same version, so a request can never reach a just-protected
proxy unchecked, and a `service://NAME` target resolves against the endpoints of that same version. Rows that
fail to validate are skipped and logged, so one bad row never blanks (or unprotects) the table; a failure
to read at all raises and the caller keeps its last good table."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from pydantic import ValidationError

from data_plane.auth.auth_table import AuthTable, build_auth_table
from data_plane.auth.revocations import RevokedTokens
from data_plane.routing.route_table import RouteTable, build_table
from shared import keys
from shared.models import ProxyTarget, Route, ServiceEndpoint

log = logging.getLogger(__name__)


async def read_version(redis: aioredis.Redis) -> int:
    raw = await redis.get(keys.config_version())
    return int(raw) if raw else 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    table: RouteTable
    auth: AuthTable
    jwks_raw: str | None
    revoked: RevokedTokens


async def load_table(redis: aioredis.Redis) -> RouteTable:
    return (await load_snapshot(redis)).table


async def load_snapshot(redis: aioredis.Redis) -> Snapshot:
    proxy_auth, proxy_resources = keys.auth_config_keys()
    async with redis.pipeline(transaction=True) as pipe:
        pipe.get(keys.config_version())
        pipe.hgetall(keys.proxies())
        pipe.hgetall(keys.routes())
        pipe.hgetall(proxy_auth)
        pipe.hgetall(proxy_resources)
        pipe.get(keys.oauth_jwks())
        pipe.zrange(keys.oauth_revoked_jtis(), 0, -1, withscores=True)
        pipe.hgetall(keys.service_endpoints())
        (
            raw_version,
            raw_proxies,
            raw_routes,
            raw_auth,
            raw_resources,
            jwks_raw,
            revoked,
            raw_services,
        ) = await pipe.execute()
    version = int(raw_version) if raw_version else 0
    auth = build_auth_table(raw_auth, raw_resources, jwks_raw)
    for reason in auth.skipped:
        log.warning("auth config skipped: %s", reason)
    return Snapshot(
        table=compile_snapshot(version, raw_proxies, raw_routes, raw_services),
        auth=auth,
        jwks_raw=jwks_raw,
        revoked=RevokedTokens.from_entries(revoked, now=time.time()),
    )


async def read_revocation_state(redis: aioredis.Redis) -> tuple[str | None, RevokedTokens]:
    """The JWKS and the revoked set, which change without a config version bump (key rotation and token
    revocation are not config writes): re-read on every reconcile."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.get(keys.oauth_jwks())
        pipe.zrange(keys.oauth_revoked_jtis(), 0, -1, withscores=True)
        jwks_raw, revoked = await pipe.execute()
    return jwks_raw, RevokedTokens.from_entries(revoked, now=time.time())


def compile_snapshot(
    version: int,
    raw_proxies: dict[str, str],
    raw_routes: dict[str, str],
    raw_services: dict[str, str] | None = None,
) -> RouteTable:
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
    services: dict[str, ServiceEndpoint] = {}
    for name, value in (raw_services or {}).items():
        try:
            services[name] = ServiceEndpoint.model_validate_json(value)
        except ValidationError as exc:
            log.warning("service endpoint %r in Redis is invalid and skipped: %s", name, exc.errors()[:3])
    return build_table(version, proxies, routes, services)
