"""`/api/v1/ports/`: host-port allocations (who exposed what), checks, allocation and release."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from ..audit.records import FieldChange
from ..services.port_allocator import PortAllocation, Protocol
from ..services.ports import PortCheck, PortRequest
from .deps import PrincipalDep, RuntimeDep
from .etag import IF_MATCH, tag

router = APIRouter(prefix="/api/v1/ports", tags=["ports"])

ProtocolQuery = Annotated[Protocol, Query(description="tcp or udp")]
PortPath = Annotated[int, Path(ge=1, le=65535, description="a port number")]


@router.get("/", response_model=list[PortAllocation])
async def list_ports(runtime: RuntimeDep, principal: PrincipalDep) -> list[PortAllocation]:
    """Allocations: port, bind address, protocol, owner, purpose, service."""
    return await runtime.ports.list(principal)


@router.post("/", status_code=201, response_model=PortAllocation)
async def allocate_port(body: PortRequest, runtime: RuntimeDep, principal: PrincipalDep) -> PortAllocation:
    """Allocate a port (a given one, or any free one of PORT_RANGES); 409 when taken or in use on the host."""
    allocation = await runtime.ports.allocate(principal, body)
    await runtime.audit.changes.record(
        runtime.redis,
        kind="port",
        action="created",
        name=allocation.field,
        owner=allocation.owner,
        changes={k: FieldChange(new=v) for k, v in allocation.model_dump(mode="json").items()},
    )
    return allocation


@router.get("/{port}", response_model=PortAllocation)
async def get_port(
    port: PortPath, runtime: RuntimeDep, principal: PrincipalDep, protocol: ProtocolQuery = "tcp"
) -> PortAllocation:
    allocation = await runtime.ports.get(principal, port, protocol)
    tag(allocation)
    return allocation


@router.get("/{port}/check", response_model=PortCheck)
async def check_port(
    port: PortPath, runtime: RuntimeDep, principal: PrincipalDep, protocol: ProtocolQuery = "tcp"
) -> PortCheck:
    """Whether the caller could allocate the port now, and if not, why."""
    return await runtime.ports.check(principal, port, protocol)


@router.delete("/{port}", status_code=204, dependencies=[IF_MATCH])
async def release_port(
    port: PortPath, runtime: RuntimeDep, principal: PrincipalDep, protocol: ProtocolQuery = "tcp"
) -> Response:
    """Release a port allocated here (a service's ports go with the service: 409)."""
    await runtime.ports.release(principal, port, protocol)
    return Response(status_code=204)
