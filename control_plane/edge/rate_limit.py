"""Per-client-IP rate limits in Redis, shared by every control-plane replica (issue 9, item 8).

Buckets, chosen by path (the OAuth endpoints answer at the root and under the issuer's path):
  register     /register, /register/{id}                          RATE_LIMIT_REGISTER
  token        /token, /introspect, /revoke, /device/token        RATE_LIMIT_TOKEN
  interactive  /authorize, /authorize/consent, /callback, /device/code,
               /consents, /consents/revoke                         RATE_LIMIT_INTERACTIVE
  api-auth     management API requests answered 401 (guessing tokens)   RATE_LIMIT_API_AUTH_FAILURES
Each allows N requests per RATE_LIMIT_WINDOW_SECONDS per client (IPv4 address, or IPv6 /64, since one
host holds a whole /64), as a sliding window estimated from two fixed-window counters (two small keys per
client and bucket, whatever the rate). Over the limit: 429 with Retry-After, and nothing reaches the handler.
The api-auth bucket counts only failures (401s); once an address is over it, every management-API request
from it waits, a good token included: letting requests through and only hiding their 401s would still
tell a guesser which token worked.
If Redis cannot be reached the request goes on (logged): the handlers answer 503 themselves then.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import keys
from shared.config import Settings

from .answers import send_error
from .client_address import client_ip

log = logging.getLogger(__name__)

# KEYS: this window's counter, the previous window's. ARGV: limit, window seconds, seconds into this window,
# mode (1: count this request if allowed; 0: only check; 2: count unconditionally).
# Returns 0 when allowed, else the seconds until the estimate drops below the limit.
_SLIDING_WINDOW = """
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local elapsed = tonumber(ARGV[3])
local mode = tonumber(ARGV[4])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if mode == 2 then
  redis.call('INCR', KEYS[1])
  redis.call('EXPIRE', KEYS[1], window * 2)
  return 0
end
local previous = tonumber(redis.call('GET', KEYS[2]) or '0')
local estimate = previous * (window - elapsed) / window + current
if estimate >= limit then
  local wait
  if current >= limit then
    wait = (window - elapsed) + window * (1 - limit / current)
  else
    wait = (window - elapsed) - (limit - current) * window / previous
  end
  return math.max(1, math.ceil(wait))
end
if mode == 1 then
  redis.call('INCR', KEYS[1])
  redis.call('EXPIRE', KEYS[1], window * 2)
end
return 0
"""

_REGISTER = ("/register",)
_TOKEN = frozenset({"/token", "/introspect", "/revoke", "/device/token"})
_INTERACTIVE = frozenset(
    {"/authorize", "/authorize/consent", "/callback", "/device/code", "/consents", "/consents/revoke"}
)
API_AUTH = "api-auth"


def bucket_for(path: str, issuer_path: str = "") -> str | None:
    if issuer_path and path.startswith(issuer_path + "/"):
        path = path[len(issuer_path) :]
    if path == "/register" or path.startswith("/register/"):
        return "register"
    if path in _TOKEN:
        return "token"
    if path in _INTERACTIVE:
        return "interactive"
    if path.startswith("/api/"):
        return API_AUTH
    return None


def client_key(ip: str) -> str:
    """IPv4 addresses one by one; IPv6 by /64 (a single host gets a whole /64 to rotate through)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip or "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


@dataclass(frozen=True, slots=True)
class Limits:
    window_seconds: int
    per_bucket: dict[str, int]  # 0 = no limit

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            settings.RATE_LIMIT_WINDOW_SECONDS,
            {
                "register": settings.RATE_LIMIT_REGISTER,
                "token": settings.RATE_LIMIT_TOKEN,
                "interactive": settings.RATE_LIMIT_INTERACTIVE,
                API_AUTH: settings.RATE_LIMIT_API_AUTH_FAILURES,
            },
        )


class RateLimiter:
    def __init__(self, redis: aioredis.Redis, limits: Limits) -> None:
        self._redis = redis
        self._limits = limits
        self._script = redis.register_script(_SLIDING_WINDOW)

    def limit(self, bucket: str) -> int:
        return self._limits.per_bucket.get(bucket, 0)

    async def hit(self, bucket: str, client: str, *, mode: int) -> int:
        """0 when allowed (counted per `mode`), else seconds to wait. Redis trouble: allowed (logged)."""
        limit = self.limit(bucket)
        if limit <= 0:
            return 0
        window = self._limits.window_seconds
        now = time.time()
        index = int(now // window)
        try:
            wait = await self._script(
                keys=[keys.rate_limit(bucket, client, index), keys.rate_limit(bucket, client, index - 1)],
                args=[limit, window, now - index * window, mode],
            )
        except (RedisError, OSError) as exc:
            log.warning("rate limit check failed (%s); letting the request through", type(exc).__name__)
            return 0
        return int(wait)


class RateLimit:
    """ASGI middleware applying the buckets above; needs the app's RateLimiter at request time."""

    def __init__(self, app: ASGIApp, *, issuer_path: str = "") -> None:
        self.app = app
        self.issuer_path = issuer_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        bucket = bucket_for(scope["path"], self.issuer_path)
        runtime = getattr(scope["app"].state, "runtime", None)
        limiter: RateLimiter | None = getattr(runtime, "rate_limiter", None)
        if bucket is None or limiter is None or limiter.limit(bucket) <= 0:
            await self.app(scope, receive, send)
            return
        assert runtime is not None
        client = client_key(client_ip(scope, runtime.settings.trusted_proxy_networks))
        wait = await limiter.hit(bucket, client, mode=0 if bucket == API_AUTH else 1)
        if wait:
            await _too_many(scope, send, wait)
            return
        if bucket != API_AUTH:
            await self.app(scope, receive, send)
            return
        status = 0

        async def watching_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        await self.app(scope, receive, watching_send)
        if status == 401:
            await limiter.hit(API_AUTH, client, mode=2)


async def _too_many(scope: Scope, send: Send, wait: int) -> None:
    message = f"too many requests from this address; retry after {wait} s"
    headers = [(b"retry-after", str(wait).encode()), (b"cache-control", b"no-store")]
    await send_error(scope, send, 429, "temporarily_unavailable", message, headers)
