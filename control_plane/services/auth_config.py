"""Per-proxy OAuth protection (ProxyAuthConfig), its Protected Resource Metadata fields (ProxyResource)
and the resource registry derived from them.

Both are configuration: written with the config-write transaction (change kind "auth") so data planes
reload them, each in its own hash (shared.keys.proxy_auth / proxy_resources), never inside ProxyTarget.
Access follows the proxy: whoever may change a proxy may change its protection. The registry is computed
(every proxy with protection enabled), so it can never disagree with what the data plane enforces.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared import keys
from shared.config import Settings
from shared.encryption import EncryptionError, Keyring
from shared.models import (
    DEFAULT_MCP_SCOPE,
    IdentityField,
    ProxyAuthConfig,
    ProxyResource,
    ScopeRule,
)

from .. import store
from ..cascade import plan_owned_deletions
from ..errors import InvalidInput, NotFound, invalid_from_validation
from ..principal import Principal, require_current
from ..store import Collection, ConfigWrite, Reader, Store
from .owned import read_owned
from .proxies import normalise_path_hostname


def proxy_auth_collection() -> Collection[ProxyAuthConfig]:
    return Collection(keys.proxy_auth(), ProxyAuthConfig)


def proxy_resource_collection() -> Collection[ProxyResource]:
    return Collection(keys.proxy_resources(), ProxyResource)


class ProxyAuthSettings(BaseModel):
    """Client-settable protection of a proxy (PUT replaces all of it)."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    allowed_users: list[str] = Field(
        default_factory=list, description="GitHub logins allowed in; '*' = any signed-in user"
    )
    allowed_orgs: list[str] = Field(default_factory=list, description="GitHub orgs whose members are allowed")
    required_scopes: list[str] = Field(default_factory=lambda: [DEFAULT_MCP_SCOPE])
    scope_rules: list[ScopeRule] = Field(
        default_factory=list, description="per path/method scopes; the first matching rule wins"
    )
    public_paths: list[str] = Field(default_factory=list, description="path prefixes that need no token")
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="browser origins allowed to call (scheme://host[:port]); empty: any; others get 403",
    )
    allowed_clients: list[str] = Field(
        default_factory=list,
        description="OAuth client ids whose client_credentials tokens (machine clients, no user) are allowed",
    )
    identity_headers: dict[str, IdentityField] | None = Field(
        default=None, description="header sent upstream -> token field; omitted: X-Auth-User/Subject/Scopes"
    )
    github_client_id: str = Field(
        default="", max_length=100, description="this proxy's own GitHub OAuth app ('' = the default app)"
    )
    github_client_secret: str | None = Field(
        default=None,
        max_length=200,
        description="secret of that app; stored encrypted, never returned. Omit to keep the stored one",
    )


class ProxyAuthView(BaseModel):
    """ProxyAuthConfig as the API shows it: the GitHub app secret is never returned, only whether it's set."""

    hostname: str
    enabled: bool
    allowed_users: list[str]
    allowed_orgs: list[str]
    required_scopes: list[str]
    scope_rules: list[ScopeRule]
    public_paths: list[str]
    allowed_origins: list[str]
    allowed_clients: list[str]
    identity_headers: dict[str, str]
    github_client_id: str
    github_client_secret_set: bool
    owner: str
    created_at: float
    updated_at: float

    @classmethod
    def of(cls, config: ProxyAuthConfig) -> ProxyAuthView:
        data = config.model_dump(exclude={"github_client_secret_encrypted", "schema_version"})
        return cls(**data, github_client_secret_set=bool(config.github_client_secret_encrypted))


class ProxyResourceSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(default="/mcp", description="path of the protected resource ('' = whole host)")
    scopes_supported: list[str] = Field(default_factory=lambda: [DEFAULT_MCP_SCOPE])
    resource_name: str = ""
    resource_documentation: str = ""


class ResourceEntry(BaseModel):
    resource: str
    proxy: str
    path: str
    scopes: list[str]
    allowed_users: list[str]
    allowed_orgs: list[str]
    owner: str


def _validated(model: type[BaseModel], data: dict[str, Any]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid_from_validation(exc) from exc


def github_app_context(hostname: str) -> str:
    """Associated data binding an encrypted GitHub app secret to its proxy."""
    return f"github-app:{hostname}"


class AuthConfigService:
    def __init__(self, store_: Store, settings: Settings) -> None:
        self._store = store_
        self._settings = settings

    def _secret_fields(
        self, name: str, body: ProxyAuthSettings, current: ProxyAuthConfig | None
    ) -> dict[str, str]:
        """github_client_id and the encrypted secret for the new config (the stored secret is kept when the
        client id is unchanged and no new secret is sent)."""
        if not body.github_client_id:
            if body.github_client_secret:
                raise InvalidInput("github_client_secret needs github_client_id")
            return {"github_client_id": "", "github_client_secret_encrypted": ""}
        if body.github_client_secret is None:
            if current is None or current.github_client_id != body.github_client_id:
                raise InvalidInput("github_client_secret is required when setting a new github_client_id")
            return {
                "github_client_id": body.github_client_id,
                "github_client_secret_encrypted": current.github_client_secret_encrypted,
            }
        try:
            encrypted = Keyring.from_settings(self._settings).encrypt(
                body.github_client_secret.encode("utf-8"), context=github_app_context(name)
            )
        except EncryptionError as exc:
            raise InvalidInput(f"cannot store github_client_secret: {exc}") from exc
        return {"github_client_id": body.github_client_id, "github_client_secret_encrypted": encrypted}

    async def put_auth(self, principal: Principal, hostname: str, body: ProxyAuthSettings) -> ProxyAuthConfig:
        name = normalise_path_hostname(hostname)
        result: list[ProxyAuthConfig] = []

        async def plan(reader: Reader) -> ConfigWrite:
            await require_current(reader, principal)
            proxy = await read_owned(reader, principal, store.proxies(), "proxy", name)
            current = await reader.get(proxy_auth_collection(), name)
            data = body.model_dump(exclude_none=True, exclude={"github_client_id", "github_client_secret"})
            config: ProxyAuthConfig = _validated(
                ProxyAuthConfig,
                {
                    **data,
                    **self._secret_fields(name, body, current),
                    "hostname": name,
                    "owner": proxy.owner,
                    "created_at": current.created_at if current else time.time(),
                    "updated_at": time.time(),
                },
            )
            result[:] = [config]
            write = ConfigWrite()
            write.put(proxy_auth_collection(), name, config)
            write.about(proxy_auth_collection(), name, f"auth configuration of proxy {name!r}")
            write.change("auth", "updated" if current else "created", name, proxy.owner)
            return write

        await self._store.transact(plan)
        return result[0]

    async def get_auth(self, principal: Principal, hostname: str) -> ProxyAuthConfig:
        name = normalise_path_hostname(hostname)
        await read_owned(self._store.reader, principal, store.proxies(), "proxy", name)
        config = await self._store.reader.get(proxy_auth_collection(), name)
        if config is None:
            raise NotFound(f"proxy {name!r} has no auth configuration (it is not protected)")
        return config

    async def delete_auth(self, principal: Principal, hostname: str) -> None:
        name = normalise_path_hostname(hostname)

        async def plan(reader: Reader) -> ConfigWrite:
            await require_current(reader, principal)
            proxy = await read_owned(reader, principal, store.proxies(), "proxy", name)
            if not await reader.exists(proxy_auth_collection(), name):
                raise NotFound(f"proxy {name!r} has no auth configuration")
            write = ConfigWrite()
            write.delete(proxy_auth_collection(), name)
            write.about(proxy_auth_collection(), name, f"auth configuration of proxy {name!r}")
            write.change("auth", "deleted", name, proxy.owner)
            return write

        await self._store.transact(plan)

    async def put_resource(
        self, principal: Principal, hostname: str, body: ProxyResourceSettings
    ) -> ProxyResource:
        name = normalise_path_hostname(hostname)
        result: list[ProxyResource] = []

        async def plan(reader: Reader) -> ConfigWrite:
            await require_current(reader, principal)
            proxy = await read_owned(reader, principal, store.proxies(), "proxy", name)
            existed = await reader.exists(proxy_resource_collection(), name)
            resource: ProxyResource = _validated(
                ProxyResource,
                {**body.model_dump(), "hostname": name, "owner": proxy.owner, "updated_at": time.time()},
            )
            result[:] = [resource]
            write = ConfigWrite()
            write.put(proxy_resource_collection(), name, resource)
            write.about(proxy_resource_collection(), name, f"resource settings of proxy {name!r}")
            write.change("auth", "updated" if existed else "created", name, proxy.owner)
            return write

        await self._store.transact(plan)
        return result[0]

    async def get_resource(self, principal: Principal, hostname: str) -> ProxyResource:
        """The stored PRM fields, or the defaults a protected proxy gets when none were set."""
        return (await self.get_resource_stored(principal, hostname))[0]

    async def get_resource_stored(self, principal: Principal, hostname: str) -> tuple[ProxyResource, bool]:
        """The PRM fields, and whether they are stored (False: the defaults)."""
        name = normalise_path_hostname(hostname)
        proxy = await read_owned(self._store.reader, principal, store.proxies(), "proxy", name)
        resource = await self._store.reader.get(proxy_resource_collection(), name)
        if resource is None:
            return ProxyResource(hostname=name, owner=proxy.owner), False
        return resource, True

    async def registry(self, principal: Principal) -> list[ResourceEntry]:
        reader = self._store.reader
        auth = await reader.all(proxy_auth_collection())
        resources = await reader.all(proxy_resource_collection())
        proxies = await reader.all(store.proxies())
        out: list[ResourceEntry] = []
        for hostname, config in sorted(auth.items()):
            proxy = proxies.get(hostname)
            if not config.enabled or proxy is None or not principal.can_access(proxy.owner):
                continue
            resource = resources.get(hostname) or ProxyResource(hostname=hostname)
            scopes = list(config.required_scopes)
            for item in [*resource.scopes_supported, *(s for r in config.scope_rules for s in r.scopes)]:
                if item not in scopes:
                    scopes.append(item)
            scheme = "https" if proxy.enable_https else "http"
            out.append(
                ResourceEntry(
                    resource=f"{scheme}://{hostname}{resource.path}",
                    proxy=hostname,
                    path=resource.path,
                    scopes=scopes,
                    allowed_users=config.allowed_users,
                    allowed_orgs=config.allowed_orgs,
                    owner=proxy.owner,
                )
            )
        return out


async def delete_owned_auth_configs(reader: Reader, owner: str) -> ConfigWrite:
    """Cascade cleanup: protection and PRM fields of every proxy `owner` owns go with the proxies."""
    write = await plan_owned_deletions(reader, owner, proxy_auth_collection(), "auth")
    return await plan_owned_deletions(reader, owner, proxy_resource_collection(), None, into=write)
