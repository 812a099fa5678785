"""The client's IP address as the control plane should judge it (rate limits, logs).

The control plane is reached directly (the management API, CLI) or through the data plane's AUTH_HOST
proxy, which appends the client's address to X-Forwarded-For. The header is believed only when the TCP
peer is a trusted proxy (TRUSTED_PROXY_CIDRS); then the client is the right-most address in the chain that
is not itself a trusted proxy (left-most entries are whatever the client claimed). Pure: takes the ASGI
scope, returns a string.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.types import Scope

Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


def _parsed(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(value.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address | None, networks: Networks) -> bool:
    return address is not None and any(address in network for network in networks)


def client_ip(scope: Scope, trusted: Networks) -> str:
    peer = scope.get("client")
    peer_ip = str(peer[0]) if peer else ""
    if not _trusted(_parsed(peer_ip), trusted):
        return peer_ip
    forwarded = _forwarded_for(scope["headers"])
    for hop in reversed(forwarded):
        address = _parsed(hop)
        if address is None:
            break  # garbage in the chain: stop believing it here
        if not _trusted(address, trusted):
            return str(address)
    return peer_ip


def _forwarded_for(headers: Iterable[tuple[bytes, bytes]]) -> list[str]:
    hops: list[str] = []
    for name, value in headers:
        if name == b"x-forwarded-for":
            hops.extend(part for part in value.decode("latin-1").split(",") if part.strip())
    return hops
