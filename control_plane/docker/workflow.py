"""The service workflow: "look at service NAME" events on `{mhp}:service-workflow`, consumed by the group
`service-controllers` (control_plane/stream_consumer.py: one replica per event, XAUTOCLAIM takeover).

An event is only a hint that something changed (the API wrote the record, the engine reported a container
event, the periodic reconcile looked); the controller converges the service from the state it reads, so
duplicate, late and lost events are harmless, and a lost one is made up for by the next reconcile.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, Field

from shared import keys
from shared.models import SERVICE_NAME_PATTERN, now_seconds

from ..stream_consumer import StreamConsumer, append_event


class ServiceEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_version: int = 1
    name: Annotated[str, Field(pattern=SERVICE_NAME_PATTERN)]
    reason: Annotated[str, Field(max_length=100)]
    at: float = Field(default_factory=now_seconds)

    def to_stream_fields(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.model_dump().items()}

    @classmethod
    def from_stream_fields(cls, fields: dict[str, str]) -> ServiceEvent:
        return cls.model_validate(fields)


async def request_converge(redis: aioredis.Redis, name: str, reason: str) -> str:
    return await append_event(
        redis, keys.service_workflow_stream(), ServiceEvent(name=name, reason=reason).to_stream_fields()
    )


class ServiceConsumer(StreamConsumer[ServiceEvent]):
    def __init__(
        self, redis: aioredis.Redis, handler: Callable[[ServiceEvent], Awaitable[object]], **options: Any
    ) -> None:
        super().__init__(
            redis,
            stream=keys.service_workflow_stream(),
            group=keys.service_workflow_group(),
            parse=ServiceEvent.from_stream_fields,
            handler=handler,
            **options,
        )
