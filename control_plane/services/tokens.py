"""API tokens: create (secret shown once, only its SHA-256 stored), list, show, update cert_email, delete.

Policy: only the admin token creates and deletes tokens. An ordinary token sees and updates only its own
record. Deleting a token deletes, in the same transaction, everything it owns (see cascade.py).
The name `admin` is reserved: it is the owner value of objects made with ADMIN_TOKEN.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.models import ADMIN_OWNER, TOKEN_NAME_PATTERN, ApiToken
from shared.secrets import new_api_token, token_sha256

from .. import store
from ..cascade import CascadeRegistry
from ..errors import Conflict, NotFound
from ..principal import Principal, require_current
from ..store import ConfigWrite, Reader, Store

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
    model_config = ConfigDict(extra="forbid")
    cert_email: str

    @field_validator("cert_email")
    @classmethod
    def _email(cls, value: str) -> str:
        return _check_email(value)


class TokenView(BaseModel):
    """A token as listed: never the secret, never its hash."""

    name: str
    cert_email: str
    created_at: float
    created_by: str

    @classmethod
    def of(cls, token: ApiToken) -> TokenView:
        return cls(
            name=token.name,
            cert_email=token.cert_email,
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
        token = ApiToken(
            name=body.name, token_sha256=digest, cert_email=body.cert_email, created_by=principal.owner
        )

        async def plan(reader: Reader) -> ConfigWrite:
            await require_current(reader, principal)
            if await reader.exists(store.tokens(), body.name):
                raise Conflict(f"token {body.name!r} already exists")
            write = ConfigWrite()
            write.put(store.tokens(), token.name, token)
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
        return TokenView.of(await self._visible(self._store.reader, principal, name))

    async def update(self, principal: Principal, name: str, body: TokenUpdate) -> TokenView:
        updated: list[ApiToken] = []

        async def plan(reader: Reader) -> ConfigWrite:
            await require_current(reader, principal)
            current = await self._visible(reader, principal, name)
            new = current.model_copy(update={"cert_email": body.cert_email})
            updated[:] = [new]
            write = ConfigWrite()
            write.put(store.tokens(), name, new)
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
            write.delete(store.tokens(), name)
            write.delete_token_hash(current.token_sha256)
            write.change("token", "deleted", name, current.created_by)
            return write

        await self._store.transact(plan)

    @staticmethod
    async def _visible(reader: Reader, principal: Principal, name: str) -> ApiToken:
        token = await reader.get(store.tokens(), name)
        if token is None:
            raise NotFound(f"token {name!r} not found")
        # A token "owns" its own record; the admin owns all of them.
        principal.require_access("token", name, token.name)
        return token
