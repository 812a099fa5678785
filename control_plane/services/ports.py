"""Host ports through the API (`/api/v1/ports/`): list allocations, check a port, allocate, release.

The admin sees every allocation (who exposed what, on which address, for what); an ordinary token sees and
releases only its own (403), allocates only from PORT_RANGES, and binds on 0.0.0.0 only with the
public-ports grant (403). A service's ports are released by updating or deleting the service, not here
(409). Allocation itself, and what is never handed out, is port_allocator.py.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from shared import keys

from ..cascade import plan_owned_deletions
from ..errors import Conflict, Forbidden, NotFound
from ..principal import Principal, require_current
from ..store import ConfigWrite, Reader, Store
from .port_allocator import Bind, PortAllocation, PortAllocator, Protocol, os_can_bind, port_allocations
from .service_policy import token_grants


class PortRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    port: int | None = Field(
        default=None, ge=1, le=65535, description="a specific port; omitted: any free one"
    )
    bind: Bind = Field(default="127.0.0.1", description="0.0.0.0 is admin-only unless granted")
    protocol: Protocol = "tcp"
    purpose: Annotated[str, Field(max_length=200)] = Field(
        default="", description="what it is for (shown in lists)"
    )


class PortCheck(BaseModel):
    port: int
    protocol: Protocol
    available: bool
    reason: str = Field(description="why it is not available; empty when it is")


class PortService:
    def __init__(self, store_: Store, allocator: PortAllocator) -> None:
        self._store = store_
        self._allocator = allocator

    async def list(self, principal: Principal) -> list[PortAllocation]:
        rows = await self._store.reader.all(port_allocations())
        visible = [a for a in rows.values() if principal.can_access(a.owner)]
        return sorted(visible, key=lambda a: (a.port, a.protocol))

    async def get(self, principal: Principal, port: int, protocol: Protocol) -> PortAllocation:
        return await _read(self._store.reader, principal, port, protocol)

    async def check(self, principal: Principal, port: int, protocol: Protocol) -> PortCheck:
        """Could the caller allocate this port now? Who holds it is told only to its owner and the admin."""
        refusal = self._allocator.policy.refusal(port, is_admin=principal.is_admin)
        if refusal is None:
            held = await self._store.reader.get(port_allocations(), keys.port_field(protocol, port))
            if held is not None:
                refusal = f"port {port}/{protocol} is allocated" + (
                    f" to {held.owner} ({held.purpose or 'no purpose given'})"
                    if principal.can_access(held.owner)
                    else ""
                )
            elif not os_can_bind(port, protocol):
                refusal = f"port {port}/{protocol} is in use on this host by another program"
        return PortCheck(port=port, protocol=protocol, available=refusal is None, reason=refusal or "")

    async def allocate(self, principal: Principal, body: PortRequest) -> PortAllocation:
        reader = self._store.reader
        await require_current(reader, principal)
        if body.bind == "0.0.0.0" and "public-ports" not in await token_grants(reader, principal):
            raise Forbidden(
                "binding on 0.0.0.0 (reachable without the proxy) is admin-only unless the admin grants it "
                "to this token (mhp tokens update NAME --grant public-ports)"
            )
        return await self._allocator.allocate(
            owner=principal.owner,
            bind=body.bind,
            protocol=body.protocol,
            purpose=body.purpose,
            port=body.port,
        )

    async def release(self, principal: Principal, port: int, protocol: Protocol) -> None:
        async def plan(reader: Reader) -> ConfigWrite:
            await require_current(reader, principal)
            allocation = await _read(reader, principal, port, protocol)
            if allocation.service is not None:
                raise Conflict(
                    f"port {port}/{protocol} belongs to service {allocation.service!r}: update or delete the "
                    "service to release it"
                )
            write = ConfigWrite()
            write.about(port_allocations(), allocation.field, f"port {port}/{protocol}")
            write.delete(port_allocations(), allocation.field)
            return write

        await self._store.transact(plan)


async def _read(reader: Reader, principal: Principal, port: int, protocol: Protocol) -> PortAllocation:
    found = await reader.get(port_allocations(), keys.port_field(protocol, port))
    if found is None:
        raise NotFound(f"port {port}/{protocol} is not allocated")
    principal.require_access("port", f"{port}/{protocol}", found.owner)
    return found


async def delete_owned_ports(reader: Reader, owner: str) -> ConfigWrite:
    """Cascade cleanup: every port `owner` allocated (its services' ports included)."""
    return await plan_owned_deletions(reader, owner, port_allocations(), None)
