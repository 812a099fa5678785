"""The control plane's runtime: one Redis pool, the store and the services, built once per app lifespan.

No module-level singletons: the lifespan builds a Runtime and keeps it on `app.state.runtime`; request
handlers reach it through the dependencies in api/deps.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from shared.config import Settings
from shared.target_policy import TargetPolicy

from .cascade import CascadeRegistry
from .edge.rate_limit import Limits, RateLimiter
from .oauth.server import OAuthServer
from .services.auth_config import AuthConfigService, delete_owned_auth_configs
from .services.certificates import CertificateService, delete_owned_certificates
from .services.hostname_claims import reserved_hostnames
from .services.oauth_clients import PreRegisteredClients
from .services.proxies import ProxyService, delete_owned_proxies
from .services.routes import RouteService, delete_owned_routes
from .services.tokens import TokenService
from .store import Store


def default_cascade() -> CascadeRegistry:
    """Every resource kind that a token can own registers its cleanup here."""
    registry = CascadeRegistry()
    registry.register("proxy", delete_owned_proxies)
    registry.register("route", delete_owned_routes)
    registry.register("certificate", delete_owned_certificates)
    registry.register("auth", delete_owned_auth_configs)
    return registry


@dataclass(frozen=True, slots=True)
class Runtime:
    settings: Settings
    redis: aioredis.Redis
    store: Store
    tokens: TokenService
    proxies: ProxyService
    routes: RouteService
    certificates: CertificateService
    auth_config: AuthConfigService
    oauth: OAuthServer
    oauth_clients: PreRegisteredClients
    rate_limiter: RateLimiter

    @classmethod
    def build(cls, settings: Settings, redis: aioredis.Redis) -> Runtime:
        store = Store(redis)
        certificates = CertificateService(store, settings)
        oauth = OAuthServer(settings, redis, store)
        targets = TargetPolicy.from_settings(settings)
        return cls(
            settings=settings,
            redis=redis,
            store=store,
            tokens=TokenService(store, default_cascade()),
            proxies=ProxyService(
                store,
                reserved=reserved_hostnames(settings),
                targets=targets,
                on_saved=certificates.want_for_proxy,
            ),
            routes=RouteService(store, targets=targets),
            certificates=certificates,
            auth_config=AuthConfigService(store, settings),
            oauth=oauth,
            oauth_clients=PreRegisteredClients(oauth.state),
            rate_limiter=RateLimiter(redis, Limits.from_settings(settings)),
        )
