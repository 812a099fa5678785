"""Read the routing and protection configuration from Redis: all of it, or only what changed.

`read_all`: one MULTI (GET config version, the last id of the changes stream, HGETALL proxies, routes,
proxy-auth, proxy-resources, service endpoints, GET JWKS, ZRANGE revoked jtis) gives a consistent snapshot: a
proxy and its protection always come from the same version, so a request can never reach a just-protected
proxy unchecked, and a `service://NAME` target resolves against the endpoints of that same version; the
stream id is the cursor the next piecewise read starts after.

`read_changes`: one MULTI reads the entries after a cursor (data_plane.sync.changes says what they name) and,
in the same transaction, the current rows of the names the caller asks for, the version and the JWKS. The
caller asks again for the names of any entries it has not fetched yet, until a read brings no new entry:
then every row it holds is the state of that last read's version (a row changed later would have brought
an entry).

Rows that fail to validate are skipped and logged (treated as absent), so one bad row never blanks (or
unprotects) the table; a failure to read at all raises and the caller keeps its last good table."""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TypeVar

import redis.asyncio as aioredis
from pydantic import BaseModel, ValidationError

from data_plane.auth.revocations import RevokedTokens
from data_plane.routing.route_table import RouteTable, build_table
from shared import keys
from shared.models import ProxyTarget, Route, ServiceEndpoint

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
Entries = list[tuple[str, dict[str, str]]]


async def read_version(redis: aioredis.Redis) -> int:
    raw = await redis.get(keys.config_version())
    return int(raw) if raw else 0


@dataclass(frozen=True, slots=True)
class FullRead:
    version: int
    cursor: str  # id of the newest changes-stream entry ("0-0" when the stream is empty)
    proxies: dict[str, str]
    routes: dict[str, str]
    auth: dict[str, str]
    resources: dict[str, str]
    services: dict[str, str]
    jwks: str | None
    revoked: RevokedTokens


async def read_all(redis: aioredis.Redis) -> FullRead:
    proxy_auth, proxy_resources = keys.auth_config_keys()
    async with redis.pipeline(transaction=True) as pipe:
        pipe.get(keys.config_version())
        pipe.xrevrange(keys.changes_stream(), count=1)
        pipe.hgetall(keys.proxies())
        pipe.hgetall(keys.routes())
        pipe.hgetall(proxy_auth)
        pipe.hgetall(proxy_resources)
        pipe.get(keys.oauth_jwks())
        pipe.zrange(keys.oauth_revoked_jtis(), 0, -1, withscores=True)
        pipe.hgetall(keys.service_endpoints())
        version, newest, proxies, routes, auth, resources, jwks, revoked, services = await pipe.execute()
    return FullRead(
        version=int(version) if version else 0,
        cursor=newest[0][0] if newest else "0-0",
        proxies=proxies,
        routes=routes,
        auth=auth,
        resources=resources,
        services=services,
        jwks=jwks,
        revoked=RevokedTokens.from_entries(revoked, now=time.time()),
    )


@dataclass(frozen=True, slots=True)
class ChangeRead:
    version: int
    entries: Entries  # after the cursor, oldest first
    proxies: dict[str, str | None]  # the rows asked for; None = no such row
    routes: dict[str, str | None]
    auth: dict[str, str | None]
    resources: dict[str, str | None]
    services: dict[str, str | None]
    jwks: str | None


async def read_changes(
    redis: aioredis.Redis,
    cursor: str,
    *,
    proxies: Collection[str] = (),
    routes: Collection[str] = (),
    auth: Collection[str] = (),
    services: Collection[str] = (),
) -> ChangeRead:
    proxy_auth, proxy_resources = keys.auth_config_keys()
    wanted = ((keys.proxies(), list(proxies)), (keys.routes(), list(routes)))
    auth_names, service_names = list(auth), list(services)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.get(keys.config_version())
        pipe.xrange(keys.changes_stream(), min=f"({cursor}")
        for key, names in (
            *wanted,
            (proxy_auth, auth_names),
            (proxy_resources, auth_names),
            (keys.service_endpoints(), service_names),
        ):
            if names:
                pipe.hmget(key, names)
        pipe.get(keys.oauth_jwks())
        results = list(await pipe.execute())
    version, entries = results[0], results[1]
    rows = iter(results[2:-1])

    def fetched(names: list[str]) -> dict[str, str | None]:
        return dict(zip(names, next(rows), strict=True)) if names else {}

    return ChangeRead(
        version=int(version) if version else 0,
        entries=[(entry_id, fields) for entry_id, fields in entries],
        proxies=fetched(wanted[0][1]),
        routes=fetched(wanted[1][1]),
        auth=fetched(auth_names),
        resources=fetched(auth_names),
        services=fetched(service_names),
        jwks=results[-1],
    )


async def read_revocation_state(redis: aioredis.Redis) -> tuple[str | None, RevokedTokens]:
    """The JWKS and the revoked set; the revoked set changes without a config version bump (token
    revocation is not a config write), so it is re-read on every reconcile."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.get(keys.oauth_jwks())
        pipe.zrange(keys.oauth_revoked_jtis(), 0, -1, withscores=True)
        jwks_raw, revoked = await pipe.execute()
    return jwks_raw, RevokedTokens.from_entries(revoked, now=time.time())


def parse_rows(model: type[M], rows: Mapping[str, str | None], what: str) -> dict[str, M | None]:
    """Rows as models; a row that does not validate counts as absent (None), with a warning."""
    out: dict[str, M | None] = {}
    for name, raw in rows.items():
        if raw is None:
            out[name] = None
            continue
        try:
            out[name] = model.model_validate_json(raw)
        except ValidationError as exc:
            log.warning("%s %r in Redis is invalid and skipped: %s", what, name, exc.errors()[:3])
            out[name] = None
    return out


def present(rows: Mapping[str, M | None]) -> dict[str, M]:
    return {name: row for name, row in rows.items() if row is not None}


def compile_snapshot(
    version: int,
    raw_proxies: dict[str, str],
    raw_routes: dict[str, str],
    raw_services: dict[str, str] | None = None,
) -> RouteTable:
    proxies = present(parse_rows(ProxyTarget, raw_proxies, "proxy"))
    routes = present(parse_rows(Route, raw_routes, "route"))
    services = present(parse_rows(ServiceEndpoint, raw_services or {}, "service endpoint"))
    return build_table(version, proxies.values(), routes.values(), services)
