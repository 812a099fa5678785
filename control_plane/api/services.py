"""`/api/v1/services/`: Docker-managed services (desired state; a controller runs the containers), their
logs and stats, and `/api/v1/services/external/`: names for URLs that proxies and routes target as
`service://NAME`."""

from __future__ import annotations

import re
import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response
from fastapi.responses import PlainTextResponse, StreamingResponse

from shared.models import ServiceEndpoint

from ..errors import InvalidInput
from ..services.external_services import ExternalServiceCreate, ExternalServiceSettings
from ..services.service_spec import ServiceCreate, ServiceSettings, ServiceStats, ServiceView
from .deps import PrincipalDep, RuntimeDep
from .etag import IF_MATCH, tag

router = APIRouter(prefix="/api/v1/services", tags=["services"])

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _since(text: str | None) -> float | None:
    """`since` as Unix seconds, or a duration back from now (`90s`, `10m`, `2h`, `1d`)."""
    if text is None or text == "":
        return None
    match = _DURATION.match(text)
    if match:
        return time.time() - int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    try:
        return float(text)
    except ValueError:
        message = "since is Unix seconds or a duration like 10m, 2h"
        raise InvalidInput(
            message, [{"loc": ["query", "since"], "msg": message, "type": "value_error"}]
        ) from None


# ---- external services (declared before /{service_name}, which would otherwise take "external" for a name)


@router.post("/external/", status_code=201, response_model=ServiceEndpoint)
async def create_external_service(
    body: ExternalServiceCreate, runtime: RuntimeDep, principal: PrincipalDep
) -> ServiceEndpoint:
    """Name a URL; proxies and routes then target `service://NAME`."""
    return await runtime.external_services.create(principal, body)


@router.get("/external/", response_model=list[ServiceEndpoint])
async def list_external_services(runtime: RuntimeDep, principal: PrincipalDep) -> list[ServiceEndpoint]:
    return await runtime.external_services.list(principal)


@router.get("/external/{external_name}", response_model=ServiceEndpoint)
async def get_external_service(
    external_name: str, runtime: RuntimeDep, principal: PrincipalDep
) -> ServiceEndpoint:
    endpoint = await runtime.external_services.get(principal, external_name)
    tag(endpoint)
    return endpoint


@router.put("/external/{external_name}", response_model=ServiceEndpoint, dependencies=[IF_MATCH])
async def replace_external_service(
    external_name: str, body: ExternalServiceSettings, runtime: RuntimeDep, principal: PrincipalDep
) -> ServiceEndpoint:
    """Change the URL: every proxy and route targeting `service://NAME` follows at once."""
    return await runtime.external_services.replace(principal, external_name, body)


@router.delete("/external/{external_name}", status_code=204, dependencies=[IF_MATCH])
async def delete_external_service(
    external_name: str, runtime: RuntimeDep, principal: PrincipalDep
) -> Response:
    """409 while a proxy or route still targets it."""
    await runtime.external_services.delete(principal, external_name)
    return Response(status_code=204)


# ---- managed services


@router.post("/", status_code=201, response_model=ServiceView)
async def create_service(body: ServiceCreate, runtime: RuntimeDep, principal: PrincipalDep) -> ServiceView:
    """Create a service (status `pending`; the controller pulls or builds the image and starts it). With
    `auto_proxy` its proxy NAME.BASE_DOMAIN is created with it, targeting the container wherever it runs."""
    return await runtime.services.create(principal, body)


@router.get("/", response_model=list[ServiceView])
async def list_services(runtime: RuntimeDep, principal: PrincipalDep) -> list[ServiceView]:
    return await runtime.services.list(principal)


@router.get("/{service_name}", response_model=ServiceView)
async def get_service(service_name: str, runtime: RuntimeDep, principal: PrincipalDep) -> ServiceView:
    record, view = await runtime.services.get_with_record(principal, service_name)
    tag(record)
    return view


@router.put("/{service_name}", response_model=ServiceView, dependencies=[IF_MATCH])
async def replace_service(
    service_name: str, body: ServiceSettings, runtime: RuntimeDep, principal: PrincipalDep
) -> ServiceView:
    """Replace the spec (a change starts a new generation: the container is recreated). Secret values sent
    as `{"secret": true}` keep what is stored."""
    return await runtime.services.replace(principal, service_name, body)


@router.patch("/{service_name}", response_model=ServiceView, dependencies=[IF_MATCH])
async def patch_service(
    service_name: str,
    changes: Annotated[dict[str, Any], Body(examples=[{"memory_limit": "256m"}])],
    runtime: RuntimeDep,
    principal: PrincipalDep,
) -> ServiceView:
    """Change only the fields given (any field of the spec)."""
    return await runtime.services.patch(principal, service_name, changes)


@router.delete("/{service_name}", status_code=204, dependencies=[IF_MATCH])
async def delete_service(service_name: str, runtime: RuntimeDep, principal: PrincipalDep) -> Response:
    """Delete the service, its ports and its auto proxy; the controller removes the container."""
    await runtime.services.delete(principal, service_name)
    return Response(status_code=204)


@router.post("/{service_name}/start", status_code=202, response_model=ServiceView)
async def start_service(service_name: str, runtime: RuntimeDep, principal: PrincipalDep) -> ServiceView:
    return await runtime.services.start(principal, service_name)


@router.post("/{service_name}/stop", status_code=202, response_model=ServiceView)
async def stop_service(service_name: str, runtime: RuntimeDep, principal: PrincipalDep) -> ServiceView:
    return await runtime.services.stop(principal, service_name)


@router.post("/{service_name}/restart", status_code=202, response_model=ServiceView)
async def restart_service(service_name: str, runtime: RuntimeDep, principal: PrincipalDep) -> ServiceView:
    return await runtime.services.restart(principal, service_name)


@router.get("/{service_name}/logs", response_class=PlainTextResponse)
async def service_logs(
    service_name: str,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    tail: Annotated[int, Query(ge=0, le=10_000, description="lines from the end")] = 100,
    since: Annotated[str | None, Query(description="Unix seconds, or a duration back: 10m, 2h")] = None,
    follow: Annotated[bool, Query(description="keep the response open and stream new lines")] = False,
    timestamps: bool = False,
) -> Response:
    """stdout and stderr of the service's container, as text."""
    options = {"tail": tail, "since": _since(since), "timestamps": timestamps}
    if follow:
        stream = await runtime.service_logs.follow_logs(principal, service_name, **options)
        return StreamingResponse(
            stream, media_type="text/plain; charset=utf-8", headers={"X-Accel-Buffering": "no"}
        )
    return PlainTextResponse(await runtime.service_logs.logs(principal, service_name, **options))


@router.get("/{service_name}/stats", response_model=ServiceStats)
async def service_stats(service_name: str, runtime: RuntimeDep, principal: PrincipalDep) -> ServiceStats:
    """CPU %, memory used/limit, network and block IO, processes, restarts (one sample, about a second)."""
    return await runtime.service_logs.stats(principal, service_name)
