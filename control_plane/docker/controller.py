"""The service controller: makes the engine run what the service records say, and records what it sees.

`converge(name)` runs under the service's lease lock (one replica at a time per service), reads the record,
the last status and the engine's containers for that service, asks reconcile.decide what to do, does it,
and writes the observed status and, for a running service, its endpoint (where `service://NAME` goes; a
change there bumps the config version, so every proxy and route using the service follows at once).

Failures are sorted the way engine.py sorts them: the engine refusing something (unknown image, failed pull
or build, a limit it will not take, a port it cannot bind) marks the attempt failed with the engine's own
message and leaves nothing half-made (a container that was created but would not start is removed);
the engine not answering is raised, so the event is retried and the service is not marked failed.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

import redis.asyncio as aioredis

from shared import keys
from shared.config import Settings
from shared.encryption import EncryptionError, Keyring
from shared.models import ADMIN_OWNER, ServiceEndpoint

from ..lease_locks import LeaseLocks, LockBusy
from ..store import ConfigWrite, Reader, Store
from .container_config import container_config, container_name, endpoint_url, our_labels
from .engine import ContainerInfo, Engine, EngineNotFound, EngineRefused, NameInUse
from .images import BuildContextRefused, build_base, build_tag, context_tar, resolve_context
from .reconcile import CreateAndStart, Remove, Restart, Start, Stop, current_container, decide, observed_state
from .records import endpoints, secret_context, service_records, service_status
from .spec import ServiceRecord, ServiceStatus
from .workflow import request_converge

log = logging.getLogger(__name__)

# How long a converge waits for another replica holding the same service; then the event is queued again.
LOCK_WAIT_SECONDS = 10.0

# Status is not config: it is written outside the config transaction, but only while the service exists
# (the API deletes record and status together; a late write must not bring the status back).
_PUT_STATUS_IF_SERVICE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  return 1
end
return 0
"""


class AttemptFailed(Exception):
    """The engine (or the build context, or a secret) refused this attempt; `detail` is shown to the user."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


async def deployment_id(redis: aioredis.Redis) -> str:
    """This deployment's id: made once (SET NX) and shared by every replica."""
    await redis.set(keys.deployment_id(), secrets.token_hex(8), nx=True)
    value = await redis.get(keys.deployment_id())
    return str(value)


class ServiceController:
    def __init__(self, store: Store, engine: Engine, settings: Settings) -> None:
        self._store = store
        self._redis: aioredis.Redis = store.redis
        self._engine = engine
        self._settings = settings
        self._locks = LeaseLocks(
            self._redis,
            key=keys.service_lock,
            lease_seconds=settings.SERVICE_LOCK_LEASE_SECONDS,
            what="service",
        )
        self._deployment: str | None = None

    async def deployment(self) -> str:
        if self._deployment is None:
            self._deployment = await deployment_id(self._redis)
        return self._deployment

    async def converge(self, name: str) -> None:
        try:
            async with self._locks.hold([name], wait_seconds=LOCK_WAIT_SECONDS) as lease_lost:
                await self._converge(name, lease_lost)
        except LockBusy:
            # Another replica is converging it (maybe a long pull); look again once it is done.
            await request_converge(self._redis, name, "another replica held the service")

    async def containers_of(self, name: str) -> list[ContainerInfo]:
        found = []
        for summary in await self._engine.list_containers(our_labels(await self.deployment(), name)):
            try:
                found.append(await self._engine.inspect(summary.id))
            except EngineNotFound:
                continue  # removed in between
        return found

    async def _converge(self, name: str, lease_lost: asyncio.Event) -> None:
        reader = self._store.reader
        record = await reader.get(service_records(), name)
        status = await reader.get(service_status(), name)
        containers = await self.containers_of(name)
        steps = decide(record, status, containers)
        if record is None:
            for step in steps:
                if isinstance(step, Remove):
                    log.info(
                        "service %s: removing container %s (%s)", name, step.container_id[:12], step.reason
                    )
                    await self._engine.remove(step.container_id)
            return
        status = _fresh_status(record, status)
        try:
            for step in steps:
                status = await self._carry_out(record, status, step, lease_lost)
        except AttemptFailed as exc:
            log.warning("service %s generation %d failed: %s", name, record.generation, exc.detail)
            status = status.model_copy(
                update={"state": "failed", "error": exc.detail[:4000], "failed_attempt": record.attempt_key}
            )
            await self._put_status(status, lease_lost)
            return
        current = current_container(record, await self.containers_of(name))
        status = _observe(record, status, current)
        await self._put_status(status, lease_lost)
        if current is not None and current.running:
            await self._put_endpoint(record, current)

    async def _carry_out(
        self,
        record: ServiceRecord,
        status: ServiceStatus,
        step: Remove | CreateAndStart | Start | Stop | Restart,
        lease_lost: asyncio.Event,
    ) -> ServiceStatus:
        stop_seconds = self._settings.SERVICE_STOP_TIMEOUT_SECONDS
        done = {"start_seq_done": record.start_seq, "restart_seq_done": record.restart_seq}
        if isinstance(step, Remove):
            log.info(
                "service %s: removing container %s (%s)", record.name, step.container_id[:12], step.reason
            )
            await self._engine.remove(step.container_id)
        elif isinstance(step, CreateAndStart):
            return await self._create_and_start(record, status, lease_lost)
        elif isinstance(step, Start):
            await self._start(record, step.container_id)
            return status.model_copy(update=done)
        elif isinstance(step, Stop):
            await self._engine.stop(step.container_id, stop_seconds)
        else:
            try:
                await self._engine.restart(step.container_id, stop_seconds)
            except EngineRefused as exc:
                raise AttemptFailed(exc.detail) from exc
            return status.model_copy(update=done)
        return status

    async def _create_and_start(
        self, record: ServiceRecord, status: ServiceStatus, lease_lost: asyncio.Event
    ) -> ServiceStatus:
        image = await self._ensure_image(record, status, lease_lost)
        await self._put_status(status.model_copy(update={"state": "creating", "image": image}), lease_lost)
        config = container_config(
            record,
            image=image,
            environment=self._plain_environment(record),
            deployment=await self.deployment(),
            stop_timeout_seconds=self._settings.SERVICE_STOP_TIMEOUT_SECONDS,
        )
        name = container_name(await self.deployment(), record.name, record.generation)
        try:
            container_id = await self._engine.create(config, name)
            log.info("service %s: created container %s (generation %d)", record.name, name, record.generation)
        except NameInUse:
            # Made by an earlier try of this very generation (a retried event): adopt it, never a second one.
            container_id = (await self._engine.inspect(name)).id
            log.info("service %s: adopted existing container %s", record.name, name)
        except EngineRefused as exc:
            raise AttemptFailed(exc.detail) from exc
        await self._start(record, container_id)
        return status.model_copy(
            update={
                "image": image,
                "start_seq_done": record.start_seq,
                "restart_seq_done": record.restart_seq,
            }
        )

    async def _start(self, record: ServiceRecord, container_id: str) -> None:
        try:
            await self._engine.start(container_id)
        except EngineRefused as exc:
            # Nothing half-made stays behind: the container that will not start is removed.
            await self._engine.remove(container_id)
            raise AttemptFailed(exc.detail) from exc

    async def _ensure_image(
        self, record: ServiceRecord, status: ServiceStatus, lease_lost: asyncio.Event
    ) -> str:
        spec = record.spec
        try:
            if spec.image is not None:
                present = await self._engine.image_present(spec.image)
                if spec.pull == "never" and not present:
                    raise AttemptFailed(f"No such image: {spec.image} (pull is 'never', so it is not pulled)")
                if spec.pull == "always" or not present:
                    await self._put_status(status.model_copy(update={"state": "pulling"}), lease_lost)
                    await self._engine.pull(spec.image)
                return spec.image
            assert spec.build is not None
            base = build_base(
                self._settings.DOCKER_BUILD_ROOT, record.owner, is_admin=record.owner == ADMIN_OWNER
            )
            directory = resolve_context(base, spec.build.context, spec.build.dockerfile)
            context = await asyncio.to_thread(
                context_tar, directory, max_bytes=self._settings.DOCKER_BUILD_MAX_CONTEXT_BYTES
            )
            tag = build_tag(record.name, context, spec.build.dockerfile, spec.build.args)
            if not await self._engine.image_present(tag):
                await self._put_status(status.model_copy(update={"state": "building"}), lease_lost)
                await self._engine.build(
                    context,
                    tag=tag,
                    dockerfile=spec.build.dockerfile,
                    buildargs=spec.build.args,
                    labels=our_labels(await self.deployment(), record.name),
                )
            return tag
        except BuildContextRefused as exc:
            raise AttemptFailed(exc.detail) from exc
        except EngineRefused as exc:
            raise AttemptFailed(exc.detail) from exc

    def _plain_environment(self, record: ServiceRecord) -> dict[str, str]:
        environment = record.spec.environment
        if not any(value.secret for value in environment.values()):
            return {key: value.value for key, value in environment.items()}
        try:
            keyring = Keyring.from_settings(self._settings)
            return {
                key: (
                    keyring.decrypt(value.value, context=secret_context(record.name, key)).decode("utf-8")
                    if value.secret
                    else value.value
                )
                for key, value in environment.items()
            }
        except EncryptionError as exc:
            raise AttemptFailed(f"a secret environment value cannot be decrypted: {exc}") from exc

    async def _put_status(self, status: ServiceStatus, lease_lost: asyncio.Event) -> None:
        if lease_lost.is_set():
            return  # another replica owns the service now; its view wins
        status = status.model_copy(update={"updated_at": time.time()})
        await self._redis.eval(  # type: ignore[misc]
            _PUT_STATUS_IF_SERVICE,
            2,
            keys.services(),
            keys.service_status(),
            status.name,
            status.model_dump_json(),
        )

    async def _put_endpoint(self, record: ServiceRecord, current: ContainerInfo) -> None:
        url = endpoint_url(record, current, service_host=self._settings.DOCKER_SERVICE_HOST)
        if url is None:
            return

        async def plan(reader: Reader) -> ConfigWrite:
            write = ConfigWrite()
            now_record = await reader.get(service_records(), record.name)
            stored = await reader.get(endpoints(), record.name)
            if now_record is None or now_record.generation != record.generation:
                return write  # deleted or changed meanwhile: the next converge decides
            if stored is not None and stored.url == url and stored.kind == "managed":
                return write
            endpoint = ServiceEndpoint(
                name=record.name,
                url=url,
                kind="managed",
                owner=record.owner,
                created_at=stored.created_at if stored else time.time(),
            )
            write.put(endpoints(), record.name, endpoint)
            write.change("service", "updated", record.name, record.owner)
            return write

        if await self._store.transact(plan) is not None:
            log.info("service %s: endpoint is now %s", record.name, url)


def _fresh_status(record: ServiceRecord, status: ServiceStatus | None) -> ServiceStatus:
    """The status to build on; a new attempt clears the last failure, a new generation its container facts."""
    if status is None:
        return ServiceStatus(name=record.name)
    update: dict[str, object] = {}
    if status.failed_attempt and status.failed_attempt != record.attempt_key:
        update.update(failed_attempt="", error="")
    if status.generation != record.generation:
        update.update(restart_count=0, exit_code=None, oom_killed=False, health="")
    return status.model_copy(update=update) if update else status


def _observe(record: ServiceRecord, status: ServiceStatus, info: ContainerInfo | None) -> ServiceStatus:
    failed = status.failed_attempt == record.attempt_key
    update: dict[str, object] = {"state": observed_state(record, info, failed=failed)}
    if info is not None:
        update.update(
            generation=record.generation,
            container_id=info.id,
            container_name=info.name,
            restart_count=info.restart_count,
            health=info.health,
            started_at=info.started_at,
            finished_at=info.finished_at,
            exit_code=None if info.running else info.exit_code,
            oom_killed=info.oom_killed,
        )
        if info.oom_killed:
            update["last_oom_at"] = info.finished_at or time.time()
        if not failed:
            update["error"] = info.error if info.error and not info.running else ""
    else:
        update.update(container_id="", container_name="")
    return status.model_copy(update=update)
