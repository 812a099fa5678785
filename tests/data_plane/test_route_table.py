"""The compiled route table and its pure lookup: host matching, wildcard precedence, route order and modes."""

from __future__ import annotations

from data_plane.routing.route_table import (
    build_table,
    lookup_proxy,
    normalise_host,
    select_upstream,
)
from data_plane.sync.snapshot import compile_snapshot
from shared.models import ProxyTarget, Route


def proxy(hostname: str, target: str = "http://backend:8080", **kw: object) -> ProxyTarget:
    return ProxyTarget(hostname=hostname, target_url=target, **kw)  # type: ignore[arg-type]


def route(rid: str, pattern: str, target: str = "http://r:1", **kw: object) -> Route:
    return Route(id=rid, path_pattern=pattern, target_url=target, **kw)  # type: ignore[arg-type]


def test_normalise_host() -> None:
    assert normalise_host(b"Example.COM.:8443") == "example.com"
    assert normalise_host(b"[::1]:80") == "::1"
    assert normalise_host(b"a.b") == "a.b"


def test_exact_beats_wildcard_and_longest_wildcard_wins() -> None:
    table = build_table(
        3,
        [
            proxy("*.example.com", "http://wild:1"),
            proxy("*.api.example.com", "http://apiwild:1"),
            proxy("exact.api.example.com", "http://exact:1"),
        ],
        [],
    )

    def target(host: str) -> str | None:
        entry = lookup_proxy(table, host)
        return None if entry is None else entry.upstream.url

    assert target("exact.api.example.com") == "http://exact:1"
    assert target("x.api.example.com") == "http://apiwild:1"
    assert target("a.b.api.example.com") == "http://apiwild:1"
    assert target("a.example.com") == "http://wild:1"
    assert target("a.b.example.com") == "http://wild:1"
    assert target("example.com") is None
    assert target("api.example.com") == "http://wild:1"
    assert target("other.org") is None


def test_routes_priority_methods_regex_and_tie_break() -> None:
    routes = [
        route("low", "/api", "http://low:1", priority=100),
        route("high", "/api/v2", "http://high:1", priority=900),
        route("b-tie", "/t", "http://b:1", priority=500),
        route("a-tie", "/t", "http://a:1", priority=500),
        route("posts", "/write", "http://w:1", methods=["post"]),
        route("rx", r"/items/\d+$", "http://rx:1", match="regex"),
    ]
    table = build_table(1, [proxy("h.test")], routes)
    entry = lookup_proxy(table, "h.test")
    assert entry is not None
    assert select_upstream(entry, "GET", "/api/v2/x") == (entry.routes[0].upstream, "high")
    assert select_upstream(entry, "GET", "/api/v1")[1] == "low"
    assert select_upstream(entry, "GET", "/t")[1] == "a-tie"
    assert select_upstream(entry, "GET", "/write")[1] is None
    assert select_upstream(entry, "POST", "/write")[1] == "posts"
    assert select_upstream(entry, "GET", "/items/42")[1] == "rx"
    assert select_upstream(entry, "GET", "/items/42x")[1] is None
    upstream, route_id = select_upstream(entry, "GET", "/nothing")
    assert route_id is None and upstream.url == "http://backend:8080"


def test_route_modes_scope_and_target_proxy() -> None:
    routes = [
        route("g", "/g"),
        route("scoped", "/s", scope="proxies", proxy_hostnames=["one.test"]),
        route("off", "/off", enabled=False),
        Route(id="to-two", path_pattern="/two", target_proxy="two.test"),
        Route(id="to-missing", path_pattern="/missing", target_proxy="missing.test"),
    ]
    table = build_table(
        1,
        [
            proxy("one.test", disabled_route_ids=["g"]),
            proxy("two.test", "http://two-backend:9"),
            proxy("sel.test", route_mode="selective", enabled_route_ids=["g", "scoped", "to-two"]),
            proxy("none.test", route_mode="none"),
        ],
        routes,
    )
    ids = {host: [r.id for r in table.exact[host].routes] for host in table.exact}
    assert ids["one.test"] == ["scoped", "to-two"]
    assert ids["two.test"] == ["g", "to-two"]
    assert ids["sel.test"] == ["g", "to-two"]  # "scoped" does not admit sel.test
    assert ids["none.test"] == []
    entry = table.exact["one.test"]
    assert select_upstream(entry, "GET", "/two/x")[0].url == "http://two-backend:9"


def test_upstream_parsing_host_header_and_base_path() -> None:
    table = build_table(
        1, [proxy("h.test", "https://up.example:8443/base/"), proxy("i.test", "http://[::1]")], []
    )
    upstream = table.exact["h.test"].upstream
    assert (upstream.tls, upstream.host, upstream.port) == (True, "up.example", 8443)
    assert upstream.host_header == b"up.example:8443"
    assert upstream.base_path == "/base"
    assert table.exact["i.test"].upstream.host_header == b"[::1]"


def test_bad_rows_are_skipped_not_fatal() -> None:
    good = proxy("good.test").model_dump_json()
    table = compile_snapshot(
        7,
        {"good.test": good, "bad.test": '{"hostname": "bad.test"}', "junk": "not json"},
        {"r": route("r", "/r").model_dump_json(), "broken": "{}"},
    )
    assert table.version == 7
    assert list(table.exact) == ["good.test"]
    assert [r.id for r in table.exact["good.test"].routes] == ["r"]
