"""Keep the issuer reachable: the built-in proxy AUTH_HOST -> this control plane, and the published JWKS.

On startup (and until it succeeds, Redis may be down) the control plane makes sure that
- the signing-key ring exists in Redis (key_ring.py creates it on first use, and writes the JWKS that
  data planes verify tokens with alongside it);
- the proxy `settings.auth_host` exists, owned by admin, pointing at the control plane's API listener
  (created through ProxyService so the certificate hook sees it like any HTTPS proxy); an existing proxy of
  that name is left as the operator set it.
Only when the authorization server is configured (KEK present).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from redis.exceptions import RedisError

from shared.config import Settings
from shared.models import ProxyTarget

from ..errors import Conflict, ControlPlaneError
from ..principal import ADMIN
from ..services.proxies import ProxyService, ProxyTargetCreate
from .errors import OAuthError

log = logging.getLogger(__name__)

RETRY_SECONDS = 5.0


def control_plane_url(settings: Settings) -> str:
    host = settings.API_HOST
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.API_PORT}"


async def ensure_auth_host_proxy(settings: Settings, proxies: ProxyService) -> ProxyTarget | None:
    try:
        return await proxies.create(
            ADMIN,
            ProxyTargetCreate(hostname=settings.auth_host, target_url=control_plane_url(settings)),
        )
    except Conflict:
        return None


async def keep_issuer_reachable(
    settings: Settings, proxies: ProxyService, signing_keys: Callable[[], Awaitable[object]]
) -> None:
    """Retry until the signing keys (and so the JWKS) and the auth-host proxy are in place, then return."""
    while True:
        try:
            await signing_keys()
            created = await ensure_auth_host_proxy(settings, proxies)
            if created is not None:
                log.info("created the built-in proxy %s -> %s", created.hostname, created.target_url)
            return
        except (RedisError, OSError) as exc:
            log.warning("cannot publish the issuer's proxy/JWKS yet (%s); retrying", type(exc).__name__)
        except OAuthError as exc:  # Redis down (503), or a ring this KEK cannot read: retry, loudly
            log.error("cannot load the token-signing keys yet: %s", exc.description)
        except ControlPlaneError as exc:
            log.error("cannot create the built-in proxy %s: %s", settings.auth_host, exc.detail)
            return
        await asyncio.sleep(RETRY_SECONDS)
