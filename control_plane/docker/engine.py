"""The Docker engine as the control plane uses it: a thin wrapper over aiodocker with typed errors.

Everything the services code needs from Docker goes through `Engine`; nothing else imports aiodocker. Errors
come in two kinds, because the controller treats them differently:
- `EngineUnavailable`: no answer (no socket, connection refused, timeout). Transient: the work is retried
  and nothing is marked failed.
- `EngineRefused`: the engine answered with an error (unknown image, a limit it refuses, a failed pull or
  build, a name in use). The service goes to `failed` with the engine's own message.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiodocker
import aiohttp
from aiodocker.events import DockerEvents

# aiodocker reports "could not connect" as a DockerError with this pseudo-status.
_NO_CONNECTION_STATUS = 900
API_TIMEOUT = aiohttp.ClientTimeout(total=60, connect=5, sock_connect=5)
STATS_TIMEOUT = aiohttp.ClientTimeout(total=15, connect=5)


class EngineError(Exception):
    def __init__(self, detail: str, status: int = 0) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status


class EngineUnavailable(EngineError):
    """The engine did not answer."""


class EngineRefused(EngineError):
    """The engine answered with an error; `detail` is its message."""


class EngineNotFound(EngineRefused):
    """No such container or image (404)."""


class NameInUse(EngineRefused):
    """A container with that name exists already (409 on create)."""


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    """What `docker inspect` says about one container, reduced to what the controller decides on."""

    id: str
    name: str
    labels: dict[str, str]
    status: str  # created | running | paused | restarting | removing | exited | dead
    running: bool
    exit_code: int
    oom_killed: bool
    error: str
    restart_count: int
    started_at: float | None
    finished_at: float | None
    health: str  # "" (no healthcheck) | starting | healthy | unhealthy
    addresses: dict[str, str]  # network name -> IP address
    memory_limit_bytes: int

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> ContainerInfo:
        state = raw.get("State") or {}
        networks = (raw.get("NetworkSettings") or {}).get("Networks") or {}
        return cls(
            id=str(raw.get("Id", "")),
            name=str(raw.get("Name", "")).lstrip("/"),
            labels=dict((raw.get("Config") or {}).get("Labels") or {}),
            status=str(state.get("Status", "")),
            running=bool(state.get("Running")),
            exit_code=int(state.get("ExitCode") or 0),
            oom_killed=bool(state.get("OOMKilled")),
            error=str(state.get("Error") or ""),
            restart_count=int(raw.get("RestartCount") or 0),
            started_at=_timestamp(state.get("StartedAt")),
            finished_at=_timestamp(state.get("FinishedAt")),
            health=str((state.get("Health") or {}).get("Status") or ""),
            addresses={
                name: str(net.get("IPAddress") or "")
                for name, net in networks.items()
                if isinstance(net, dict) and net.get("IPAddress")
            },
            memory_limit_bytes=int((raw.get("HostConfig") or {}).get("Memory") or 0),
        )


@dataclass(frozen=True, slots=True)
class ContainerSummary:
    """One row of `docker ps -a`."""

    id: str
    name: str
    labels: dict[str, str]
    status: str


def _timestamp(text: object) -> float | None:
    """Docker's RFC 3339 nanosecond times; its zero time (never started) is None."""
    if not isinstance(text, str) or not text or text.startswith("0001-"):
        return None
    head, _, rest = text.partition(".")
    zone = rest.lstrip("0123456789") if rest else text[len(head) :]
    try:
        return datetime.fromisoformat(head + (zone.replace("Z", "+00:00") or "+00:00")).timestamp()
    except ValueError:
        return None


@asynccontextmanager
async def _engine_errors() -> AsyncIterator[None]:
    """Translate aiodocker's and aiohttp's errors into ours, once, for every call."""
    try:
        yield
    except aiodocker.DockerError as exc:
        message = str(exc.message).strip() if exc.message else f"engine error {exc.status}"
        if exc.status == _NO_CONNECTION_STATUS:
            raise EngineUnavailable(message, exc.status) from exc
        if exc.status == 404:
            raise EngineNotFound(message, exc.status) from exc
        if exc.status == 409:
            raise NameInUse(message, exc.status) from exc
        raise EngineRefused(message, exc.status) from exc
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise EngineUnavailable(f"the Docker engine did not answer: {type(exc).__name__}: {exc}") from exc


class Engine:
    def __init__(self, url: str) -> None:
        self.url = url
        self._docker: aiodocker.Docker | None = None

    @property
    def _client(self) -> aiodocker.Docker:
        # Made on first use, inside the running loop (aiohttp sessions belong to one loop).
        if self._docker is None:
            self._docker = aiodocker.Docker(url=self.url, timeout=API_TIMEOUT)
        return self._docker

    async def close(self) -> None:
        if self._docker is not None:
            await self._docker.close()
            self._docker = None

    async def ping(self) -> None:
        async with _engine_errors():
            await self._client.version()

    # ---- containers

    async def list_containers(self, labels: Mapping[str, str]) -> list[ContainerSummary]:
        """Every container (running or not) carrying all of `labels`."""
        filters = json.dumps({"label": [f"{k}={v}" for k, v in labels.items()]})
        async with _engine_errors():
            rows = await self._client.containers.list(all=True, filters=filters)
        out = []
        for row in rows:
            names = (row["Names"] if "Names" in row else None) or [""]
            out.append(
                ContainerSummary(
                    id=row.id,
                    name=str(names[0]).lstrip("/"),
                    labels=dict((row["Labels"] if "Labels" in row else None) or {}),
                    status=str(row["State"] if "State" in row else ""),
                )
            )
        return out

    async def inspect(self, container: str) -> ContainerInfo:
        async with _engine_errors():
            return ContainerInfo.of(await self._client.containers.container(container).show())

    async def create(self, config: Mapping[str, Any], name: str) -> str:
        async with _engine_errors():
            created = await self._client.containers.create(dict(config), name=name)
        return created.id

    async def start(self, container: str) -> None:
        async with _engine_errors():
            await self._client.containers.container(container).start()

    async def stop(self, container: str, timeout_seconds: int) -> None:
        async with _engine_errors():
            await self._client.containers.container(container).stop(t=timeout_seconds)

    async def restart(self, container: str, timeout_seconds: int) -> None:
        async with _engine_errors():
            await self._client.containers.container(container).restart(t=timeout_seconds)

    async def remove(self, container: str) -> None:
        """Remove (killing it if it runs); an already removed container is not an error."""
        try:
            async with _engine_errors():
                await self._client.containers.container(container).delete(force=True, v=True)
        except EngineNotFound:
            return

    async def logs(self, container: str, *, tail: int, since: float | None, timestamps: bool) -> str:
        params = _log_params(tail, since, timestamps)
        async with _engine_errors():
            lines = await self._client.containers.container(container).log(stdout=True, stderr=True, **params)
        return "".join(lines)

    async def follow_logs(
        self, container: str, *, tail: int, since: float | None, timestamps: bool
    ) -> AsyncIterator[str]:
        params = _log_params(tail, since, timestamps)
        async with _engine_errors():
            stream = self._client.containers.container(container).log(
                stdout=True, stderr=True, follow=True, **params
            )
            async for chunk in stream:
                yield chunk

    async def stats(self, container: str) -> dict[str, Any]:
        """One sample (the engine waits for a second reading to compute CPU use)."""
        async with _engine_errors():
            samples = await self._client.containers.container(container).stats(
                stream=False, timeout=STATS_TIMEOUT
            )
        return dict(samples[0]) if samples else {}

    # ---- images

    async def image_present(self, reference: str) -> bool:
        try:
            async with _engine_errors():
                await self._client.images.inspect(reference)
        except EngineNotFound:
            return False
        return True

    async def pull(self, reference: str) -> None:
        """Pull from the registry; a failed pull raises EngineRefused with the registry's message."""
        async with _engine_errors():
            await self._client.images.pull(reference)

    async def build(
        self,
        context_tar: bytes,
        *,
        tag: str,
        dockerfile: str,
        buildargs: Mapping[str, str],
        labels: Mapping[str, str],
    ) -> None:
        """Build from an uncompressed tar context; a failing step raises EngineRefused with its output."""
        async with _engine_errors():
            await self._client.images.build(
                fileobj=io.BytesIO(context_tar),
                encoding="identity",
                tag=tag,
                path_dockerfile=dockerfile,
                buildargs=dict(buildargs) or None,
                labels=dict(labels) or None,
                forcerm=True,  # no intermediate container is left behind by a failed step
            )

    # ---- events

    async def events(self, labels: Mapping[str, str]) -> AsyncIterator[dict[str, Any]]:
        """Container events of containers carrying `labels`, until the engine closes the stream."""
        filters = json.dumps({"type": ["container"], "label": [f"{k}={v}" for k, v in labels.items()]})
        feed = DockerEvents(self._client)
        async with _engine_errors():
            subscriber = feed.subscribe(filters=filters)
            try:
                while (event := await subscriber.get()) is not None:
                    yield event
            finally:
                await feed.stop()  # re-raises what ended the feed (a lost connection)


def _log_params(tail: int, since: float | None, timestamps: bool) -> dict[str, Any]:
    params: dict[str, Any] = {"tail": str(tail), "timestamps": timestamps}
    if since is not None:
        params["since"] = int(since)
    return params


async def wait_until_answers(engine: Engine, timeout_seconds: float) -> None:
    """Wait for the engine to answer a ping (tests, start-up)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_seconds
    while True:
        try:
            await engine.ping()
            return
        except EngineUnavailable:
            if loop.time() >= deadline:
                raise
            await asyncio.sleep(0.2)
