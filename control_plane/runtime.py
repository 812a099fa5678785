"""The control plane's runtime: one Redis pool, the store and the services, built once per app lifespan.

No module-level singletons: the lifespan builds a Runtime and keeps it on `app.state.runtime`; request
handlers reach it through the dependencies in api/deps.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from shared.config import Settings

from .cascade import CascadeRegistry
from .oauth.server import OAuthServer
from .services.auth_config import AuthConfigService, delete_owned_auth_configs
from .services.certificates import CertificateService, delete_owned_certificates
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

    @classmethod
    def build(cls, settings: Settings, redis: aioredis.Redis) -> Runtime:
        store = Store(redis)
        certificates = CertificateService(store, settings)
        oauth = OAuthServer(settings, redis, store)
        return cls(
            settings=settings,
            redis=redis,
            store=store,
            tokens=TokenService(store, default_cascade()),
            proxies=ProxyService(store, on_saved=certificates.want_for_proxy),
            routes=RouteService(store),
            certificates=certificates,
            auth_config=AuthConfigService(store, settings),
            oauth=oauth,
            oauth_clients=PreRegisteredClients(oauth.state),
        )
