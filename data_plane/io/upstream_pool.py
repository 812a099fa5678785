"""Keep-alive connections to upstream origins, one bounded idle pool per origin.

An origin is (scheme, host, port, TLS verification settings, restricted). Idle connections are reused newest
first (the most likely to still be open); each is dropped when it has been idle longer than `idle_seconds`,
when its pool is full, or when the upstream sends anything or closes while idle.

A restricted upstream (its URL written by an ordinary token) is connected here only after the name is
resolved by us and each address is judged by shared.target_policy: the connection goes to an address that
passed, by number, so DNS cannot answer differently between the check and the connect (rebinding), and
when no address passes nothing is connected. Restricted connections have pools of their own: a connection
opened for an admin's proxy is never handed to a tenant's request for the same origin.

Connect failures are typed for the request path, each with the status and text the client gets
(`UpstreamConnectFailed`): refused, unreachable, TLS failure -> 502; timeout -> 504; a target the policy
refuses -> 502 naming why."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable

from data_plane.io.upstream_connection import Phase, UpstreamConnection
from data_plane.protocol.upstream_response import ResponseHead
from data_plane.routing.route_table import Upstream
from shared.target_policy import TargetPolicy

log = logging.getLogger(__name__)

OriginKey = tuple[bool, str, int, bool, str, bool]


class UpstreamConnectFailed(Exception):
    """No connection to the upstream; `status` and `answer` are what the client is told."""

    status = 502
    answer = "upstream refused the connection"


class UpstreamConnectError(UpstreamConnectFailed):
    """Refused, unreachable, unresolvable, or the TLS handshake failed."""


class UpstreamConnectTimeout(UpstreamConnectFailed):
    status = 504
    answer = "upstream connect timed out"


class UpstreamTargetRefused(UpstreamConnectFailed):
    """Every address of a restricted upstream is one its owner may not reach (shared.target_policy)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.answer = f"upstream target not allowed: {reason}"


class UpstreamPool:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        max_idle_per_origin: int = 64,
        idle_seconds: float = 60.0,
        max_response_head_bytes: int = 65536,
        target_policy: TargetPolicy | None = None,
        on_target_refused: Callable[[], object] | None = None,
    ) -> None:
        self._loop = loop
        # None: nothing is restricted (a pool used without settings, never by the data plane's runtime).
        self._target_policy = target_policy
        self._on_target_refused = on_target_refused
        self._idle: dict[OriginKey, deque[UpstreamConnection]] = {}
        self._ssl_contexts: dict[tuple[bool, str], ssl.SSLContext] = {}
        self._max_idle = max_idle_per_origin
        self._idle_seconds = idle_seconds
        self._max_head = max_response_head_bytes
        self._sweeper: asyncio.TimerHandle | None = None

    @staticmethod
    def origin_key(upstream: Upstream, verify_tls: bool, ca_pem: str | None) -> OriginKey:
        ca_digest = hashlib.sha256(ca_pem.encode()).hexdigest() if (upstream.tls and ca_pem) else ""
        return (upstream.tls, upstream.host, upstream.port, verify_tls, ca_digest, upstream.restricted)

    def _ssl_context(self, verify_tls: bool, ca_pem: str | None) -> ssl.SSLContext:
        key = (verify_tls, ca_pem or "")
        context = self._ssl_contexts.get(key)
        if context is None:
            if verify_tls:
                context = (
                    ssl.create_default_context(cadata=ca_pem) if ca_pem else ssl.create_default_context()
                )
            else:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            context.set_alpn_protocols(["http/1.1"])
            self._ssl_contexts[key] = context
        return context

    def take_idle(self, key: OriginKey) -> UpstreamConnection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        now = time.monotonic()
        while idle:
            channel = idle.pop()
            if (
                channel.phase is Phase.POOL
                and not channel.closed
                and now - channel.idle_since < self._idle_seconds
            ):
                return channel
            channel.close()
        return None

    async def connect(
        self, upstream: Upstream, verify_tls: bool, ca_pem: str | None, timeout_seconds: float
    ) -> UpstreamConnection:
        loop = self._loop
        channel = UpstreamConnection(loop, max_head_bytes=self._max_head)
        ssl_context = self._ssl_context(verify_tls, ca_pem) if upstream.tls else None
        policy = self._target_policy if upstream.restricted else None
        try:
            async with asyncio.timeout(timeout_seconds):
                addresses = (
                    [upstream.host] if policy is None else await self._allowed_addresses(upstream, policy)
                )
                for index, address in enumerate(addresses):
                    try:
                        await loop.create_connection(
                            lambda: channel,
                            address,
                            upstream.port,
                            ssl=ssl_context,
                            server_hostname=upstream.host if ssl_context is not None else None,
                        )
                        break
                    except OSError:
                        if index == len(addresses) - 1:
                            raise
        except TimeoutError as exc:
            raise UpstreamConnectTimeout(f"connect to {upstream.host}:{upstream.port} timed out") from exc
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamConnectError(f"connect to {upstream.host}:{upstream.port} failed: {exc}") from exc
        return channel

    async def _allowed_addresses(self, upstream: Upstream, policy: TargetPolicy) -> list[str]:
        """The addresses `upstream.host` resolves to that `policy` allows, in resolver order (numeric, so
        connecting to them resolves nothing again). UpstreamTargetRefused when there are none."""
        infos = await self._loop.getaddrinfo(
            upstream.host, upstream.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
        allowed: list[str] = []
        refusals: list[str] = []
        for _family, _type, _proto, _name, sockaddr in infos:
            text = str(sockaddr[0])
            refusal = policy.refusal(ipaddress.ip_address(text.split("%", 1)[0]), upstream.port)
            if refusal is None:
                if text not in allowed:
                    allowed.append(text)
            else:
                refusals.append(refusal)
        if not allowed:
            if self._on_target_refused is not None:
                self._on_target_refused()
            log.debug("upstream %s refused: %s", upstream.url, refusals)
            raise UpstreamTargetRefused(refusals[0] if refusals else f"{upstream.host} has no address")
        return allowed

    def release(self, key: OriginKey, channel: UpstreamConnection, head: ResponseHead) -> None:
        """Return a connection whose exchange (answered by `head`) finished; anything that did not end
        cleanly, or whose upstream sent more than it framed, is closed."""
        if not channel.reusable(head):
            if channel.phase is Phase.BROKEN:
                channel.abort()  # its framing cannot be trusted: no graceful close either
            else:
                channel.close()
            return
        idle = self._idle.setdefault(key, deque())
        if len(idle) >= self._max_idle:
            idle.popleft().close()
        channel.park(time.monotonic())
        idle.append(channel)
        if self._sweeper is None:
            self._sweeper = self._loop.call_later(self._idle_seconds, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        now = time.monotonic()
        remaining = 0
        for key, idle in list(self._idle.items()):
            while idle and (_unusable(idle[0]) or now - idle[0].idle_since >= self._idle_seconds):
                idle.popleft().close()
            for channel in [c for c in idle if _unusable(c)]:
                idle.remove(channel)
            if not idle:
                del self._idle[key]
            remaining += len(idle)
        if remaining:
            self._sweeper = self._loop.call_later(self._idle_seconds / 2, self._sweep)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for idle in self._idle.values():
            for channel in idle:
                channel.close()
        self._idle.clear()

    @property
    def idle_count(self) -> int:
        return sum(len(d) for d in self._idle.values())


def _unusable(channel: UpstreamConnection) -> bool:
    return channel.closed or channel.phase is not Phase.POOL
