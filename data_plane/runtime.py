"""The one object that holds a data-plane process's live state; built in __main__ and passed everywhere.

No module-level singletons: the current route table (an immutable snapshot swapped by reference), the upstream
pool, metrics, the request log and the set of open client connections all hang off a `Runtime`.

Protection rides along: `auth_policies` (proxy hostname -> compiled policy; empty when nothing is protected,
so unprotected traffic pays one truthiness check), `auth_keys` (the JWKS snapshot) and `revoked` (revoked
access-token ids, updated between snapshots by pub/sub). `swap` replaces route table and auth table together
with no await in between, so no request ever sees one without the other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import redis.asyncio as aioredis

from data_plane.auth.access_policy import ProxyAccessPolicy
from data_plane.auth.auth_table import AuthTable
from data_plane.auth.gate import AuthContext
from data_plane.auth.revocations import RevokedTokens
from data_plane.auth.token_verifier import KeySet
from data_plane.io.exchange import RequestIds
from data_plane.io.upstream_pool import UpstreamPool
from data_plane.limits import Limits
from data_plane.metrics import Metrics
from data_plane.protocol.proxy_protocol import TrustedPeers
from data_plane.request_log import RequestLog
from data_plane.routing.route_table import EMPTY_TABLE, RouteTable
from data_plane.tls.cert_store import CertificateStore
from shared.config import Settings


class ServedConnection(Protocol):
    """What shutdown does with an open client connection (io.client_connection implements it)."""

    def close_if_idle(self) -> None: ...

    async def wait_closed(self) -> None: ...

    def abort(self) -> None: ...


@dataclass(slots=True, eq=False)
class Runtime:
    settings: Settings
    limits: Limits
    redis: aioredis.Redis
    metrics: Metrics
    request_log: RequestLog
    pool: UpstreamPool
    loop: asyncio.AbstractEventLoop
    table: RouteTable = EMPTY_TABLE
    redis_connected: bool = False
    draining: bool = False
    connections: set[ServedConnection] = field(default_factory=set)
    # None: protected, but its config row is unreadable (fail closed with 503).
    auth_policies: Mapping[str, ProxyAccessPolicy | None] = field(default_factory=dict)
    auth_keys: KeySet = field(default_factory=lambda: KeySet({}))
    revoked: RevokedTokens = field(default_factory=RevokedTokens)
    jwks_raw: str | None = None  # what auth_keys was built from, to notice a rotation between versions
    # Served certificates (None when HTTPS is off: no HTTPS_PORT or no KEY_ENCRYPTION_KEY_B64).
    certificates: CertificateStore | None = None
    request_ids: RequestIds = field(default_factory=RequestIds)
    # Built again only when the key set or the revocations it holds are replaced (see auth_context).
    last_auth_context: AuthContext | None = None
    # Fixed for the process's life (settings do not change while it runs); read on every connection/request.
    trusted_peers: TrustedPeers = field(init=False)
    auth_host: str = field(init=False)

    def __post_init__(self) -> None:
        self.trusted_peers = TrustedPeers(self.settings.trusted_proxy_networks)
        self.auth_host = self.settings.auth_host

    def auth_context(self) -> AuthContext:
        """Issuer, keys and revocations for the auth gate; one value for as long as none of them changes."""
        context = self.last_auth_context
        if context is None or context.keys is not self.auth_keys or context.revoked is not self.revoked:
            context = self.last_auth_context = AuthContext(
                self.settings.oauth_issuer, self.auth_keys, self.revoked
            )
        return context

    def swap_table(self, table: RouteTable) -> None:
        self.table = table
        self.metrics.config_version.set(table.version)

    def swap(self, table: RouteTable, auth: AuthTable, jwks_raw: str | None) -> None:
        """Route table and protection in one step (no await between the assignments)."""
        policies: dict[str, ProxyAccessPolicy | None] = dict(auth.policies)
        policies.update(dict.fromkeys(auth.broken))
        self.auth_policies = policies
        self.auth_keys = auth.keys
        self.jwks_raw = jwks_raw
        self.swap_table(table)
