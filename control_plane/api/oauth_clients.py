"""`/api/v1/oauth/clients/`: OAuth clients the admin registers ahead of time (admin only)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from .. import request_context
from ..services.oauth_clients import OAuthClientCreate, OAuthClientCreated, OAuthClientView
from .deps import PrincipalDep, RuntimeDep
from .etag import IF_MATCH, tag

router = APIRouter(prefix="/api/v1/oauth/clients", tags=["oauth clients"])


@router.post("/", status_code=201, response_model=OAuthClientCreated)
async def create_client(
    body: OAuthClientCreate, runtime: RuntimeDep, principal: PrincipalDep
) -> OAuthClientCreated:
    """Register a client that never expires. A confidential client's `client_secret` is shown once."""
    created = await runtime.oauth_clients.create(principal, body)
    await runtime.audit.changes.record(
        runtime.redis, kind="oauth-client", action="created", name=created.client_id, owner=principal.owner
    )
    return created


@router.get("/", response_model=list[OAuthClientView])
async def list_clients(runtime: RuntimeDep, principal: PrincipalDep) -> list[OAuthClientView]:
    return await runtime.oauth_clients.list(principal)


@router.get("/{client_id}", response_model=OAuthClientView)
async def get_client(client_id: str, runtime: RuntimeDep, principal: PrincipalDep) -> OAuthClientView:
    client = await runtime.oauth_clients.get(principal, client_id)
    tag(client)
    return OAuthClientView.of(client)


@router.delete("/{client_id}", status_code=204, dependencies=[IF_MATCH])
async def delete_client(client_id: str, runtime: RuntimeDep, principal: PrincipalDep) -> Response:
    """New authorizations and refreshes for the client are refused; issued access tokens run out."""
    context = request_context.current()
    await runtime.oauth_clients.delete(principal, client_id, context.if_match if context else None)
    await runtime.audit.changes.record(
        runtime.redis, kind="oauth-client", action="deleted", name=client_id, owner=principal.owner
    )
    return Response(status_code=204)
