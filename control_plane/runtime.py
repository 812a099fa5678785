"""The control plane's runtime: one Redis pool, the store and the services, built once per app lifespan.

No module-level singletons: the lifespan builds a Runtime and keeps it on `app.state.runtime`; request
handlers reach it through the dependencies in api/deps.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from shared.config import Settings
from shared.target_policy import TargetPolicy

from .audit.trails import AuditTrails
from .cascade import AfterCommit, CascadeRegistry
from .docker.controller import ServiceController
from .docker.engine import Engine
from .docker.worker import ServiceWorker
from .edge.rate_limit import Limits, RateLimiter
from .logs.service import RequestLogs
from .logs.worker import LogWorker
from .oauth.server import OAuthServer
from .services.auth_config import AuthConfigService, delete_owned_auth_configs
from .services.certificates import CertificateService, delete_owned_certificates
from .services.external_services import ExternalServices, delete_owned_external_services
from .services.hostname_claims import reserved_hostnames
from .services.oauth_clients import PreRegisteredClients
from .services.port_allocator import PortAllocator, PortPolicy
from .services.ports import PortService, delete_owned_ports
from .services.proxies import ProxyService, delete_owned_proxies
from .services.routes import RouteService, delete_owned_routes
from .services.service_logs import ServiceLogs
from .services.services import ServiceManager, delete_owned_services
from .services.tokens import TokenService
from .services.workflows import WorkflowMonitor
from .store import Store


def default_cascade(after_services_deleted: AfterCommit | None = None) -> CascadeRegistry:
    """Every resource kind that a token can own registers its cleanup here. `after_services_deleted` nudges
    the service controller to remove the containers of the services a token deletion removed."""
    registry = CascadeRegistry()
    registry.register("proxy", delete_owned_proxies)
    registry.register("route", delete_owned_routes)
    registry.register("certificate", delete_owned_certificates)
    registry.register("auth", delete_owned_auth_configs)
    registry.register("service", delete_owned_services, after_commit=after_services_deleted)
    registry.register("external-service", delete_owned_external_services)
    registry.register("port", delete_owned_ports)
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
    ports: PortService
    services: ServiceManager
    service_logs: ServiceLogs
    external_services: ExternalServices
    engine: Engine | None
    service_worker: ServiceWorker
    workflows: WorkflowMonitor
    audit: AuditTrails
    request_logs: RequestLogs
    log_worker: LogWorker

    @classmethod
    def build(cls, settings: Settings, redis: aioredis.Redis) -> Runtime:
        audit = AuditTrails.build(settings, redis)
        store = Store(redis, audit=audit.changes)
        certificates = CertificateService(store, settings)
        oauth = OAuthServer(settings, redis, store, audit=audit.oauth)
        targets = TargetPolicy.from_settings(settings)
        proxies = ProxyService(
            store,
            reserved=reserved_hostnames(settings),
            targets=targets,
            on_saved=certificates.want_for_proxy,
        )
        allocator = PortAllocator(redis, PortPolicy.from_settings(settings))
        # No DOCKER_URL: no engine and no controller; the managed-services API answers 503.
        engine = Engine(settings.DOCKER_URL) if settings.DOCKER_URL else None
        controller = ServiceController(store, engine, settings) if engine is not None else None
        worker = ServiceWorker(store, settings, allocator, engine=engine, controller=controller)

        async def services_deleted(_owner: str) -> None:
            if controller is not None:
                await worker.reconcile_all("a token and its services were deleted")

        services = ServiceManager(
            store, settings, proxies=proxies, ports=allocator, engine=engine, controller=controller
        )
        return cls(
            settings=settings,
            redis=redis,
            store=store,
            tokens=TokenService(store, default_cascade(services_deleted)),
            proxies=proxies,
            routes=RouteService(store, targets=targets),
            certificates=certificates,
            auth_config=AuthConfigService(store, settings),
            oauth=oauth,
            oauth_clients=PreRegisteredClients(oauth.state),
            rate_limiter=RateLimiter(redis, Limits.from_settings(settings)),
            ports=PortService(store, allocator),
            services=services,
            service_logs=ServiceLogs(store, engine),
            external_services=ExternalServices(store, targets=targets),
            engine=engine,
            service_worker=worker,
            workflows=WorkflowMonitor(redis, store.reader, certificates, services),
            audit=audit,
            request_logs=RequestLogs(store, settings),
            log_worker=LogWorker(redis, settings),
        )
