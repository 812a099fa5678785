"""The incremental route-table builder agrees with a full build: after any sequence of changes (proxies and
routes created, changed and deleted, global and scoped routes, routes borrowing another proxy's target,
route modes, service endpoints that `service://` targets resolve to, owners), `apply` gives the table
`build_table` gives for the final models. Sans-IO, property-based."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from data_plane.routing.route_table import RouteTable, TableBuilder, build_table
from shared.models import ProxyTarget, Route, ServiceEndpoint

HOSTS = ["a.example.com", "b.example.com", "c.example.com", "*.wild.example.com"]
ROUTE_IDS = ["r1", "r2", "r3", "r4", "r5"]
SERVICES = ["svc1", "svc2"]
OWNERS = ["admin", "tenant"]


def target(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        return f"service://{draw(st.sampled_from(SERVICES))}"
    return f"http://127.0.0.1:{draw(st.integers(1000, 1003))}"


@st.composite
def endpoints(draw: st.DrawFn, name: str) -> ServiceEndpoint:
    return ServiceEndpoint(
        name=name,
        url=f"http://127.0.0.1:{draw(st.integers(3000, 3002))}",
        kind=draw(st.sampled_from(["managed", "external"])),
        owner=draw(st.sampled_from(OWNERS)),
    )


@st.composite
def proxies(draw: st.DrawFn, hostname: str) -> ProxyTarget:
    mode = draw(st.sampled_from(["all", "selective", "none"]))
    return ProxyTarget(
        hostname=hostname,
        target_url=target(draw),
        route_mode=mode,
        enabled_route_ids=draw(st.lists(st.sampled_from(ROUTE_IDS), max_size=2)),
        disabled_route_ids=draw(st.lists(st.sampled_from(ROUTE_IDS), max_size=2)),
        owner=draw(st.sampled_from(OWNERS)),
    )


@st.composite
def routes(draw: st.DrawFn, route_id: str) -> Route:
    scope = draw(st.sampled_from(["global", "proxies"]))
    concrete = [h for h in HOSTS if not h.startswith("*.")]
    fields: dict[str, Any] = {
        "id": route_id,
        "path_pattern": draw(st.sampled_from(["/", "/api", "/x/y"])),
        "priority": draw(st.integers(0, 3)),
        "methods": draw(st.lists(st.sampled_from(["GET", "POST"]), max_size=1)),
        "scope": scope,
        "proxy_hostnames": draw(st.lists(st.sampled_from(HOSTS), min_size=1, max_size=2))
        if scope == "proxies"
        else [],
        "enabled": draw(st.booleans()),
        "owner": draw(st.sampled_from(OWNERS)),
    }
    if draw(st.booleans()):
        fields["target_proxy"] = draw(st.sampled_from(concrete))
    else:
        fields["target_url"] = target(draw)
    return Route(**fields)


Change = tuple[dict[str, ProxyTarget | None], dict[str, Route | None], dict[str, ServiceEndpoint | None]]


@st.composite
def change(draw: st.DrawFn) -> Change:
    changed_proxies: dict[str, ProxyTarget | None] = {}
    for hostname in draw(st.lists(st.sampled_from(HOSTS), max_size=2, unique=True)):
        changed_proxies[hostname] = None if draw(st.booleans()) else draw(proxies(hostname))
    changed_routes: dict[str, Route | None] = {}
    for route_id in draw(st.lists(st.sampled_from(ROUTE_IDS), max_size=2, unique=True)):
        changed_routes[route_id] = None if draw(st.booleans()) else draw(routes(route_id))
    changed_services: dict[str, ServiceEndpoint | None] = {}
    for name in draw(st.lists(st.sampled_from(SERVICES), max_size=1, unique=True)):
        changed_services[name] = None if draw(st.booleans()) else draw(endpoints(name))
    return changed_proxies, changed_routes, changed_services


def shape(table: RouteTable) -> dict[str, Any]:
    """What a table decides, comparable (compiled regexes compare by identity, so routes are described)."""

    def entry(e: Any) -> tuple[Any, ...]:
        return (
            e.hostname,
            e.upstream,  # url, and `restricted`: who wrote it and whether a managed service vouches
            e.enabled,
            tuple((r.id, r.priority, r.methods, r.prefix, r.upstream) for r in e.routes),
        )

    return {
        "exact": {k: entry(v) for k, v in table.exact.items()},
        "wildcards": {k: entry(v) for k, v in table.wildcards.items()},
        "version": table.version,
    }


@settings(max_examples=300, deadline=None)
@given(st.lists(change(), min_size=1, max_size=8))
def test_incremental_changes_give_the_table_a_full_build_gives(changes: list[Change]) -> None:
    builder = TableBuilder()
    current_proxies: dict[str, ProxyTarget] = {}
    current_routes: dict[str, Route] = {}
    current_services: dict[str, ServiceEndpoint] = {}
    for version, (changed_proxies, changed_routes, changed_services) in enumerate(changes, start=1):
        incremental = builder.apply(version, changed_proxies, changed_routes, changed_services)
        for hostname, proxy in changed_proxies.items():
            if proxy is None:
                current_proxies.pop(hostname, None)
            else:
                current_proxies[hostname] = proxy
        for route_id, route in changed_routes.items():
            if route is None:
                current_routes.pop(route_id, None)
            else:
                current_routes[route_id] = route
        for name, endpoint in changed_services.items():
            if endpoint is None:
                current_services.pop(name, None)
            else:
                current_services[name] = endpoint
        full = build_table(version, current_proxies.values(), current_routes.values(), current_services)
        assert shape(incremental) == shape(full)


def test_a_change_leaves_the_previous_table_untouched() -> None:
    builder = TableBuilder()
    proxy = ProxyTarget(hostname="a.example.com", target_url="http://127.0.0.1:1000")
    first = builder.apply(1, {"a.example.com": proxy}, {})
    second = builder.apply(2, {"b.example.com": proxy.model_copy(update={"hostname": "b.example.com"})}, {})
    assert set(first.exact) == {"a.example.com"}
    assert set(second.exact) == {"a.example.com", "b.example.com"}
    assert second.exact["a.example.com"] is first.exact["a.example.com"]  # unchanged entries are shared
