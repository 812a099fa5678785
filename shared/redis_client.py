"""The one Redis client factory both planes use.

Standalone Redis via a URL (`redis://` or `rediss://`), with REDIS_PASSWORD applied when the URL carries none.
The pool blocks a caller for up to POOL_WAIT_SECONDS when all its connections are busy, rather than failing
at once: a burst of concurrent API requests (two hundred port allocations, say) queues instead of erroring.
Sentinel and Cluster are not implemented yet: such URLs are refused with a clear error rather than silently
connecting to one node. All keys share a hash tag (see shared.keys), so Cluster support is a factory change.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import redis.asyncio as aioredis

from shared.config import Settings

POOL_WAIT_SECONDS = 10.0


class UnsupportedRedisUrl(ValueError):
    pass


def create_redis(settings: Settings, *, max_connections: int = 64) -> aioredis.Redis:
    url = settings.effective_redis_url
    scheme = urlsplit(url).scheme
    if scheme not in ("redis", "rediss", "unix"):
        raise UnsupportedRedisUrl(
            f"REDIS_URL scheme {scheme!r} is not supported yet; use redis://, rediss:// or unix:// "
            "(Sentinel and Cluster are planned)"
        )
    kwargs: dict[str, object] = {
        "decode_responses": True,
        "max_connections": max_connections,
        "timeout": POOL_WAIT_SECONDS,
        "socket_connect_timeout": 5,
        "health_check_interval": 15,
    }
    if settings.REDIS_PASSWORD and not urlsplit(url).password:
        kwargs["password"] = settings.REDIS_PASSWORD
    pool = aioredis.BlockingConnectionPool.from_url(url, **kwargs)
    return aioredis.Redis.from_pool(pool)
