"""The one object that holds a data-plane process's live state; built in __main__ and passed everywhere.

No module-level singletons: the current route table (an immutable snapshot swapped by reference), the upstream
pool, metrics, the request log and the set of open client connections all hang off a `Runtime`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import redis.asyncio as aioredis

from data_plane.io.upstream_pool import UpstreamPool
from data_plane.limits import Limits
from data_plane.metrics import Metrics
from data_plane.request_log import RequestLog
from data_plane.routing.route_table import EMPTY_TABLE, RouteTable
from shared.config import Settings

if TYPE_CHECKING:
    from data_plane.io.client_connection import ClientConnection


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
    connections: set[ClientConnection] = field(default_factory=set)

    def swap_table(self, table: RouteTable) -> None:
        self.table = table
        self.metrics.config_version.set(table.version)
