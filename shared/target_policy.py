"""Which upstream addresses a proxy or route owned by an ordinary token may reach (the SSRF guard).

Admin-owned proxies and routes may target anything. Everything an ordinary token owns may reach only
- public (globally routable) addresses, or
- addresses inside ALLOWED_TARGET_CIDRS, the private ranges the admin opened to tenants (e.g. the
  network their services run on),
and never a port the system itself serves on a non-public address: the management API, the data plane's
listeners and internal (health/metrics) ports, Redis. Otherwise a tenant could publish /metrics, the API or
Redis through a proxy of its own. Nor a port of PORT_RANGES on a non-public address: those are the host
ports of Docker-managed services, and a tenant reaches its own through `service://NAME` (which the data
plane resolves to the address the controller found), never another tenant's by guessing its port.

Both planes apply the same rule: the control plane to the URL text at write time (IP literals and
`localhost` names, so an obvious mistake is a 422 at once), the data plane to every address a name resolves
to at connect time (DNS can change after the write: rebinding). Pure functions, no I/O.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from shared.config import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# `python -m data_plane --workers N` serves worker i's health/metrics on INTERNAL_PORT + i; the control plane
# does not know N, so this many ports after INTERNAL_PORT count as internal.
MAX_INTERNAL_WORKER_PORTS = 64


def canonical_address(address: IPAddress) -> IPAddress:
    """IPv4-mapped IPv6 (::ffff:10.0.0.1) is judged as the IPv4 address it is."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True, slots=True)
class TargetPolicy:
    allowed_networks: tuple[IPNetwork, ...]
    system_ports: frozenset[int]
    service_port_ranges: tuple[tuple[int, int], ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> TargetPolicy:
        ports = {
            settings.API_PORT,
            settings.HTTP_PORT,
            settings.HTTPS_PORT,
            settings.PROXY_PROTOCOL_PORT,
            settings.PROXY_PROTOCOL_TLS_PORT,
            settings.EMBEDDED_REDIS_PORT,
            *range(settings.INTERNAL_PORT, settings.INTERNAL_PORT + MAX_INTERNAL_WORKER_PORTS),
        }
        redis_port = _url_port(settings.effective_redis_url, default=6379)
        if redis_port:
            ports.add(redis_port)
        ports.discard(0)
        return cls(settings.allowed_target_networks, frozenset(ports), settings.port_ranges)

    def refusal(self, address: IPAddress, port: int) -> str | None:
        """Why a restricted (non-admin) target may not connect to address:port, or None when it may."""
        address = canonical_address(address)
        if address.is_global and not address.is_multicast:
            return None
        if not any(address in network for network in self.allowed_networks):
            return (
                f"{address} is not a public address; proxies of ordinary tokens may target only public "
                "addresses or ranges the admin allows (ALLOWED_TARGET_CIDRS)"
            )
        if port in self.system_ports:
            return f"port {port} on {address} is one the system itself serves (API, data plane, Redis)"
        if any(low <= port <= high for low, high in self.service_port_ranges):
            return (
                f"port {port} on {address} is in the range of managed services' host ports "
                "(PORT_RANGES); target your own service as service://NAME"
            )
        return None

    def url_refusal(self, url: str) -> str | None:
        """The write-time check of a target URL's text: IP literals and `localhost` names. Other names are
        checked when the data plane resolves them (connect time)."""
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".").lower()
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return None  # the URL validator reports a bad port
        if host == "localhost" or host.endswith(".localhost"):
            host = "127.0.0.1"
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return None
        return self.refusal(address, port)


def _url_port(url: str, *, default: int) -> int:
    try:
        return urlsplit(url).port or default
    except ValueError:
        return 0
