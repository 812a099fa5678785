"""Proxy targets: a public hostname proxied to a backend URL, with per-proxy headers, timeouts and route mode.

Clients send `ProxyTargetCreate` / `ProxyTargetSettings`; the server stamps owner and timestamps and validates
the result as the stored `shared.models.ProxyTarget` (hostname normalised: IDNA, lower-case, wildcard rules).
Hostnames are unique across owners (409). Ordinary tokens see and change only their own proxies (403
otherwise), and may claim only names services/hostname_claims.py allows them (no wildcards outside a zone
the admin delegated, never the authorization server's host, nothing another owner's wildcard or zone holds).
Deleting a proxy leaves routes that name it in place; such routes simply never match until it exists again.
A target may be `service://NAME`: a service (managed or external) of the proxy's owner
(services/service_refs.py).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from shared.hostnames import InvalidHostname, normalise_hostname
from shared.models import ADMIN_OWNER, ProxyTarget
from shared.target_policy import TargetPolicy

from .. import store
from ..cascade import plan_owned_deletions
from ..errors import Conflict, Forbidden, InvalidInput, NotFound, invalid_from_validation
from ..principal import Principal, require_current
from ..store import ConfigWrite, Reader, Store
from .hostname_claims import name_facts, own_zones, proxy_refusal
from .owned import plan_delete, read_owned
from .service_refs import check_service_target

SERVER_SET_FIELDS = frozenset({"hostname", "owner", "created_at", "updated_at", "schema_version"})


class ProxyTargetSettings(BaseModel):
    """Every client-settable field of a proxy except its hostname (PUT replaces all of them)."""

    model_config = ConfigDict(extra="forbid")
    target_url: str = Field(description="Backend base URL, http:// or https://")
    enabled: bool = True
    enable_http: bool = Field(default=True, description="Serve on the plain-HTTP listener")
    enable_https: bool = Field(default=True, description="Serve on HTTPS; a certificate is requested")
    redirect_http_to_https: bool = Field(
        default=True,
        description="Answer plain-HTTP requests with 308 to https:// once a certificate for the host is live",
    )
    hsts_max_age_seconds: int = Field(
        default=0, description="Strict-Transport-Security max-age on HTTPS responses; 0 = off, max 2 years"
    )
    preserve_host_header: bool = True
    verify_upstream_tls: bool = True
    upstream_ca_bundle_pem: str | None = None
    request_headers_set: dict[str, str] = Field(default_factory=dict)
    request_headers_remove: list[str] = Field(default_factory=list)
    response_headers_set: dict[str, str] = Field(default_factory=dict)
    response_headers_remove: list[str] = Field(default_factory=list)
    connect_timeout_seconds: float = 10.0
    read_timeout_seconds: float = 60.0
    max_request_body_bytes: int = 100 * 1024 * 1024
    allow_encoded_slashes: bool = Field(
        default=False, description="Accept %2F and %5C in request paths (kept encoded); otherwise 400"
    )
    route_mode: Literal["all", "selective", "none"] = "all"
    enabled_route_ids: list[str] = Field(default_factory=list)
    disabled_route_ids: list[str] = Field(default_factory=list)


class ProxyTargetCreate(ProxyTargetSettings):
    hostname: str = Field(
        validation_alias=AliasChoices("hostname", "proxy_hostname"),
        description="Public hostname (IDNA allowed; `*.example.com` wildcard allowed). Alias: proxy_hostname",
    )


def check_target(targets: TargetPolicy | None, owner: str, url: str, field: str = "target_url") -> None:
    """422 when an ordinary token's object targets an address it may not reach (shared/target_policy.py;
    names are checked again by the data plane on every connect)."""
    if targets is None or owner == ADMIN_OWNER:
        return
    refusal = targets.url_refusal(url)
    if refusal is not None:
        raise InvalidInput(
            f"{field}: {refusal}", [{"loc": ["body", field], "msg": refusal, "type": "value_error"}]
        )


def _build(settings: dict[str, Any], *, hostname: str, owner: str, created_at: float) -> ProxyTarget:
    try:
        return ProxyTarget.model_validate(
            {
                **settings,
                "hostname": hostname,
                "owner": owner,
                "created_at": created_at,
                "updated_at": time.time(),
            }
        )
    except ValidationError as exc:
        raise invalid_from_validation(exc) from exc


def normalise_path_hostname(hostname: str) -> str:
    """A hostname taken from a URL path, normalised the way stored hostnames are (so lookups agree)."""
    try:
        return normalise_hostname(hostname, allow_wildcard=True)
    except InvalidHostname as exc:
        raise NotFound(f"proxy {hostname!r} not found ({exc})") from exc


ProxySaved = Callable[[ProxyTarget], Awaitable[None]]


class ProxyService:
    def __init__(
        self,
        store_: Store,
        *,
        reserved: frozenset[str] = frozenset(),
        targets: TargetPolicy | None = None,
        on_saved: ProxySaved | None = None,
    ) -> None:
        self._store = store_
        self._reserved = reserved
        self._targets = targets
        # Called after a create/update commits (certificates: request one when HTTPS has none yet).
        self._on_saved = on_saved

    async def create(self, principal: Principal, body: ProxyTargetCreate) -> ProxyTarget:
        proxy = self.new_proxy(principal, body.hostname, body.model_dump(exclude={"hostname"}))

        async def plan(reader: Reader) -> ConfigWrite:
            await require_current(reader, principal)
            await check_service_target(reader, principal, proxy.target_url)
            return await self.plan_create(reader, principal, proxy)

        await self._store.transact(plan)
        await self.saved(proxy)
        return proxy

    def new_proxy(self, principal: Principal, hostname: str, settings: dict[str, Any]) -> ProxyTarget:
        """A validated proxy owned by `principal`, its target checked (422); not stored yet."""
        proxy = _build(settings, hostname=hostname, owner=principal.owner, created_at=time.time())
        check_target(self._targets, proxy.owner, proxy.target_url)
        return proxy

    async def plan_create(self, reader: Reader, principal: Principal, proxy: ProxyTarget) -> ConfigWrite:
        """The write that creates `proxy` (409 if the name exists, 403 if the name is not the principal's
        to claim), for a caller that commits it, maybe with more (a service and its proxy go together)."""
        # Whether the caller may claim the name at all comes first: 403 whether or not it exists.
        refusal = proxy_refusal(
            principal,
            await own_zones(reader, principal),
            await name_facts(reader, proxy.hostname),
            self._reserved,
        )
        if refusal is not None:
            raise Forbidden(refusal)
        if await reader.exists(store.proxies(), proxy.hostname):
            raise Conflict(f"proxy {proxy.hostname!r} already exists")
        write = ConfigWrite()
        write.put(store.proxies(), proxy.hostname, proxy)
        write.about(store.proxies(), proxy.hostname, f"proxy {proxy.hostname!r}")
        write.change("proxy", "created", proxy.hostname, proxy.owner)
        return write

    async def saved(self, proxy: ProxyTarget) -> None:
        """After a commit that created or changed `proxy` (certificates: request one for HTTPS)."""
        if self._on_saved is not None:
            await self._on_saved(proxy)

    async def list(self, principal: Principal) -> list[ProxyTarget]:
        rows = await self._store.reader.all(store.proxies())
        return [p for _, p in sorted(rows.items()) if principal.can_access(p.owner)]

    async def get(self, principal: Principal, hostname: str) -> ProxyTarget:
        return await read_owned(
            self._store.reader, principal, store.proxies(), "proxy", normalise_path_hostname(hostname)
        )

    async def replace(self, principal: Principal, hostname: str, body: ProxyTargetSettings) -> ProxyTarget:
        return await self._update(principal, hostname, lambda _current: body.model_dump())

    async def patch(self, principal: Principal, hostname: str, changes: dict[str, Any]) -> ProxyTarget:
        unknown = sorted(set(changes) - set(ProxyTargetSettings.model_fields))
        if unknown:
            raise InvalidInput(
                f"{unknown[0]}: not a settable proxy field",
                [
                    {"loc": ["body", name], "msg": "not a settable proxy field", "type": "extra_forbidden"}
                    for name in unknown
                ],
            )

        def merge(current: ProxyTarget) -> dict[str, Any]:
            base = current.model_dump(exclude=set(SERVER_SET_FIELDS))
            try:
                return ProxyTargetSettings.model_validate({**base, **changes}).model_dump()
            except ValidationError as exc:
                raise invalid_from_validation(exc) from exc

        return await self._update(principal, hostname, merge)

    async def delete(self, principal: Principal, hostname: str) -> None:
        name = normalise_path_hostname(hostname)

        async def plan(reader: Reader) -> ConfigWrite:
            return await plan_delete(reader, principal, store.proxies(), "proxy", name)

        await self._store.transact(plan)

    async def _update(
        self, principal: Principal, hostname: str, settings_of: Callable[[ProxyTarget], dict[str, Any]]
    ) -> ProxyTarget:
        name = normalise_path_hostname(hostname)
        result: list[ProxyTarget] = []

        async def plan(reader: Reader) -> ConfigWrite:
            await require_current(reader, principal)
            current = await read_owned(reader, principal, store.proxies(), "proxy", name)
            new = _build(
                settings_of(current), hostname=name, owner=current.owner, created_at=current.created_at
            )
            check_target(self._targets, new.owner, new.target_url)
            await check_service_target(reader, principal, new.target_url)
            result[:] = [new]
            write = ConfigWrite()
            write.put(store.proxies(), name, new)
            write.about(store.proxies(), name, f"proxy {name!r}")
            write.change("proxy", "updated", name, current.owner)
            return write

        await self._store.transact(plan)
        await self.saved(result[0])
        return result[0]


async def delete_owned_proxies(reader: Reader, owner: str) -> ConfigWrite:
    """Cascade cleanup: plan deletion of every proxy `owner` owns."""
    return await plan_owned_deletions(reader, owner, store.proxies(), "proxy")
