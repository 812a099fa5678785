"""Routes: path/method rules (prefix or regex) that send matching requests to a URL or to a proxy's backend.

Stored as `shared.models.Route` (regexes compiled at validation, 422 when invalid). Listing is ordered the
way the data plane evaluates routes: priority descending, then id ascending.

Ownership rules beyond "see and change only your own":
- a route's `target_proxy` must exist (422 otherwise) and, for ordinary tokens, be their own (403), and so
  must a `service://NAME` target_url (services/service_refs.py);
- ordinary tokens may not create `scope: global` routes (they would apply to every proxy, including other
  owners'); they scope routes to proxies they own, which must exist (422) and be theirs (403);
- the admin, too, names only proxies that exist (422): a typo would otherwise be a route that never matches.
"""

from __future__ import annotations

import secrets
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.models import Route
from shared.target_policy import TargetPolicy

from .. import store
from ..cascade import plan_owned_deletions
from ..errors import Conflict, Forbidden, InvalidInput, invalid_from_validation
from ..principal import Principal, require_current
from ..store import ConfigWrite, Reader, Store
from .owned import plan_delete, read_owned
from .proxies import check_target
from .service_refs import check_service_target

ROUTE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class RouteSettings(BaseModel):
    """Every client-settable field of a route except its id (PUT replaces all of them)."""

    model_config = ConfigDict(extra="forbid")
    path_pattern: str = Field(
        description="Path prefix starting with '/', or an RE2 regex (no backreferences or lookaround) when "
        "match='regex'"
    )
    match: Literal["prefix", "regex"] = "prefix"
    methods: list[str] = Field(default_factory=list, description="Empty = every method")
    priority: int = Field(default=500, ge=0, le=999, description="Higher is evaluated first")
    target_url: str | None = None
    target_proxy: str | None = Field(default=None, description="Send to this proxy's target_url")
    scope: Literal["global", "proxies"] = "global"
    proxy_hostnames: list[str] = Field(default_factory=list)
    enabled: bool = True
    description: str = ""


class RouteCreate(RouteSettings):
    id: str | None = Field(default=None, pattern=ROUTE_ID_PATTERN, description="Generated when omitted")


def _build(settings: RouteSettings, *, route_id: str, owner: str, created_at: float) -> Route:
    try:
        return Route.model_validate(
            {
                **settings.model_dump(exclude={"id"}),
                "id": route_id,
                "owner": owner,
                "created_at": created_at,
                "updated_at": time.time(),
            }
        )
    except ValidationError as exc:
        raise invalid_from_validation(exc) from exc


async def _check_references(reader: Reader, principal: Principal, route: Route) -> None:
    if route.target_url is not None:
        await check_service_target(reader, principal, route.target_url)
    if route.target_proxy is not None:
        proxy = await reader.get(store.proxies(), route.target_proxy)
        if proxy is None:
            raise InvalidInput(
                f"target_proxy: no proxy named {route.target_proxy!r}",
                [
                    {
                        "loc": ["body", "target_proxy"],
                        "msg": f"no proxy named {route.target_proxy!r}",
                        "type": "value_error",
                    }
                ],
            )
        principal.require_access("proxy", route.target_proxy, proxy.owner)
    if route.scope == "global" and not principal.is_admin:
        raise Forbidden(
            "only the admin token may create global routes; use scope 'proxies' with your own proxies"
        )
    for hostname in route.proxy_hostnames:
        proxy = await reader.get(store.proxies(), hostname)
        if proxy is None:
            raise InvalidInput(
                f"proxy_hostnames: no proxy named {hostname!r}",
                [
                    {
                        "loc": ["body", "proxy_hostnames"],
                        "msg": f"no proxy named {hostname!r}",
                        "type": "value_error",
                    }
                ],
            )
        principal.require_access("proxy", hostname, proxy.owner)


def evaluation_order(route: Route) -> tuple[int, str]:
    return (-route.priority, route.id)


class RouteService:
    def __init__(self, store_: Store, *, targets: TargetPolicy | None = None) -> None:
        self._store = store_
        self._targets = targets

    async def create(self, principal: Principal, body: RouteCreate) -> Route:
        route_id = body.id or f"r-{secrets.token_hex(4)}"
        route = _build(body, route_id=route_id, owner=principal.owner, created_at=time.time())
        if route.target_url is not None:
            check_target(self._targets, route.owner, route.target_url)

        async def plan(reader: Reader) -> ConfigWrite:
            await require_current(reader, principal)
            if await reader.exists(store.routes(), route.id):
                raise Conflict(f"route {route.id!r} already exists")
            await _check_references(reader, principal, route)
            write = ConfigWrite()
            write.put(store.routes(), route.id, route)
            write.about(store.routes(), route.id, f"route {route.id!r}")
            write.change("route", "created", route.id, route.owner)
            return write

        await self._store.transact(plan)
        return route

    async def list(self, principal: Principal) -> list[Route]:
        rows = await self._store.reader.all(store.routes())
        return sorted((r for r in rows.values() if principal.can_access(r.owner)), key=evaluation_order)

    async def get(self, principal: Principal, route_id: str) -> Route:
        return await read_owned(self._store.reader, principal, store.routes(), "route", route_id)

    async def replace(self, principal: Principal, route_id: str, body: RouteSettings) -> Route:
        result: list[Route] = []

        async def plan(reader: Reader) -> ConfigWrite:
            await require_current(reader, principal)
            current = await read_owned(reader, principal, store.routes(), "route", route_id)
            new = _build(body, route_id=route_id, owner=current.owner, created_at=current.created_at)
            if new.target_url is not None:
                check_target(self._targets, new.owner, new.target_url)
            await _check_references(reader, principal, new)
            result[:] = [new]
            write = ConfigWrite()
            write.put(store.routes(), route_id, new)
            write.about(store.routes(), route_id, f"route {route_id!r}")
            write.change("route", "updated", route_id, current.owner)
            return write

        await self._store.transact(plan)
        return result[0]

    async def delete(self, principal: Principal, route_id: str) -> None:
        async def plan(reader: Reader) -> ConfigWrite:
            return await plan_delete(reader, principal, store.routes(), "route", route_id)

        await self._store.transact(plan)


async def delete_owned_routes(reader: Reader, owner: str) -> ConfigWrite:
    """Cascade cleanup: plan deletion of every route `owner` owns."""
    return await plan_owned_deletions(reader, owner, store.routes(), "route")
