"""`service://NAME` targets in the compiled route table: resolved from the snapshot's service endpoints,
only to a service of the same owner (the admin's may name any), and a proxy whose service is missing is
kept but not served (503) while a route to a missing service is dropped."""

from __future__ import annotations

from data_plane.routing.route_table import build_table, lookup_proxy, select_upstream
from data_plane.routing.service_targets import UnresolvedService, resolve_target
from data_plane.sync.snapshot import compile_snapshot
from shared.models import ProxyTarget, Route, ServiceEndpoint

ENDPOINTS = {
    "web": ServiceEndpoint(name="web", url="http://127.0.0.1:21001", kind="managed", owner="alice"),
    "api": ServiceEndpoint(name="api", url="https://api.example.net/v1/", kind="external", owner="alice"),
    "bobs": ServiceEndpoint(name="bobs", url="http://127.0.0.1:21002", kind="managed", owner="bob"),
}


def test_resolution_follows_the_owner_rule_and_keeps_paths() -> None:
    assert resolve_target("http://x.example/a", "alice", ENDPOINTS).url == "http://x.example/a"
    managed = resolve_target("service://web", "alice", ENDPOINTS)
    assert managed.url == "http://127.0.0.1:21001" and managed.trusted
    external = resolve_target("service://api/extra", "alice", ENDPOINTS)
    assert external.url == "https://api.example.net/v1/extra" and not external.trusted
    assert resolve_target("service://bobs", "admin", ENDPOINTS).url == "http://127.0.0.1:21002"
    for url, owner in (("service://bobs", "alice"), ("service://gone", "alice"), ("service://gone", "admin")):
        try:
            resolve_target(url, owner, ENDPOINTS)
        except UnresolvedService:
            continue
        raise AssertionError(f"{url} resolved for {owner}")


def test_the_table_resolves_proxies_and_routes() -> None:
    proxies = [
        ProxyTarget(hostname="web.example.net", target_url="service://web", owner="alice"),
        ProxyTarget(hostname="steal.example.net", target_url="service://bobs", owner="alice"),
        ProxyTarget(hostname="gone.example.net", target_url="service://gone", owner="admin"),
    ]
    routes = [
        Route(
            id="to-api",
            path_pattern="/api",
            target_url="service://api/x",
            scope="proxies",
            proxy_hostnames=["web.example.net"],
            owner="alice",
        ),
        Route(
            id="to-bob",
            path_pattern="/bob",
            target_url="service://bobs",
            scope="proxies",
            proxy_hostnames=["web.example.net"],
            owner="alice",
        ),
    ]
    table = build_table(1, proxies, routes, ENDPOINTS)
    web = lookup_proxy(table, "web.example.net")
    assert web is not None and web.enabled and web.upstream.port == 21001
    upstream, route_id = select_upstream(web, "GET", "/api/tools")
    assert (upstream.url, route_id) == ("https://api.example.net/v1/x", "to-api")
    assert select_upstream(web, "GET", "/bob")[1] is None  # a route to another owner's service is dropped
    for host in ("steal.example.net", "gone.example.net"):
        entry = lookup_proxy(table, host)
        assert entry is not None and not entry.enabled, host  # answered 503, never connected


def test_a_changed_endpoint_repoints_the_next_table() -> None:
    proxy = ProxyTarget(hostname="web.example.net", target_url="service://web", owner="alice")
    raw = {"web.example.net": proxy.model_dump_json()}
    before = compile_snapshot(1, raw, {}, {"web": ENDPOINTS["web"].model_dump_json()})
    moved = ENDPOINTS["web"].model_copy(update={"url": "http://127.0.0.1:21005"})
    after = compile_snapshot(2, raw, {}, {"web": moved.model_dump_json(), "junk": "{not json"})
    entries = [lookup_proxy(table, "web.example.net") for table in (before, after)]
    assert [e.upstream.port for e in entries if e is not None] == [21001, 21005]
