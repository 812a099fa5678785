"""`/api/v1/proxy/targets/`: proxy targets (public hostname -> backend)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Response

from shared.models import ProxyTarget

from ..services.proxies import ProxyTargetCreate, ProxyTargetSettings
from .deps import PrincipalDep, RuntimeDep
from .etag import IF_MATCH, tag

router = APIRouter(prefix="/api/v1/proxy/targets", tags=["proxies"])


@router.post("/", status_code=201, response_model=ProxyTarget)
async def create_proxy(body: ProxyTargetCreate, runtime: RuntimeDep, principal: PrincipalDep) -> ProxyTarget:
    return await runtime.proxies.create(principal, body)


@router.get("/", response_model=list[ProxyTarget])
async def list_proxies(runtime: RuntimeDep, principal: PrincipalDep) -> list[ProxyTarget]:
    return await runtime.proxies.list(principal)


@router.get("/{hostname}", response_model=ProxyTarget)
async def get_proxy(hostname: str, runtime: RuntimeDep, principal: PrincipalDep) -> ProxyTarget:
    proxy = await runtime.proxies.get(principal, hostname)
    tag(proxy)
    return proxy


@router.put("/{hostname}", response_model=ProxyTarget, dependencies=[IF_MATCH])
async def replace_proxy(
    hostname: str, body: ProxyTargetSettings, runtime: RuntimeDep, principal: PrincipalDep
) -> ProxyTarget:
    """Replace every setting (fields left out return to their defaults)."""
    return await runtime.proxies.replace(principal, hostname, body)


@router.patch("/{hostname}", response_model=ProxyTarget, dependencies=[IF_MATCH])
async def patch_proxy(
    hostname: str,
    changes: Annotated[dict[str, Any], Body(examples=[{"enabled": False}])],
    runtime: RuntimeDep,
    principal: PrincipalDep,
) -> ProxyTarget:
    """Change only the fields given (any field of ProxyTargetSettings)."""
    return await runtime.proxies.patch(principal, hostname, changes)


@router.delete("/{hostname}", status_code=204, dependencies=[IF_MATCH])
async def delete_proxy(hostname: str, runtime: RuntimeDep, principal: PrincipalDep) -> Response:
    await runtime.proxies.delete(principal, hostname)
    return Response(status_code=204)
