"""`service://NAME` targets of proxies and routes: who may name which service, and who names one.

A proxy or route may target a service (a Docker-managed one, or an external URL registered under a name) of
its own owner; the admin may target any. The name must exist when the target is written (422), and a service
that proxies or routes still target cannot be deleted (409), except its own auto proxy, which goes with it.
The data plane applies the same owner rule again when it resolves the name (data_plane/routing).
"""

from __future__ import annotations

from shared.models import service_reference

from .. import store
from ..docker.records import endpoints, service_records
from ..errors import InvalidInput
from ..principal import Principal
from ..store import Reader


async def service_owner(reader: Reader, name: str) -> str | None:
    """The owner of the managed or external service `name`, or None when there is none."""
    record = await reader.get(service_records(), name)
    if record is not None:
        return record.owner
    endpoint = await reader.get(endpoints(), name)
    return endpoint.owner if endpoint is not None else None


async def check_service_target(
    reader: Reader, principal: Principal, url: str, field: str = "target_url"
) -> None:
    reference = service_reference(url)
    if reference is None:
        return
    name = reference[0]
    owner = await service_owner(reader, name)
    if owner is None:
        message = f"no service named {name!r} (create it under /api/v1/services/ first)"
        raise InvalidInput(
            f"{field}: {message}", [{"loc": ["body", field], "msg": message, "type": "value_error"}]
        )
    principal.require_access("service", name, owner)


async def targets_of(reader: Reader, name: str, *, except_proxy: str | None = None) -> list[str]:
    """What still targets service `name`: `proxy HOST` and `route ID` entries."""
    users: list[str] = []
    for hostname, proxy in sorted((await reader.all(store.proxies())).items()):
        reference = service_reference(proxy.target_url)
        if reference is not None and reference[0] == name and hostname != except_proxy:
            users.append(f"proxy {hostname}")
    for route_id, route in sorted((await reader.all(store.routes())).items()):
        reference = service_reference(route.target_url or "")
        if reference is not None and reference[0] == name:
            users.append(f"route {route_id}")
    return users


def in_use_refusal(name: str, users: list[str]) -> str:
    return f"service {name!r} is still the target of {', '.join(users)}; point them elsewhere first"
