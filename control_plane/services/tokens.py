"""API tokens: create (secret shown once, only its SHA-256 stored), list, show, update, delete.

Policy: only the admin token creates and deletes tokens, delegates DNS zones to them (`zones`, see
services/hostname_claims.py) and grants them more than owning objects (`grants`: public port binds, the
host network for services); zones of two tokens never overlap (409). An ordinary token sees only its own
record and may change only its cert_email. Deleting a token deletes, in the same transaction, everything it
owns (see cascade.py) and its zone delegations.
The name `admin` is reserved: it is the owner value of objects made with ADMIN_TOKEN.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from control_plane.records import TOKEN_NAME_PATTERN, ApiToken, TokenGrant, ZoneDelegation
from shared.models import ADMIN_OWNER
from shared.secrets import new_api_token, token_sha256

from .. import store
from ..cascade import CascadeRegistry
from ..errors import Conflict, NotFound, invalid_from_validation
from ..principal import Principal, require_current
from ..store import ConfigWrite, Reader, Store
from .hostname_claims import within

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _check_email(value: str) -> str:
    value = value.strip()
    if value and not _EMAIL.match(value):
        raise ValueError("cert_email must be an email address (or empty)")
    return value


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[
        str, Field(pattern=TOKEN_NAME_PATTERN, description="Unique token name; owner id of what it creates")
    ]
    cert_email: str = Field(default="", description="Contact email for certificates of this token's proxies")
    zones: list[str] = Field(
        default_factory=list,
        description="DNS zones delegated to this token: it may create names (and wildcards) only under them",
    )
    grants: list[TokenGrant] = Field(
        default_factory=list,
        description="public-ports: bind service ports on 0.0.0.0; host-network: services on the host network",
    )

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value.lower() == ADMIN_OWNER:
            raise ValueError(f"the name {ADMIN_OWNER!r} is reserved for the admin token")
        return value

    @field_validator("cert_email")
    @classmethod
    def _email(cls, value: str) -> str:
        return _check_email(value)


class TokenUpdate(BaseModel):
    """Fields left out keep their value. `zones` and `grants` are admin-only."""

    model_config = ConfigDict(extra="forbid")
    cert_email: str | None = None
    zones: list[str] | None = None
    grants: list[TokenGrant] | None = None

    @field_validator("cert_email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        return None if value is None else _check_email(value)


class TokenView(BaseModel):
    """A token as listed: never the secret, never its hash."""

    name: str
    cert_email: str
    zones: list[str]
    grants: list[TokenGrant]
    created_at: float
    created_by: str

    @classmethod
    def of(cls, token: ApiToken) -> TokenView:
        return cls(
            name=token.name,
            cert_email=token.cert_email,
            zones=token.zones,
            grants=token.grants,
            created_at=token.created_at,
            created_by=token.created_by,
        )


class TokenCreated(TokenView):
    token: str = Field(description="The bearer token. Shown once; only its SHA-256 is stored.")


class TokenService:
    def __init__(self, store_: Store, cascade: CascadeRegistry) -> None:
        self._store = store_
        self._cascade = cascade

    async def create(self, principal: Principal, body: TokenCreate) -> TokenCreated:
        principal.require_admin("create tokens")
        secret = new_api_token()
        digest = token_sha256(secret)
        token = _validated(
            name=body.name,
            token_sha256=digest,
            cert_email=body.cert_email,
            zones=body.zones,
            grants=body.grants,
            created_by=principal.owner,
        )

        async def plan(reader: Reader) -> ConfigWrite:
            await require_current(reader, principal)
            if await reader.exists(store.tokens(), body.name):
                raise Conflict(f"token {body.name!r} already exists")
            write = ConfigWrite()
            await _delegate_zones(reader, write, token, previous=[])
            write.put(store.tokens(), token.name, token)
            write.about(store.tokens(), token.name, f"token {token.name!r}")
            write.put_token_hash(digest, token.name)
            write.change("token", "created", token.name, principal.owner)
            return write

        await self._store.transact(plan)
        return TokenCreated(**TokenView.of(token).model_dump(), token=secret)

    async def list(self, principal: Principal) -> list[TokenView]:
        rows = await self._store.reader.all(store.tokens())
        visible = [t for t in rows.values() if principal.is_admin or t.name == principal.name]
        return [TokenView.of(t) for t in sorted(visible, key=lambda t: t.name)]

    async def get(self, principal: Principal, name: str) -> TokenView:
        return TokenView.of(await self.record(principal, name))

    async def record(self, principal: Principal, name: str) -> ApiToken:
        """The stored token (its hash included: for the API's ETag, never for an answer body)."""
        return await self._visible(self._store.reader, principal, name)

    async def update(self, principal: Principal, name: str, body: TokenUpdate) -> TokenView:
        updated: list[ApiToken] = []

        async def plan(reader: Reader) -> ConfigWrite:
            await require_current(reader, principal)
            current = await self._visible(reader, principal, name)
            changes: dict[str, object] = {}
            if body.cert_email is not None:
                changes["cert_email"] = body.cert_email
            if body.zones is not None:
                principal.require_admin("delegate zones")
                changes["zones"] = body.zones
            if body.grants is not None:
                principal.require_admin("change grants")
                changes["grants"] = body.grants
            new = _validated(**{**current.model_dump(), **changes})
            updated[:] = [new]
            write = ConfigWrite()
            await _delegate_zones(reader, write, new, previous=current.zones)
            write.put(store.tokens(), name, new)
            write.about(store.tokens(), name, f"token {name!r}")
            write.change("token", "updated", name, current.created_by)
            return write

        await self._store.transact(plan)
        return TokenView.of(updated[0])

    async def delete(self, principal: Principal, name: str) -> None:
        async def plan(reader: Reader) -> ConfigWrite:
            await require_current(reader, principal)
            current = await self._visible(reader, principal, name)
            principal.require_admin("delete tokens")
            write = await self._cascade.plan(reader, current.name)
            for zone in current.zones:
                write.delete(store.token_zones(), zone)
            write.delete(store.tokens(), name)
            write.about(store.tokens(), name, f"token {name!r}")
            write.delete_token_hash(current.token_sha256)
            write.change("token", "deleted", name, current.created_by)
            return write

        await self._store.transact(plan)
        await self._cascade.committed(name)

    @staticmethod
    async def _visible(reader: Reader, principal: Principal, name: str) -> ApiToken:
        token = await reader.get(store.tokens(), name)
        if token is None:
            raise NotFound(f"token {name!r} not found")
        # A token "owns" its own record; the admin owns all of them.
        principal.require_access("token", name, token.name)
        return token


def _validated(**fields: object) -> ApiToken:
    try:
        return ApiToken.model_validate(fields)
    except ValidationError as exc:
        raise invalid_from_validation(exc) from exc


async def _delegate_zones(
    reader: Reader, write: ConfigWrite, token: ApiToken, *, previous: list[str]
) -> None:
    """Index the token's zones (zone -> token); 409 when one overlaps a zone of another token."""
    delegations = await reader.all(store.token_zones())
    for zone in token.zones:
        for other_zone, delegation in delegations.items():
            if delegation.token != token.name and (within(zone, other_zone) or within(other_zone, zone)):
                raise Conflict(
                    f"zone {zone!r} overlaps {other_zone!r}, delegated to token {delegation.token!r}"
                )
    for zone in previous:
        if zone not in token.zones:
            write.delete(store.token_zones(), zone)
    for zone in token.zones:
        write.put(store.token_zones(), zone, ZoneDelegation(zone=zone, token=token.name))
