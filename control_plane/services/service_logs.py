"""Logs and stats of a service's container (`GET /api/v1/services/{name}/logs|stats`), read from the engine
for the owner or the admin. The container is the one the controller last recorded in the service's status:
a service that has none yet (pending, created stopped, failed before a container existed) has an empty log
and zero stats, without asking the engine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

from ..docker.engine import ContainerInfo, Engine, EngineNotFound, EngineRefused, EngineUnavailable
from ..docker.records import service_records, service_status
from ..docker.spec import ServiceRecord
from ..docker.stats import summarize
from ..errors import Conflict, Unavailable
from ..principal import Principal
from ..store import Store
from .owned import read_owned
from .service_spec import ServiceStats

MAX_LOG_TAIL = 10_000


class ServiceLogs:
    def __init__(self, store_: Store, engine: Engine | None) -> None:
        self._store = store_
        self._engine = engine

    def _require_engine(self) -> Engine:
        if self._engine is None:
            raise Unavailable("Docker-managed services are off: the operator has not set DOCKER_URL")
        return self._engine

    async def _container(self, principal: Principal, name: str) -> tuple[ServiceRecord, ContainerInfo | None]:
        """The service's container as the controller last recorded it (None when it has none yet)."""
        engine = self._require_engine()
        reader = self._store.reader
        record = await read_owned(reader, principal, service_records(), "service", name)
        status = await reader.get(service_status(), name)
        if status is None or not status.container_id:
            return record, None
        try:
            return record, await engine.inspect(status.container_id)
        except EngineNotFound:
            return record, None  # removed since; the controller records the next one
        except EngineUnavailable as exc:
            raise Unavailable(f"the Docker engine does not answer: {exc.detail}") from exc

    async def logs(
        self, principal: Principal, name: str, *, tail: int, since: float | None, timestamps: bool
    ) -> str:
        engine = self._require_engine()
        _record, container = await self._container(principal, name)
        if container is None:
            return ""  # no container yet (pending, or created stopped): nothing has logged
        try:
            return await engine.logs(
                container.id, tail=min(tail, MAX_LOG_TAIL), since=since, timestamps=timestamps
            )
        except EngineNotFound:
            return ""
        except EngineUnavailable as exc:
            raise Unavailable(f"the Docker engine does not answer: {exc.detail}") from exc
        except EngineRefused as exc:
            raise Conflict(f"the engine refused to read the logs: {exc.detail}") from exc

    async def follow_logs(
        self, principal: Principal, name: str, *, tail: int, since: float | None, timestamps: bool
    ) -> AsyncIterator[str]:
        """The log from `tail` on, then as it is written, until the container stops or the client leaves.
        Ownership and the container are checked before the first byte (errors are proper statuses)."""
        engine = self._require_engine()
        _record, container = await self._container(principal, name)

        async def stream() -> AsyncIterator[str]:
            if container is None:
                return
            try:
                async for chunk in engine.follow_logs(
                    container.id, tail=min(tail, MAX_LOG_TAIL), since=since, timestamps=timestamps
                ):
                    yield chunk
            except (EngineNotFound, EngineUnavailable):
                return  # the container or the engine went away: the stream ends

        return stream()

    async def stats(self, principal: Principal, name: str) -> ServiceStats:
        engine = self._require_engine()
        record, container = await self._container(principal, name)
        status = await self._store.reader.get(service_status(), name)
        raw: dict[str, Any] = {}
        if container is not None and container.running:
            try:
                raw = await engine.stats(container.id)
            except EngineNotFound:
                raw = {}
            except EngineUnavailable as exc:
                raise Unavailable(f"the Docker engine does not answer: {exc.detail}") from exc
        summary = dataclasses.asdict(summarize(raw))
        summary["memory_limit_bytes"] = summary["memory_limit_bytes"] or record.spec.memory_limit_bytes
        return ServiceStats(
            name=name,
            state=status.state if status else "pending",
            container_id=container.id if container else "",
            restarts=container.restart_count if container else 0,
            oom_killed=bool(status and status.oom_killed),
            **summary,
        )
