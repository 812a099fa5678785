"""The compiled, immutable route table and the pure lookup over it.

A `RouteTable` is built once per config version from validated models (`build_table`) and then only read:
the serving code holds a reference to it and a reload swaps that reference. Everything the hot path needs is
precomputed here (parsed upstream origins, header bytes, per-proxy route lists already filtered by
route_mode and sorted by priority), so a lookup is a dict hit plus a short scan with no allocation beyond
the result.

Semantics (shared contract): exact host first, else the longest `*.suffix` wildcard; among the proxy's
applicable routes, highest priority first, ties by id ascending; first matching route wins, else the proxy's
target. Routes match the normalised request path (protocol.request_target): a prefix on segment boundaries
(`under_prefix`, the same rule public paths and scope rules use), a regex from the path's start.
A `service://NAME` target is resolved here, from the service endpoints of the same config version
(service_targets.py); a proxy whose service is missing answers 503, a route whose service is missing is
skipped. A URL an ordinary token wrote is `restricted` (checked at connect time); a managed service's
address, found by the controller on a port it allocated, is not."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from data_plane.protocol.request_target import normalise_prefix, under_prefix
from data_plane.routing.service_targets import UnresolvedService, resolve_target
from shared.models import ADMIN_OWNER, ProxyTarget, Route, ServiceEndpoint, service_reference
from shared.route_pattern import InvalidRoutePattern, RoutePattern, compile_route_pattern

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Upstream:
    """A parsed target URL: where to connect and how to rewrite the request."""

    url: str
    tls: bool
    host: str
    port: int
    host_header: bytes  # what `Host` becomes when the proxy rewrites it
    base_path: str  # "" or a path without trailing slash, prepended to the request target
    # The URL was written by an ordinary token (not ADMIN_OWNER): every address it connects to is checked
    # against shared.target_policy at connect time (io.upstream_pool).
    restricted: bool = False


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    id: str
    priority: int
    methods: frozenset[str]
    prefix: str | None
    regex: RoutePattern | None  # RE2: linear-time matching, whoever wrote the pattern
    upstream: Upstream


@dataclass(frozen=True, slots=True)
class ProxyEntry:
    hostname: str
    enabled: bool
    enable_http: bool
    enable_https: bool
    redirect_http: bool
    hsts_header: bytes  # the Strict-Transport-Security value for HTTPS responses, b"" when off
    upstream: Upstream
    preserve_host_header: bool
    verify_upstream_tls: bool
    upstream_ca_bundle_pem: str | None
    request_headers_set: tuple[tuple[bytes, bytes], ...]
    request_headers_remove: frozenset[bytes]
    response_headers_set: tuple[tuple[bytes, bytes], ...]
    response_headers_remove: frozenset[bytes]
    connect_timeout_seconds: float
    read_timeout_seconds: float
    max_request_body_bytes: int
    allow_encoded_slashes: bool
    routes: tuple[CompiledRoute, ...]


@dataclass(frozen=True, slots=True)
class RouteTable:
    version: int
    exact: dict[str, ProxyEntry]
    wildcards: dict[str, ProxyEntry]  # key: the suffix after "*.", e.g. "example.com"

    def __len__(self) -> int:
        return len(self.exact) + len(self.wildcards)


EMPTY_TABLE = RouteTable(version=0, exact={}, wildcards={})
# The upstream of a proxy that is not served (its service is missing): never connected to.
_UNAVAILABLE = Upstream(url="", tls=False, host="", port=0, host_header=b"", base_path="")


class InvalidTarget(ValueError):
    pass


def parse_upstream(url: str, *, restricted: bool = False) -> Upstream:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidTarget(f"unsupported target URL {url!r}")
    tls = parts.scheme == "https"
    try:
        port = parts.port or (443 if tls else 80)
    except ValueError as exc:
        raise InvalidTarget(f"target URL {url!r} has an invalid port") from exc
    host = parts.hostname
    default_port = 443 if tls else 80
    host_for_header = f"[{host}]" if ":" in host else host
    host_header = host_for_header if port == default_port else f"{host_for_header}:{port}"
    return Upstream(
        url=url,
        tls=tls,
        host=host,
        port=port,
        host_header=host_header.encode("ascii"),
        base_path=parts.path.rstrip("/"),
        restricted=restricted,
    )


def _header_pairs(values: dict[str, str]) -> tuple[tuple[bytes, bytes], ...]:
    return tuple((k.lower().encode("ascii"), v.encode("latin-1")) for k, v in values.items())


def _route_applies(route: Route, proxy: ProxyTarget) -> bool:
    if not route.enabled:
        return False
    if route.scope == "global":
        scope_ok = True
    else:
        scope_ok = proxy.hostname in route.proxy_hostnames
    if not scope_ok:
        return False
    if proxy.route_mode == "none":
        return False
    if proxy.route_mode == "selective":
        return route.id in proxy.enabled_route_ids
    return route.id not in proxy.disabled_route_ids


def _upstream(url: str, owner: str, services: Mapping[str, ServiceEndpoint], *, restricted: bool) -> Upstream:
    """The upstream of a target URL (service:// resolved). A managed service's address is never
    restricted: the controller found it on a port it allocated, not a URL a tenant wrote."""
    resolved = resolve_target(url, owner, services)
    return parse_upstream(resolved.url, restricted=restricted and not resolved.trusted)


def _compile_route(
    route: Route, proxies: Mapping[str, ProxyTarget], services: Mapping[str, ServiceEndpoint]
) -> CompiledRoute | None:
    restricted = route.owner != ADMIN_OWNER
    if route.target_url is not None:
        upstream = _upstream(route.target_url, route.owner, services, restricted=restricted)
    else:
        target = proxies.get(route.target_proxy or "")
        if target is None:
            log.warning("route %s targets unknown proxy %s; skipped", route.id, route.target_proxy)
            return None
        # The URL is the target proxy's: restricted when either owner is an ordinary token.
        upstream = _upstream(
            target.target_url, target.owner, services, restricted=restricted or target.owner != ADMIN_OWNER
        )
    regex = compile_route_pattern(route.path_pattern) if route.match == "regex" else None
    return CompiledRoute(
        id=route.id,
        priority=route.priority,
        methods=frozenset(route.methods),
        prefix=normalise_prefix(route.path_pattern) if route.match == "prefix" else None,
        regex=regex,
        upstream=upstream,
    )


def _proxy_entry(
    proxy: ProxyTarget, routes: tuple[CompiledRoute, ...], services: Mapping[str, ServiceEndpoint]
) -> ProxyEntry:
    enabled = proxy.enabled
    try:
        upstream = _upstream(proxy.target_url, proxy.owner, services, restricted=proxy.owner != ADMIN_OWNER)
    except UnresolvedService as exc:
        # Served as unavailable (503) rather than as an unknown host: the name is the proxy's.
        log.warning("proxy %s targets %s: %s; answering 503", proxy.hostname, proxy.target_url, exc)
        upstream, enabled = _UNAVAILABLE, False
    return ProxyEntry(
        hostname=proxy.hostname,
        enabled=enabled,
        enable_http=proxy.enable_http,
        enable_https=proxy.enable_https,
        redirect_http=proxy.redirect_http_to_https,
        hsts_header=b"max-age=%d" % proxy.hsts_max_age_seconds if proxy.hsts_max_age_seconds else b"",
        upstream=upstream,
        preserve_host_header=proxy.preserve_host_header,
        verify_upstream_tls=proxy.verify_upstream_tls,
        upstream_ca_bundle_pem=proxy.upstream_ca_bundle_pem,
        request_headers_set=_header_pairs(proxy.request_headers_set),
        request_headers_remove=frozenset(h.lower().encode("ascii") for h in proxy.request_headers_remove),
        response_headers_set=_header_pairs(proxy.response_headers_set),
        response_headers_remove=frozenset(h.lower().encode("ascii") for h in proxy.response_headers_remove),
        connect_timeout_seconds=proxy.connect_timeout_seconds,
        read_timeout_seconds=proxy.read_timeout_seconds,
        max_request_body_bytes=proxy.max_request_body_bytes,
        allow_encoded_slashes=proxy.allow_encoded_slashes,
        routes=routes,
    )


def _evaluation_order(route: CompiledRoute) -> tuple[int, str]:
    return (-route.priority, route.id)


class TableBuilder:
    """The models behind the current table, indexed so that a change rebuilds only what it touches.

    Routes are indexed by scope (global, or the hostnames they name) and by the proxy they target, so a
    proxy's entry is built from its own candidates (global + scoped to it) instead of a scan of every route,
    and a change finds the entries it affects: a changed proxy, the proxies a changed route is scoped to
    (before and after the change; all of them for a global route), and the proxies whose routes target a
    changed proxy. `apply` returns a new RouteTable (new dicts, shared unchanged entries), so the caller's
    swap stays atomic and the previous table is untouched. Not thread-safe; one builder per sync loop.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._proxies: dict[str, ProxyTarget] = {}
        self._routes: dict[str, Route] = {}
        self._compiled: dict[str, CompiledRoute] = {}  # route id -> compiled (absent: skipped)
        self._global: set[str] = set()
        self._scoped: dict[str, set[str]] = {}  # hostname -> ids of routes scoped to it
        self._targeting: dict[str, set[str]] = {}  # proxy hostname -> ids of routes with target_proxy = it
        self._services: dict[str, ServiceEndpoint] = {}
        self._service_proxies: dict[str, set[str]] = {}  # service name -> hostnames of proxies targeting it
        self._service_routes: dict[str, set[str]] = {}  # service name -> ids of routes targeting it
        self._exact: dict[str, ProxyEntry] = {}
        self._wildcards: dict[str, ProxyEntry] = {}

    def replace_all(
        self,
        version: int,
        proxies: Iterable[ProxyTarget],
        routes: Iterable[Route],
        services: Mapping[str, ServiceEndpoint] | None = None,
    ) -> RouteTable:
        self._reset()
        return self.apply(
            version, {p.hostname: p for p in proxies}, {r.id: r for r in routes}, services or {}
        )

    def apply(
        self,
        version: int,
        proxies: Mapping[str, ProxyTarget | None],
        routes: Mapping[str, Route | None],
        services: Mapping[str, ServiceEndpoint | None] | None = None,
    ) -> RouteTable:
        """Apply changed objects (None = deleted) and return the table for `version`."""
        affected: set[str] = set()
        everything = False
        for name, endpoint in (services or {}).items():
            if endpoint is None:
                self._services.pop(name, None)
            else:
                self._services[name] = endpoint
            affected |= self._service_proxies.get(name, set())
        for hostname, proxy in proxies.items():
            old_proxy = self._proxies.pop(hostname, None)
            if old_proxy is not None:
                _unlink(self._service_proxies, old_proxy.target_url, hostname)
            if proxy is not None:
                self._proxies[hostname] = proxy
                _link(self._service_proxies, proxy.target_url, hostname)
            affected.add(hostname)
        recompile = set(routes)
        for name in services or {}:  # routes naming a changed service
            recompile |= self._service_routes.get(name, set())
        for hostname in affected:  # routes borrowing a changed proxy's target (its service too)
            recompile |= self._targeting.get(hostname, set())
        for route_id in recompile:
            old = self._routes.get(route_id)
            new = routes[route_id] if route_id in routes else old
            if old is not None:
                self._unindex(old)
                everything |= old.scope == "global"
                affected.update(old.proxy_hostnames)
            if new is None:
                self._routes.pop(route_id, None)
                self._compiled.pop(route_id, None)
                continue
            self._routes[route_id] = new
            self._index(new)
            everything |= new.scope == "global"
            affected.update(new.proxy_hostnames)
            compiled = self._compile(new)
            if compiled is None:
                self._compiled.pop(route_id, None)
            else:
                self._compiled[route_id] = compiled
        # Deleted proxies are in `affected` (their entries go), live ones too when a global route changed.
        for hostname in affected.union(self._proxies) if everything else affected:
            self._rebuild(hostname)
        return RouteTable(version=version, exact=dict(self._exact), wildcards=dict(self._wildcards))

    # ---- internals

    def _index(self, route: Route) -> None:
        if route.target_url is not None:
            _link(self._service_routes, route.target_url, route.id)
        if route.scope == "global":
            self._global.add(route.id)
        else:
            for hostname in route.proxy_hostnames:
                self._scoped.setdefault(hostname, set()).add(route.id)
        if route.target_proxy is not None:
            self._targeting.setdefault(route.target_proxy, set()).add(route.id)

    def _unindex(self, route: Route) -> None:
        if route.target_url is not None:
            _unlink(self._service_routes, route.target_url, route.id)
        self._global.discard(route.id)
        for hostname in route.proxy_hostnames:
            self._scoped.get(hostname, set()).discard(route.id)
        if route.target_proxy is not None:
            self._targeting.get(route.target_proxy, set()).discard(route.id)

    def _compile(self, route: Route) -> CompiledRoute | None:
        try:
            return _compile_route(route, self._proxies, self._services)
        except (InvalidTarget, InvalidRoutePattern, UnresolvedService) as exc:
            log.warning("route %s skipped: %s", route.id, exc)
            return None

    def _rebuild(self, hostname: str) -> None:
        wildcard = hostname.startswith("*.")
        entries = self._wildcards if wildcard else self._exact
        key = hostname[2:] if wildcard else hostname
        proxy = self._proxies.get(hostname)
        if proxy is None:
            entries.pop(key, None)
            return
        candidates = (self._compiled.get(i) for i in self._global | self._scoped.get(hostname, set()))
        applicable = sorted(
            (c for c in candidates if c is not None and _route_applies(self._routes[c.id], proxy)),
            key=_evaluation_order,
        )
        try:
            entries[key] = _proxy_entry(proxy, tuple(applicable), self._services)
        except InvalidTarget as exc:
            log.warning("proxy %s skipped: %s", hostname, exc)
            entries.pop(key, None)


def _link(index: dict[str, set[str]], url: str, user: str) -> None:
    reference = service_reference(url)
    if reference is not None:
        index.setdefault(reference[0], set()).add(user)


def _unlink(index: dict[str, set[str]], url: str, user: str) -> None:
    reference = service_reference(url)
    if reference is not None:
        index.get(reference[0], set()).discard(user)


def build_table(
    version: int,
    proxies: Iterable[ProxyTarget],
    routes: Iterable[Route],
    services: Mapping[str, ServiceEndpoint] | None = None,
) -> RouteTable:
    """Compile validated models into a table. Rows that cannot compile are skipped and logged."""
    return TableBuilder().replace_all(version, proxies, routes, services)


def normalise_host(raw: bytes) -> str:
    """Host header -> lookup key: port stripped, lower-cased, trailing dot removed."""
    host = raw.decode("latin-1").strip().lower()
    if host.startswith("["):
        end = host.find("]")
        host = host[1:end] if end > 0 else host
    else:
        colon = host.rfind(":")
        if colon >= 0:
            host = host[:colon]
    return host.rstrip(".")


def lookup_proxy(table: RouteTable, host: str) -> ProxyEntry | None:
    entry = table.exact.get(host)
    if entry is not None:
        return entry
    wildcards = table.wildcards
    if not wildcards:
        return None
    dot = host.find(".")
    # Walking dots left to right visits suffixes longest first, so the first hit is the longest match.
    while dot >= 0:
        entry = wildcards.get(host[dot + 1 :])
        if entry is not None:
            return entry
        dot = host.find(".", dot + 1)
    return None


def select_upstream(entry: ProxyEntry, method: str, path: str) -> tuple[Upstream, str | None]:
    """The upstream for a normalised request path (no query) and the id of the route that chose it."""
    for route in entry.routes:
        if route.methods and method not in route.methods:
            continue
        if route.prefix is not None:
            if under_prefix(path, route.prefix):
                return route.upstream, route.id
        elif route.regex is not None and route.regex.match(path):
            return route.upstream, route.id
    return entry.upstream, None
