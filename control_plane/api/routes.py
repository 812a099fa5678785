"""`/api/v1/routes/`: path/method routing rules, listed in evaluation order (priority desc, id asc)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from shared.models import Route

from ..services.routes import RouteCreate, RouteSettings
from .deps import PrincipalDep, RuntimeDep
from .etag import IF_MATCH, tag

router = APIRouter(prefix="/api/v1/routes", tags=["routes"])


@router.post("/", status_code=201, response_model=Route)
async def create_route(body: RouteCreate, runtime: RuntimeDep, principal: PrincipalDep) -> Route:
    return await runtime.routes.create(principal, body)


@router.get("/", response_model=list[Route])
async def list_routes(runtime: RuntimeDep, principal: PrincipalDep) -> list[Route]:
    return await runtime.routes.list(principal)


@router.get("/{route_id}", response_model=Route)
async def get_route(route_id: str, runtime: RuntimeDep, principal: PrincipalDep) -> Route:
    route = await runtime.routes.get(principal, route_id)
    tag(route)
    return route


@router.put("/{route_id}", response_model=Route, dependencies=[IF_MATCH])
async def replace_route(
    route_id: str, body: RouteSettings, runtime: RuntimeDep, principal: PrincipalDep
) -> Route:
    return await runtime.routes.replace(principal, route_id, body)


@router.delete("/{route_id}", status_code=204, dependencies=[IF_MATCH])
async def delete_route(route_id: str, runtime: RuntimeDep, principal: PrincipalDep) -> Response:
    await runtime.routes.delete(principal, route_id)
    return Response(status_code=204)
