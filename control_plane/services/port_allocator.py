"""Host ports: which may be handed out, atomic allocation across control-plane replicas, and reclaiming the
allocations a crash left behind.

An allocation is a field `<protocol>/<port>` of the hash {mhp}:ports, claimed by one Lua script (claim the
field only if absent and the port is not restricted), so two replicas can never hand out the same port.
Before claiming, the port is probed: it must bind on 0.0.0.0 and [::] (any process listening on any
address of that port makes that fail), so a port another program holds is never handed out. Candidates
are tried from a random point of PORT_RANGES: concurrent allocators rarely collide, and a just-released
port is not handed out again at once.

Restricted, never handed out: 22, 25, 53, 80, 443, the system's own ports (shared/target_policy.py: API,
data plane listeners and internal ports, Redis) and PORT_RESTRICTED. Ordinary tokens get ports only from
PORT_RANGES; the admin may also name a port outside them.

A service's ports are released with it (same transaction); a token's with the token (cascade). What a crash
between allocating and saving leaves (an allocation whose service or token does not exist, older than
PORT_RECONCILE_GRACE_SECONDS) is freed by `reclaim_leaked`, which the reconcile loop runs.
"""

from __future__ import annotations

import logging
import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Literal

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, Field

from shared import keys
from shared.config import Settings
from shared.models import ADMIN_OWNER, now_seconds
from shared.target_policy import TargetPolicy

from ..docker.records import service_records
from ..errors import Conflict, InvalidInput
from ..store import Collection, Reader

log = logging.getLogger(__name__)

Protocol = Literal["tcp", "udp"]
Bind = Literal["127.0.0.1", "0.0.0.0"]
WELL_KNOWN_RESTRICTED = {22: "SSH", 25: "SMTP", 53: "DNS", 80: "HTTP", 443: "HTTPS"}
MAX_CANDIDATES = 2000

# KEYS[1] ports hash; ARGV: field, allocation JSON. 1 = claimed, 0 = someone holds it.
_CLAIM = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# Compare-and-delete: only the allocation we made (its id) is released, never a later one of the same port.
_RELEASE = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if raw and cjson.decode(raw)['allocation_id'] == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""


class PortAllocation(BaseModel):
    """One allocated host port (stored in {mhp}:ports)."""

    model_config = ConfigDict(extra="forbid")
    schema_version: int = 1
    port: int = Field(ge=1, le=65535)
    protocol: Protocol = "tcp"
    bind: Bind = "127.0.0.1"
    owner: str = ADMIN_OWNER
    purpose: Annotated[str, Field(max_length=200)] = ""
    service: str | None = None  # the service whose port this is (released with it)
    allocation_id: str = Field(default_factory=lambda: secrets.token_hex(8))
    created_at: float = Field(default_factory=now_seconds)

    @property
    def field(self) -> str:
        return keys.port_field(self.protocol, self.port)


def port_allocations() -> Collection[PortAllocation]:
    return Collection(keys.ports(), PortAllocation)


@dataclass(frozen=True, slots=True)
class PortPolicy:
    ranges: tuple[tuple[int, int], ...]
    restricted: dict[int, str]  # port -> why

    @classmethod
    def from_settings(cls, settings: Settings) -> PortPolicy:
        restricted = dict(WELL_KNOWN_RESTRICTED)
        for port in sorted(TargetPolicy.from_settings(settings).system_ports):
            restricted.setdefault(port, "a port the system itself serves (API, data plane, Redis)")
        for port in sorted(settings.extra_restricted_ports):
            restricted.setdefault(port, "restricted by the admin (PORT_RESTRICTED)")
        return cls(settings.port_ranges, restricted)

    def in_ranges(self, port: int) -> bool:
        return any(low <= port <= high for low, high in self.ranges)

    def refusal(self, port: int, *, is_admin: bool) -> str | None:
        """Why `port` may not be allocated by this principal, whoever holds it now; None when it may."""
        why = self.restricted.get(port)
        if why is not None:
            return f"port {port} is restricted: {why}"
        if not is_admin and not self.in_ranges(port):
            ranges = ", ".join(f"{low}-{high}" for low, high in self.ranges)
            return f"port {port} is outside the ranges ordinary tokens may use ({ranges})"
        return None

    def candidates(self, start: int) -> Iterator[int]:
        """Every port of the ranges, from index `start` round to where it began."""
        ports = [p for low, high in self.ranges for p in range(low, high + 1)]
        for index in range(len(ports)):
            yield ports[(start + index) % len(ports)]


def os_can_bind(port: int, protocol: Protocol) -> bool:
    """True when nothing on this host holds the port: it binds on 0.0.0.0 and on [::] (IPv6-only)."""
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    for family, address in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        try:
            probe = socket.socket(family, kind)
        except OSError:
            continue  # no IPv6 on this host
        with probe:
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind((address, port))
            except OSError:
                return False
    return True


class PortAllocator:
    def __init__(self, redis: aioredis.Redis, policy: PortPolicy) -> None:
        self._redis = redis
        self.policy = policy

    async def allocate(
        self,
        *,
        owner: str,
        bind: Bind,
        protocol: Protocol,
        purpose: str,
        service: str | None = None,
        port: int | None = None,
    ) -> PortAllocation:
        """Claim `port`, or any free one of the ranges: Conflict (409) when taken or bound by another
        program, InvalidInput (422) when restricted or out of range for an ordinary token."""
        is_admin = owner == ADMIN_OWNER
        if port is not None:
            refusal = self.policy.refusal(port, is_admin=is_admin)
            if refusal is not None:
                raise InvalidInput(
                    refusal, [{"loc": ["body", "port"], "msg": refusal, "type": "value_error"}]
                )
            if not os_can_bind(port, protocol):
                raise Conflict(f"port {port}/{protocol} is in use on this host by another program")
            claimed = await self._claim(owner, bind, protocol, purpose, service, port)
            if claimed is None:
                raise Conflict(f"port {port}/{protocol} is already allocated")
            return claimed
        taken = set(await self._redis.hkeys(keys.ports()))  # a hint; the claim itself is what is atomic
        tried = 0
        for candidate in self.policy.candidates(secrets.randbelow(1 << 30)):
            if keys.port_field(protocol, candidate) in taken or candidate in self.policy.restricted:
                continue
            tried += 1
            if tried > MAX_CANDIDATES:
                break
            if not os_can_bind(candidate, protocol):
                continue
            claimed = await self._claim(owner, bind, protocol, purpose, service, candidate)
            if claimed is not None:
                return claimed
        raise Conflict(f"no free {protocol} port left in PORT_RANGES")

    async def _claim(
        self, owner: str, bind: Bind, protocol: Protocol, purpose: str, service: str | None, port: int
    ) -> PortAllocation | None:
        allocation = PortAllocation(
            port=port, protocol=protocol, bind=bind, owner=owner, purpose=purpose, service=service
        )
        ok = await self._redis.eval(  # type: ignore[misc]
            _CLAIM, 1, keys.ports(), allocation.field, allocation.model_dump_json()
        )
        return allocation if ok else None

    async def release(self, allocation: PortAllocation) -> bool:
        """Free exactly this allocation (not a later one of the same port)."""
        done = await self._redis.eval(  # type: ignore[misc]
            _RELEASE, 1, keys.ports(), allocation.field, allocation.allocation_id
        )
        return bool(done)

    async def release_all(self, allocations: list[PortAllocation]) -> None:
        for allocation in allocations:
            await self.release(allocation)

    async def reclaim_leaked(self, reader: Reader, *, grace_seconds: float) -> list[PortAllocation]:
        """Free allocations older than the grace period whose service or owner token no longer exists, or
        whose service no longer lists that port (a crash between allocating and saving)."""
        now = time.time()
        allocations = await reader.all(port_allocations())
        records = await reader.all(service_records())
        tokens = set(await self._redis.hkeys(keys.tokens()))
        freed = []
        for allocation in allocations.values():
            if now - allocation.created_at < grace_seconds:
                continue
            if allocation.service is not None:
                record = records.get(allocation.service)
                in_use = record is not None and any(
                    p.host_port == allocation.port and p.protocol == allocation.protocol
                    for p in record.spec.ports
                )
            else:
                in_use = allocation.owner == ADMIN_OWNER or allocation.owner in tokens
            if not in_use and await self.release(allocation):
                log.warning(
                    "freed leaked port allocation %s (owner %s, service %s)",
                    allocation.field,
                    allocation.owner,
                    allocation.service,
                )
                freed.append(allocation)
        return freed
