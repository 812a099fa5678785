"""Who may claim a hostname: the one rule behind proxy creation and certificate requests.

A name belongs to the owner of the proxy that serves it (the exact proxy, else the longest wildcard), and
the system's own names (the authorization server's host) belong to nobody but the admin. For ordinary
tokens:
- a reserved name, or a wildcard covering one, is refused, and so are IP addresses and single-label names
  (`localhost`): requests sent to the data plane by address would land on whoever held them;
- wildcard proxies are allowed only under a zone the admin delegated to the token (ApiToken.zones);
- a token with zones may create names only inside them; a name inside another token's zone is refused;
- a name that another owner's wildcard proxy serves is refused, unless it lies in one of the caller's own
  zones (the admin delegated it, which is the admin's word over its own wildcard);
- a certificate may name only hostnames served by the token's own proxies, or inside its own zones.
The admin may claim anything. The facts are read for one name at a time with two HMGETs (wildcard
proxies and zones of every suffix), so a check costs the same with ten proxies or ten thousand.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from shared.config import Settings

from .. import store
from ..principal import Principal
from ..store import Reader


def reserved_hostnames(settings: Settings) -> frozenset[str]:
    """Names the system itself serves; only the admin may put a proxy (or a certificate) on them."""
    return frozenset({settings.auth_host})


def within(name: str, zone: str) -> bool:
    return name == zone or name.endswith("." + zone)


def _suffixes(name: str) -> list[str]:
    """`a.b.example.com` -> [a.b.example.com, b.example.com, example.com, com]."""
    labels = name.split(".")
    return [".".join(labels[index:]) for index in range(len(labels))]


@dataclass(frozen=True, slots=True)
class NameFacts:
    """What decides who may claim one name (`base`: the name, or a wildcard's suffix)."""

    hostname: str
    base: str
    wildcard: bool
    exact_owner: str | None  # owner of a proxy with exactly this hostname
    wildcard_owners: dict[str, str]  # suffix -> owner of the proxy `*.suffix`, for suffixes covering it
    zone_tokens: dict[str, str]  # zone -> token, for every zone containing `base`

    def serving_owner(self) -> str | None:
        """The owner of the proxy that serves this (non-wildcard) name today, if any."""
        if self.exact_owner is not None:
            return self.exact_owner
        for suffix in _suffixes(self.base)[1:]:  # longest wildcard first
            owner = self.wildcard_owners.get(suffix)
            if owner is not None:
                return owner
        return None


async def name_facts(reader: Reader, hostname: str) -> NameFacts:
    wildcard = hostname.startswith("*.")
    base = hostname[2:] if wildcard else hostname
    suffixes = _suffixes(base)
    exact = await reader.get(store.proxies(), hostname)
    covering = await reader.get_many(store.proxies(), [f"*.{s}" for s in suffixes[1:]])
    zones = await reader.get_many(store.token_zones(), suffixes)
    return NameFacts(
        hostname=hostname,
        base=base,
        wildcard=wildcard,
        exact_owner=exact.owner if exact is not None else None,
        wildcard_owners={key[2:]: proxy.owner for key, proxy in covering.items()},
        zone_tokens={zone: delegation.token for zone, delegation in zones.items()},
    )


def _reserved_refusal(facts: NameFacts, reserved: frozenset[str]) -> str | None:
    for name in reserved:
        if facts.hostname == name or (facts.wildcard and within(name, facts.base)):
            return f"{facts.hostname!r} is (or covers) {name!r}, a name the system itself serves"
    # A Host of an IP address or a single label (localhost, a bare intranet name) is what reaches the data
    # plane by address or from inside the network: whoever held it would catch everyone's default traffic.
    try:
        ipaddress.ip_address(facts.base)
        return f"{facts.hostname!r} is an IP address; only the admin may serve a bare address"
    except ValueError:
        pass
    if "." not in facts.base:
        return f"{facts.hostname!r} is a single-label name; only the admin may serve it"
    return None


def proxy_refusal(
    principal: Principal, own_zones: list[str], facts: NameFacts, reserved: frozenset[str]
) -> str | None:
    """Why `principal` may not create a proxy for the name, or None when it may."""
    if principal.is_admin:
        return None
    if (refusal := _reserved_refusal(facts, reserved)) is not None:
        return refusal
    in_own_zone = any(within(facts.base, zone) for zone in own_zones)
    if facts.wildcard and not in_own_zone:
        return (
            "wildcard proxies are admin-only, unless the admin delegates a zone to this token "
            "(mhp tokens update NAME --zone example.com)"
        )
    if own_zones and not in_own_zone:
        return f"this token may only create names under its zones ({', '.join(own_zones)})"
    for zone, token in facts.zone_tokens.items():
        if token != principal.name:
            return f"{facts.hostname!r} lies in the zone {zone!r}, which the admin delegated to another token"
    if not in_own_zone:
        for suffix, owner in facts.wildcard_owners.items():
            if owner != principal.name:
                return f"{facts.hostname!r} is served by the wildcard proxy '*.{suffix}' of another owner"
    return None


def certificate_refusal(
    principal: Principal, own_zones: list[str], facts: NameFacts, reserved: frozenset[str]
) -> str | None:
    """Why `principal` may not request a certificate naming this domain, or None when it may."""
    if principal.is_admin:
        return None
    if (refusal := _reserved_refusal(facts, reserved)) is not None:
        return refusal
    if any(within(facts.base, zone) for zone in own_zones):
        return None
    if facts.serving_owner() != principal.name:
        return (
            f"{facts.hostname!r} is not served by a proxy of this token; certificates may only name the "
            "hostnames of proxies it owns"
        )
    return None


async def own_zones(reader: Reader, principal: Principal) -> list[str]:
    if principal.is_admin:
        return []
    token = await reader.get(store.tokens(), principal.name)
    return list(token.zones) if token is not None else []
