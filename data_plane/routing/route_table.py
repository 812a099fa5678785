"""The compiled, immutable route table and the pure lookup over it.

A `RouteTable` is built once per config version from validated models (`build_table`) and then only read:
the serving code holds a reference to it and a reload swaps that reference. Everything the hot path needs is
precomputed here (parsed upstream origins, header bytes, per-proxy route lists already filtered by
route_mode and sorted by priority), so a lookup is a dict hit plus a short scan with no allocation beyond
the result.

Semantics (shared contract): exact host first, else the longest `*.suffix` wildcard; among the proxy's
applicable routes, highest priority first, ties by id ascending; first matching route wins, else the proxy's
target. A `service://NAME` target is resolved here, from the snapshot's service endpoints
(service_targets.py); a proxy whose service is missing answers 503, a route whose service is missing is
skipped."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from data_plane.routing.service_targets import UnresolvedService, resolve_target
from shared.models import ProxyTarget, Route, ServiceEndpoint

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


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    id: str
    priority: int
    methods: frozenset[str]
    prefix: str | None
    regex: re.Pattern[str] | None
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


def parse_upstream(url: str) -> Upstream:
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


def _compile_route(
    route: Route, proxies: dict[str, ProxyTarget], services: Mapping[str, ServiceEndpoint]
) -> CompiledRoute | None:
    if route.target_url is not None:
        upstream = parse_upstream(resolve_target(route.target_url, route.owner, services).url)
    else:
        target = proxies.get(route.target_proxy or "")
        if target is None:
            log.warning("route %s targets unknown proxy %s; skipped", route.id, route.target_proxy)
            return None
        upstream = parse_upstream(resolve_target(target.target_url, target.owner, services).url)
    regex = re.compile(route.path_pattern) if route.match == "regex" else None
    return CompiledRoute(
        id=route.id,
        priority=route.priority,
        methods=frozenset(route.methods),
        prefix=route.path_pattern if route.match == "prefix" else None,
        regex=regex,
        upstream=upstream,
    )


def build_table(
    version: int,
    proxies: Iterable[ProxyTarget],
    routes: Iterable[Route],
    services: Mapping[str, ServiceEndpoint] | None = None,
) -> RouteTable:
    """Compile validated models into a table. Rows that cannot compile are skipped and logged."""
    services = services or {}
    by_host = {p.hostname: p for p in proxies}
    compiled: list[tuple[Route, CompiledRoute]] = []
    for route in routes:
        try:
            compiled_route = _compile_route(route, by_host, services)
        except (InvalidTarget, UnresolvedService, re.error) as exc:
            log.warning("route %s skipped: %s", route.id, exc)
            continue
        if compiled_route is not None:
            compiled.append((route, compiled_route))
    compiled.sort(key=lambda pair: (-pair[1].priority, pair[1].id))

    exact: dict[str, ProxyEntry] = {}
    wildcards: dict[str, ProxyEntry] = {}
    for proxy in by_host.values():
        enabled = proxy.enabled
        try:
            upstream = parse_upstream(resolve_target(proxy.target_url, proxy.owner, services).url)
        except UnresolvedService as exc:
            # Served as unavailable (503) rather than as an unknown host: the name is the proxy's.
            log.warning("proxy %s targets %s: %s; answering 503", proxy.hostname, proxy.target_url, exc)
            upstream, enabled = _UNAVAILABLE, False
        except InvalidTarget as exc:
            log.warning("proxy %s skipped: %s", proxy.hostname, exc)
            continue
        entry = ProxyEntry(
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
            response_headers_remove=frozenset(
                h.lower().encode("ascii") for h in proxy.response_headers_remove
            ),
            connect_timeout_seconds=proxy.connect_timeout_seconds,
            read_timeout_seconds=proxy.read_timeout_seconds,
            max_request_body_bytes=proxy.max_request_body_bytes,
            routes=tuple(c for r, c in compiled if _route_applies(r, proxy)),
        )
        if proxy.hostname.startswith("*."):
            wildcards[proxy.hostname[2:]] = entry
        else:
            exact[proxy.hostname] = entry
    return RouteTable(version=version, exact=exact, wildcards=wildcards)


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
    """The upstream for a request path (query already removed) and the id of the route that chose it."""
    for route in entry.routes:
        if route.methods and method not in route.methods:
            continue
        if route.prefix is not None:
            if path.startswith(route.prefix):
                return route.upstream, route.id
        elif route.regex is not None and route.regex.match(path):
            return route.upstream, route.id
    return entry.upstream, None
