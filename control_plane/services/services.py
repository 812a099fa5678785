"""Docker-managed services through the API: create, list, show, update, delete, start/stop/restart.

The API only writes desired state (docker/spec.py ServiceRecord) and queues a "look at it" event; the
controller (docker/controller.py) does the engine's part and records what it sees. So a create answers
at once with the service `pending`, and a bad image, a failed build or a limit the engine refuses shows up
as `failed` with the engine's message on the next read.

Ownership works like proxies: an ordinary token sees and changes only its own services (403, 404 when
absent), within the rules of service_policy.py. A create allocates the service's host ports first (atomic
across replicas, port_allocator.py), then writes the record and its auto proxy with its protection (same
ProxyService rules as any proxy: ownership, names, HTTPS, OAuth) in one transaction; if anything refuses,
the ports are released and nothing is left behind. Deleting a service deletes, in one transaction, its
record, status, endpoint, ports and auto proxy (with its protection); the controller then removes the
container. A service that other proxies or routes still target is not deleted (409). Logs and stats are
service_logs.py. Without DOCKER_URL every call answers 503.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError
from redis.exceptions import RedisError

from shared.config import Settings
from shared.encryption import EncryptionError, Keyring
from shared.models import ProxyAuthConfig, ProxyResource, service_reference

from .. import store
from ..docker.controller import ServiceController
from ..docker.engine import Engine
from ..docker.records import endpoints, secret_context, service_records, service_status
from ..docker.spec import RESERVED_SERVICE_NAMES, EnvValue, ServicePort, ServiceRecord, ServiceSpec
from ..docker.workflow import request_converge
from ..errors import Conflict, InvalidInput, Unavailable, invalid_from_validation
from ..principal import Principal, require_current
from ..store import ConfigWrite, HashDelete, HashPut, Reader, Store
from .auth_config import proxy_auth_collection, proxy_resource_collection
from .owned import read_owned
from .port_allocator import PortAllocation, PortAllocator, port_allocations
from .proxies import ProxyService
from .service_policy import ServicePolicy, token_grants
from .service_refs import in_use_refusal, service_owner, targets_of
from .service_spec import SecretValue, ServiceCreate, ServiceSettings, ServiceView

log = logging.getLogger(__name__)


def _invalid(field: str, message: str) -> InvalidInput:
    return InvalidInput(
        f"{field}: {message}", [{"loc": ["body", field], "msg": message, "type": "value_error"}]
    )


class ServiceManager:
    def __init__(
        self,
        store_: Store,
        settings: Settings,
        *,
        proxies: ProxyService,
        ports: PortAllocator,
        engine: Engine | None,
        controller: ServiceController | None,
    ) -> None:
        self._store = store_
        self._settings = settings
        self._proxies = proxies
        self._ports = ports
        self._engine = engine
        self._controller = controller
        self._policy = ServicePolicy(settings)

    def _require_docker(self) -> tuple[Engine, ServiceController]:
        if self._engine is None or self._controller is None:
            raise Unavailable(
                "Docker-managed services are off: the operator has not set DOCKER_URL "
                "(external services under /api/v1/services/external/ work without it)"
            )
        return self._engine, self._controller

    # ---- reads

    async def list(self, principal: Principal) -> list[ServiceView]:
        self._require_docker()
        reader = self._store.reader
        records = await reader.all(service_records())
        statuses = await reader.all(service_status())
        urls = await reader.all(endpoints())
        return [
            ServiceView.of(record, statuses.get(name), urls[name].url if name in urls else None)
            for name, record in sorted(records.items())
            if principal.can_access(record.owner)
        ]

    async def get(self, principal: Principal, name: str) -> ServiceView:
        return (await self.get_with_record(principal, name))[1]

    async def get_with_record(self, principal: Principal, name: str) -> tuple[ServiceRecord, ServiceView]:
        """The stored record (for the API's ETag) and the view of it."""
        self._require_docker()
        reader = self._store.reader
        record = await read_owned(reader, principal, service_records(), "service", name)
        return record, await self._view(reader, record)

    async def _view(self, reader: Reader, record: ServiceRecord) -> ServiceView:
        endpoint = await reader.get(endpoints(), record.name)
        return ServiceView.of(
            record, await reader.get(service_status(), record.name), endpoint.url if endpoint else None
        )

    # ---- create

    async def create(self, principal: Principal, body: ServiceCreate) -> ServiceView:
        self._require_docker()
        if body.name in RESERVED_SERVICE_NAMES:
            raise _invalid("name", f"{body.name!r} is reserved")
        reader = self._store.reader
        await require_current(reader, principal)
        spec = self._spec(body.name, body, current=None)
        self._policy.check(principal, await token_grants(reader, principal), spec, owner=principal.owner)
        proxy = None
        if body.auto_proxy is not None:
            hostname = body.auto_proxy.hostname or f"{body.name}.{self._settings.BASE_DOMAIN}"
            proxy_settings = body.auto_proxy.model_dump(exclude={"hostname", "auth", "resource"})
            proxy = self._proxies.new_proxy(
                principal, hostname, {**proxy_settings, "target_url": f"service://{body.name}"}
            )
        allocated = await self._allocate(principal.owner, body.name, spec, keep=[])
        spec = spec.model_copy(update={"ports": [port for port, _ in allocated]})
        now = time.time()
        record = ServiceRecord(
            name=body.name,
            owner=principal.owner,
            spec=spec,
            desired_state="running" if body.start else "stopped",
            auto_proxy=proxy.hostname if proxy is not None else None,
            created_at=now,
            updated_at=now,
        )

        async def plan(reader: Reader) -> ConfigWrite:
            await require_current(reader, principal)
            if await service_owner(reader, body.name) is not None:
                raise Conflict(f"service {body.name!r} already exists")
            write = ConfigWrite()
            if proxy is not None:
                write.extend(await self._proxies.plan_create(reader, principal, proxy))
                write.extend(_protection(body, proxy.hostname, proxy.owner))
            write.put(service_records(), record.name, record)
            write.about(service_records(), record.name, f"service {record.name!r}")
            write.change("service", "created", record.name, record.owner)
            return write

        await self._transact_releasing(plan, allocated)
        if proxy is not None:
            await self._proxies.saved(proxy)
        await self._nudge(record.name, "created")
        return await self._view(self._store.reader, record)

    def _spec(self, name: str, body: ServiceSettings, *, current: ServiceRecord | None) -> ServiceSpec:
        """The stored spec for `body`: defaults filled in, secrets encrypted (or kept when sent valueless)."""
        settings = self._settings
        environment: dict[str, EnvValue] = {}
        keyring: Keyring | None = None
        for key, value in body.environment.items():
            if not isinstance(value, SecretValue):
                environment[key] = EnvValue(value=value)
                continue
            if value.value is None:
                stored = current.spec.environment.get(key) if current is not None else None
                if stored is None or not stored.secret:
                    raise _invalid(f"environment.{key}", "a secret that is not stored yet needs its value")
                environment[key] = stored
                continue
            try:
                keyring = keyring or Keyring.from_settings(settings)
                sealed = keyring.encrypt(value.value.encode("utf-8"), context=secret_context(name, key))
            except EncryptionError as exc:
                raise _invalid(f"environment.{key}", f"cannot store a secret value: {exc}") from exc
            environment[key] = EnvValue(value=sealed, secret=True)
        data = body.model_dump(exclude={"environment", "name", "auto_proxy", "start"})
        data.update(
            environment=environment,
            memory_limit=body.memory_limit or settings.SERVICE_DEFAULT_MEMORY_LIMIT,
            network_mode=body.network_mode or settings.DOCKER_DEFAULT_NETWORK,
            pids_limit=body.pids_limit or settings.SERVICE_DEFAULT_PIDS_LIMIT,
        )
        try:
            return ServiceSpec.model_validate(data)
        except ValidationError as exc:
            raise invalid_from_validation(exc) from exc

    async def _allocate(
        self, owner: str, name: str, spec: ServiceSpec, *, keep: list[ServicePort]
    ) -> list[tuple[ServicePort, PortAllocation | None]]:
        """Host ports for the spec's ports: a port of `keep` with the same name and protocol keeps its host
        port (no new allocation: None); the others are allocated now. All or none: on a refusal, what this
        call allocated is released. On the host network the container listens on the host port itself."""
        ports = spec.ports
        host_network = spec.network_mode == "host"
        kept = {(p.name, p.protocol): p for p in keep}
        out: list[tuple[ServicePort, PortAllocation | None]] = []
        try:
            for port in ports:
                wanted = port.host_port or (port.container_port if host_network else None)
                previous = kept.get((port.name, port.protocol))
                if previous is not None and wanted in (None, previous.host_port):
                    host_port = previous.host_port
                    allocation = None
                else:
                    allocation = await self._ports.allocate(
                        owner=owner,
                        bind=port.bind,
                        protocol=port.protocol,
                        purpose=f"service {name}, port {port.name}",
                        service=name,
                        port=wanted,
                    )
                    host_port = allocation.port
                update: dict[str, Any] = {"host_port": host_port}
                if host_network:
                    update["container_port"] = host_port
                out.append((port.model_copy(update=update), allocation))
        except BaseException:
            await self._release_new(out)
            raise
        return out

    async def _release_new(self, allocated: list[tuple[ServicePort, PortAllocation | None]]) -> None:
        """Release what `_allocate` allocated (None: a kept port, not this call's to release)."""
        await self._ports.release_all([allocation for _, allocation in allocated if allocation is not None])

    async def _transact_releasing(
        self, plan: store.Plan, allocated: list[tuple[ServicePort, PortAllocation | None]]
    ) -> None:
        """Run the config transaction; when it fails, the ports allocated for it go back."""
        try:
            await self._store.transact(plan)
        except BaseException:
            await self._release_new(allocated)
            raise

    # ---- update

    async def replace(self, principal: Principal, name: str, body: ServiceSettings) -> ServiceView:
        return await self._update(principal, name, lambda _current: body)

    async def patch(self, principal: Principal, name: str, changes: dict[str, Any]) -> ServiceView:
        unknown = sorted(set(changes) - set(ServiceSettings.model_fields))
        if unknown:
            raise _invalid(
                unknown[0],
                "not a settable service field"
                + (" (manage the proxy under /api/v1/proxy/targets/)" if unknown[0] == "auto_proxy" else ""),
            )

        def merge(current: ServiceRecord) -> ServiceSettings:
            base = ServiceView.of(current, None, None).settings()
            try:
                return ServiceSettings.model_validate({**base, **changes})
            except ValidationError as exc:
                raise invalid_from_validation(exc) from exc

        return await self._update(principal, name, merge)

    async def _update(
        self, principal: Principal, name: str, settings_of: Callable[[ServiceRecord], ServiceSettings]
    ) -> ServiceView:
        self._require_docker()
        reader = self._store.reader
        await require_current(reader, principal)
        current = await read_owned(reader, principal, service_records(), "service", name)
        body = settings_of(current)
        spec = self._spec(name, body, current=current)
        self._policy.check(principal, await token_grants(reader, principal), spec, owner=current.owner)
        allocated = await self._allocate(current.owner, name, spec, keep=current.spec.ports)
        spec = spec.model_copy(update={"ports": [port for port, _ in allocated]})
        changed = spec != current.spec
        new = current.model_copy(
            update={
                "spec": spec,
                "generation": current.generation + (1 if changed else 0),
                "updated_at": time.time(),
            }
        )

        async def plan(reader: Reader) -> ConfigWrite:
            await require_current(reader, principal)
            latest = await read_owned(reader, principal, service_records(), "service", name)
            if latest.generation != current.generation or latest.spec != current.spec:
                raise Conflict(f"service {name!r} changed while this update was prepared; send it again")
            write = ConfigWrite()
            write.about(service_records(), name, f"service {name!r}")
            if not changed:
                return write
            await _update_port_allocations(reader, write, name, current.spec.ports, spec.ports)
            write.put(service_records(), name, new)
            write.change("service", "updated", name, current.owner)
            return write

        await self._transact_releasing(plan, allocated)
        if changed:
            await self._nudge(name, f"updated to generation {new.generation}")
        return await self._view(self._store.reader, new)

    # ---- start / stop / restart

    async def start(self, principal: Principal, name: str) -> ServiceView:
        return await self._desire(
            principal, name, lambda r: {"desired_state": "running", "start_seq": r.start_seq + 1}, "start"
        )

    async def stop(self, principal: Principal, name: str) -> ServiceView:
        return await self._desire(principal, name, lambda r: {"desired_state": "stopped"}, "stop")

    async def restart(self, principal: Principal, name: str) -> ServiceView:
        return await self._desire(
            principal,
            name,
            lambda r: {"desired_state": "running", "restart_seq": r.restart_seq + 1},
            "restart",
        )

    async def _desire(
        self, principal: Principal, name: str, change: Callable[[ServiceRecord], dict[str, Any]], what: str
    ) -> ServiceView:
        self._require_docker()
        result: list[ServiceRecord] = []

        async def plan(reader: Reader) -> ConfigWrite:
            await require_current(reader, principal)
            current = await read_owned(reader, principal, service_records(), "service", name)
            new = current.model_copy(update={**change(current), "updated_at": time.time()})
            result[:] = [new]
            write = ConfigWrite()
            write.put(service_records(), name, new)
            write.about(service_records(), name, f"service {name!r}")
            write.change("service", "updated", name, current.owner)
            return write

        await self._store.transact(plan)
        await self._nudge(name, what)
        return await self._view(self._store.reader, result[0])

    # ---- delete

    async def delete(self, principal: Principal, name: str) -> None:
        self._require_docker()

        async def plan(reader: Reader) -> ConfigWrite:
            await require_current(reader, principal)
            record = await read_owned(reader, principal, service_records(), "service", name)
            users = await targets_of(reader, name, except_proxy=record.auto_proxy)
            if users:
                raise Conflict(in_use_refusal(name, users))
            write = ConfigWrite()
            await plan_service_removal(reader, write, record)
            write.about(service_records(), name, f"service {name!r}")
            return write

        await self._store.transact(plan)
        await self._nudge(name, "deleted")

    async def _nudge(self, name: str, reason: str) -> None:
        # After the commit: a lost event is made up for by the controller's periodic reconcile.
        try:
            await request_converge(self._store.redis, name, reason)
        except (RedisError, OSError):
            log.exception("could not queue the converge of service %s (the reconcile will)", name)


def _protection(body: ServiceCreate, hostname: str, owner: str) -> ConfigWrite:
    """The auto proxy's OAuth protection and PRM fields, written with it."""
    write = ConfigWrite()
    auto = body.auto_proxy
    if auto is None:
        return write
    if auto.auth is not None:
        if auto.auth.github_client_id or auto.auth.github_client_secret:
            raise _invalid(
                "auto_proxy.auth",
                "a per-proxy GitHub app is set on the proxy afterwards (mhp proxy auth set)",
            )
        data = auto.auth.model_dump(exclude_none=True, exclude={"github_client_id", "github_client_secret"})
        try:
            config = ProxyAuthConfig.model_validate({**data, "hostname": hostname, "owner": owner})
        except ValidationError as exc:
            raise invalid_from_validation(exc) from exc
        write.put(proxy_auth_collection(), hostname, config)
        write.change("auth", "created", hostname, owner)
    if auto.resource is not None:
        try:
            resource = ProxyResource.model_validate(
                {**auto.resource.model_dump(), "hostname": hostname, "owner": owner}
            )
        except ValidationError as exc:
            raise invalid_from_validation(exc) from exc
        write.put(proxy_resource_collection(), hostname, resource)
        write.change("auth", "created", hostname, owner)
    return write


async def _update_port_allocations(
    reader: Reader, write: ConfigWrite, name: str, old: list[ServicePort], new: list[ServicePort]
) -> None:
    """Release the host ports the new spec dropped; re-record kept ones whose bind address changed."""
    new_by_field = {f"{p.protocol}/{p.host_port}": p for p in new}
    allocations = await reader.all(port_allocations())
    for port in old:
        field = f"{port.protocol}/{port.host_port}"
        allocation = allocations.get(field)
        if allocation is None or allocation.service != name:
            continue
        kept = new_by_field.get(field)
        if kept is None:
            write.ops.append(HashDelete(port_allocations().key, field))
        elif kept.bind != allocation.bind:
            write.ops.append(
                HashPut(
                    port_allocations().key,
                    field,
                    allocation.model_copy(update={"bind": kept.bind}).model_dump_json(),
                )
            )


async def plan_service_removal(reader: Reader, write: ConfigWrite, record: ServiceRecord) -> None:
    """Everything a service is in Redis: record, status, endpoint, port allocations, and its auto proxy
    (when it still targets the service) with the proxy's protection."""
    name = record.name
    write.delete(service_records(), name)
    write.delete(service_status(), name)
    write.delete(endpoints(), name)
    for field, allocation in (await reader.all(port_allocations())).items():
        if allocation.service == name:
            write.ops.append(HashDelete(port_allocations().key, field))
    if record.auto_proxy is not None:
        proxy = await reader.get(store.proxies(), record.auto_proxy)
        reference = service_reference(proxy.target_url) if proxy is not None else None
        if proxy is not None and reference is not None and reference[0] == name:
            write.delete(store.proxies(), proxy.hostname)
            write.delete(proxy_auth_collection(), proxy.hostname)
            write.delete(proxy_resource_collection(), proxy.hostname)
            write.change("proxy", "deleted", proxy.hostname, proxy.owner)
    write.change("service", "deleted", name, record.owner)


async def delete_owned_services(reader: Reader, owner: str) -> ConfigWrite:
    """Cascade cleanup: every managed service `owner` owns (its proxies go with the proxy cleanup; the
    controller removes the containers, which are orphans from then on)."""
    write = ConfigWrite()
    for record in (await reader.all(service_records())).values():
        if record.owner == owner:
            await plan_service_removal(reader, write, record)
    return write
