"""`service://NAME[/path]` targets resolved against the service endpoints of the same snapshot.

A proxy or route may name a service instead of a URL; the control plane keeps each service's current URL in
{mhp}:service-endpoints (an external service's URL, or where the controller found a managed container), and
every change there is a config version, so a rebuilt table re-points every proxy and route at once.

The owner rule of the control plane holds here too: a target resolves only to a service of the same owner,
or for an admin-owned proxy or route, to any service. A managed service's URL is `trusted`: it is the
address the controller found for a container it runs on a host port it allocated (never a system port, and
never another owner's, since allocations are exclusive), so the connect-time address check that guards
URLs written by ordinary tokens does not apply to it; an external service's URL is the owner's own text and
is checked like any URL the owner wrote. Pure functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shared.models import ADMIN_OWNER, ServiceEndpoint, service_reference


class UnresolvedService(ValueError):
    """A service:// target that names no service this owner may use."""


@dataclass(frozen=True, slots=True)
class ResolvedTarget:
    url: str
    trusted: bool  # a managed service's address, found by the controller, not written by a tenant


def resolve_target(url: str, owner: str, services: Mapping[str, ServiceEndpoint]) -> ResolvedTarget:
    reference = service_reference(url)
    if reference is None:
        return ResolvedTarget(url, trusted=False)
    name, path = reference
    endpoint = services.get(name)
    if endpoint is None:
        raise UnresolvedService(f"service {name!r} does not exist (or has no address yet)")
    if owner != ADMIN_OWNER and endpoint.owner != owner:
        raise UnresolvedService(f"service {name!r} belongs to another owner")
    return ResolvedTarget(endpoint.url.rstrip("/") + path, trusted=endpoint.kind == "managed")
