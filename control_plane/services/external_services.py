"""External services: a name for a URL (`/api/v1/services/external/`), so that proxies and routes target
`service://NAME` instead of repeating the URL; changing the URL re-points every one of them at once (one
config write, which every data plane applies with the next version).

They are ServiceEndpoint rows of kind `external` in the same hash as managed services' endpoints, and share
their names with managed services (409 across both). Ownership as everywhere: an ordinary token sees and
changes only its own, and its URL is checked against the SSRF policy like any target it writes (422). A
service that proxies or routes still target is not deleted (409). No Docker needed.
"""

from __future__ import annotations

import time
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.models import SERVICE_NAME_PATTERN, ServiceEndpoint
from shared.target_policy import TargetPolicy

from ..docker.records import endpoints
from ..docker.spec import RESERVED_SERVICE_NAMES
from ..errors import Conflict, InvalidInput, NotFound, invalid_from_validation
from ..principal import Principal, require_current
from ..store import ConfigWrite, Reader, Store
from .proxies import check_target
from .service_refs import in_use_refusal, service_owner, targets_of


class ExternalServiceSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(description="http(s) base URL the name stands for")
    description: Annotated[str, Field(max_length=500)] = ""


class ExternalServiceCreate(ExternalServiceSettings):
    name: Annotated[str, Field(pattern=SERVICE_NAME_PATTERN, description="lower-case DNS label, unique")]


def _build(name: str, owner: str, body: ExternalServiceSettings, created_at: float) -> ServiceEndpoint:
    try:
        return ServiceEndpoint(
            name=name,
            url=body.url,
            kind="external",
            owner=owner,
            description=body.description,
            created_at=created_at,
            updated_at=time.time(),
        )
    except ValidationError as exc:
        raise invalid_from_validation(exc) from exc


async def _read_external(reader: Reader, principal: Principal, name: str) -> ServiceEndpoint:
    found = await reader.get(endpoints(), name)
    if found is None or found.kind != "external":
        raise NotFound(f"external service {name!r} not found")
    principal.require_access("service", name, found.owner)
    return found


class ExternalServices:
    def __init__(self, store_: Store, *, targets: TargetPolicy | None = None) -> None:
        self._store = store_
        self._targets = targets

    async def create(self, principal: Principal, body: ExternalServiceCreate) -> ServiceEndpoint:
        if body.name in RESERVED_SERVICE_NAMES:
            message = f"{body.name!r} is reserved"
            raise InvalidInput(
                f"name: {message}", [{"loc": ["body", "name"], "msg": message, "type": "value_error"}]
            )
        endpoint = _build(body.name, principal.owner, body, time.time())
        check_target(self._targets, endpoint.owner, endpoint.url, field="url")

        async def plan(reader: Reader) -> ConfigWrite:
            await require_current(reader, principal)
            if await service_owner(reader, body.name) is not None:
                raise Conflict(f"service {body.name!r} already exists")
            write = ConfigWrite()
            write.put(endpoints(), endpoint.name, endpoint)
            write.about(endpoints(), endpoint.name, f"external service {endpoint.name!r}")
            write.change("service", "created", endpoint.name, endpoint.owner)
            return write

        await self._store.transact(plan)
        return endpoint

    async def list(self, principal: Principal) -> list[ServiceEndpoint]:
        rows = await self._store.reader.all(endpoints())
        return [e for _, e in sorted(rows.items()) if e.kind == "external" and principal.can_access(e.owner)]

    async def get(self, principal: Principal, name: str) -> ServiceEndpoint:
        return await _read_external(self._store.reader, principal, name)

    async def replace(
        self, principal: Principal, name: str, body: ExternalServiceSettings
    ) -> ServiceEndpoint:
        result: list[ServiceEndpoint] = []

        async def plan(reader: Reader) -> ConfigWrite:
            await require_current(reader, principal)
            current = await _read_external(reader, principal, name)
            new = _build(name, current.owner, body, current.created_at)
            check_target(self._targets, new.owner, new.url, field="url")
            result[:] = [new]
            write = ConfigWrite()
            write.put(endpoints(), name, new)
            write.about(endpoints(), name, f"external service {name!r}")
            write.change("service", "updated", name, current.owner)
            return write

        await self._store.transact(plan)
        return result[0]

    async def delete(self, principal: Principal, name: str) -> None:
        async def plan(reader: Reader) -> ConfigWrite:
            await require_current(reader, principal)
            current = await _read_external(reader, principal, name)
            users = await targets_of(reader, name)
            if users:
                raise Conflict(in_use_refusal(name, users))
            write = ConfigWrite()
            write.delete(endpoints(), name)
            write.about(endpoints(), name, f"external service {name!r}")
            write.change("service", "deleted", name, current.owner)
            return write

        await self._store.transact(plan)


async def delete_owned_external_services(reader: Reader, owner: str) -> ConfigWrite:
    """Cascade cleanup: the external services `owner` registered."""
    write = ConfigWrite()
    for name, endpoint in (await reader.all(endpoints())).items():
        if endpoint.kind == "external" and endpoint.owner == owner:
            write.delete(endpoints(), name)
            write.change("service", "deleted", name, owner)
    return write
