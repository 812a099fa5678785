"""`/api/v1/proxy/targets/{hostname}/auth`, `/api/v1/proxy/targets/{hostname}/resource` and
`/api/v1/resources/`: per-proxy OAuth protection, its PRM fields, and the resource registry."""

from __future__ import annotations

from fastapi import APIRouter, Response

from shared.models import ProxyResource

from ..services.auth_config import ProxyAuthSettings, ProxyAuthView, ProxyResourceSettings, ResourceEntry
from .deps import PrincipalDep, RuntimeDep
from .etag import IF_MATCH, tag

router = APIRouter(tags=["auth"])

TARGET = "/api/v1/proxy/targets/{hostname}"


@router.put(TARGET + "/auth", response_model=ProxyAuthView, dependencies=[IF_MATCH])
async def put_auth(
    hostname: str, body: ProxyAuthSettings, runtime: RuntimeDep, principal: PrincipalDep
) -> ProxyAuthView:
    """Protect a proxy with OAuth (replaces the whole configuration; a stored GitHub app secret is kept
    when github_client_id is unchanged and no new secret is sent)."""
    return ProxyAuthView.of(await runtime.auth_config.put_auth(principal, hostname, body))


@router.get(TARGET + "/auth", response_model=ProxyAuthView)
async def get_auth(hostname: str, runtime: RuntimeDep, principal: PrincipalDep) -> ProxyAuthView:
    config = await runtime.auth_config.get_auth(principal, hostname)
    tag(config)
    return ProxyAuthView.of(config)


@router.delete(TARGET + "/auth", status_code=204, dependencies=[IF_MATCH])
async def delete_auth(hostname: str, runtime: RuntimeDep, principal: PrincipalDep) -> Response:
    """Remove protection: the proxy serves without tokens again."""
    await runtime.auth_config.delete_auth(principal, hostname)
    return Response(status_code=204)


@router.put(TARGET + "/resource", response_model=ProxyResource, dependencies=[IF_MATCH])
async def put_resource(
    hostname: str, body: ProxyResourceSettings, runtime: RuntimeDep, principal: PrincipalDep
) -> ProxyResource:
    """Protected Resource Metadata fields (RFC 9728): resource path, scopes, name, documentation URL."""
    return await runtime.auth_config.put_resource(principal, hostname, body)


@router.get(TARGET + "/resource", response_model=ProxyResource)
async def get_resource(hostname: str, runtime: RuntimeDep, principal: PrincipalDep) -> ProxyResource:
    resource, stored = await runtime.auth_config.get_resource_stored(principal, hostname)
    if stored:
        tag(resource)  # the defaults of a proxy with no stored settings have no ETag (nothing to match)
    return resource


@router.get("/api/v1/resources/", response_model=list[ResourceEntry])
async def list_resources(runtime: RuntimeDep, principal: PrincipalDep) -> list[ResourceEntry]:
    """Every protected resource (proxies with protection enabled) the caller may see."""
    return await runtime.auth_config.registry(principal)
