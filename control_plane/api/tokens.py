"""`/api/v1/tokens/`: API tokens. Only the admin creates or deletes; a token may read and update itself."""

from __future__ import annotations

from fastapi import APIRouter, Response

from ..services.tokens import TokenCreate, TokenCreated, TokenUpdate, TokenView
from .deps import PrincipalDep, RuntimeDep
from .etag import IF_MATCH, tag

router = APIRouter(prefix="/api/v1/tokens", tags=["tokens"])


@router.post("/", status_code=201, response_model=TokenCreated)
async def create_token(body: TokenCreate, runtime: RuntimeDep, principal: PrincipalDep) -> TokenCreated:
    """Create a token. The returned `token` is shown once; only its SHA-256 is stored."""
    return await runtime.tokens.create(principal, body)


@router.get("/", response_model=list[TokenView])
async def list_tokens(runtime: RuntimeDep, principal: PrincipalDep) -> list[TokenView]:
    return await runtime.tokens.list(principal)


@router.get("/{name}", response_model=TokenView)
async def get_token(name: str, runtime: RuntimeDep, principal: PrincipalDep) -> TokenView:
    token = await runtime.tokens.record(principal, name)
    tag(token)
    return TokenView.of(token)


@router.put("/{name}", response_model=TokenView, dependencies=[IF_MATCH])
async def update_token(
    name: str, body: TokenUpdate, runtime: RuntimeDep, principal: PrincipalDep
) -> TokenView:
    return await runtime.tokens.update(principal, name, body)


@router.delete("/{name}", status_code=204, dependencies=[IF_MATCH])
async def delete_token(name: str, runtime: RuntimeDep, principal: PrincipalDep) -> Response:
    """Delete a token and, in the same transaction, every proxy and route it owns."""
    await runtime.tokens.delete(principal, name)
    return Response(status_code=204)
