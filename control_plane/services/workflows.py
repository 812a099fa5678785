"""What the control plane's workflows hold right now, and the admin's two actions on one item (retry, drop).

A workflow is a Redis stream consumed by one consumer group (control_plane/stream_consumer.py): `acme`
(certificate wanted) and `services` (converge service NAME). Its items, by state:

- pending: appended, not yet delivered to any replica (after the group's last-delivered id);
- in_flight: delivered and not acknowledged (XPENDING: which replica, since when, how many deliveries);
- failed: in flight with a recorded handler error (the failures hash), waiting to be delivered again; and the
  failures the controllers record on their own objects and then acknowledge: a certificate whose last
  issuance failed (retried with backoff) and a service whose last attempt the engine refused;
- dead: given up on after WORKFLOW_MAX_DELIVERIES deliveries, or malformed (the dead-letter stream).

Item ids: a stream entry id (`1733380000000-0`) for pending, in-flight and failed events; `dead:<id>` for a
dead letter (its id in the dead-letter stream); `certificate:<name>` and `service:<name>` for the
controllers' own failures. Retry puts an event back at the end of the stream as a new entry (a certificate:
the backoff is reset and issuance asked for now; a service: a new attempt, as `restart`); drop removes it
(acknowledged and deleted; a dead letter is deleted). A controller's own failure cannot be dropped (its
object can be deleted). Admin only: items name other tenants' certificates and services.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any, Final, Literal

import redis.asyncio as aioredis
from pydantic import BaseModel, ValidationError
from redis.exceptions import ResponseError

from shared import keys

from ..acme.records import certificates
from ..docker.records import service_status
from ..errors import Conflict, InvalidInput, NotFound
from ..principal import ADMIN, Principal
from ..store import Reader
from ..stream_consumer import WorkflowFailure, append_event
from .certificates import CertificateService
from .services import ServiceManager

log = logging.getLogger(__name__)

WorkflowName = Literal["acme", "services"]
ItemState = Literal["pending", "in_flight", "failed", "dead"]
ItemKind = Literal["event", "certificate", "service"]
DEFAULT_LIST_LIMIT: Final = 100
MAX_LIST_LIMIT: Final = 1000
_STREAM_ID_RE: Final = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")


class ConsumerView(BaseModel):
    name: str  # host-pid-random of the replica's consumer
    pending: int
    idle_seconds: float


class WorkflowItem(BaseModel):
    item: str
    state: ItemState
    kind: ItemKind = "event"
    event: dict[str, str] = {}  # the event's fields (empty for a certificate's or service's own failure)
    enqueued_at: float | None = None  # from the stream id
    consumer: str = ""  # in flight, failed: the replica holding it; dead: the last one that failed it
    delivered_at: float | None = None  # in flight: when the current delivery started
    deliveries: int = 0
    error: str = ""
    attempts: int = 0
    failed_at: float | None = None
    next_retry_at: float | None = None  # certificates: when the issuer tries again by itself
    original_id: str = ""  # dead: the event's id in the workflow stream


class WorkflowCounts(BaseModel):
    pending: int
    in_flight: int
    failed: int
    dead: int


class WorkflowView(BaseModel):
    workflow: WorkflowName
    stream: str
    group: str
    dead_letter_stream: str
    consumers: list[ConsumerView]
    counts: WorkflowCounts
    pending: list[WorkflowItem]
    in_flight: list[WorkflowItem]
    failed: list[WorkflowItem]
    dead: list[WorkflowItem]


class WorkflowAction(BaseModel):
    workflow: WorkflowName
    item: str
    action: Literal["retried", "dropped"]
    new_item: str = ""  # retried event: its new stream id


_STREAMS: Final[dict[WorkflowName, tuple[str, str]]] = {
    "acme": (keys.acme_workflow_stream(), keys.acme_workflow_group()),
    "services": (keys.service_workflow_stream(), keys.service_workflow_group()),
}
WORKFLOWS: Final[tuple[WorkflowName, ...]] = tuple(_STREAMS)


def _workflow(name: str) -> tuple[WorkflowName, str, str]:
    for known, (stream, group) in _STREAMS.items():
        if name == known:
            return known, stream, group
    raise NotFound(f"no workflow {name!r}; workflows: {', '.join(WORKFLOWS)}")


def _id_time(entry_id: str) -> float:
    return int(entry_id.split("-", 1)[0]) / 1000


def _bad_item(item: str) -> InvalidInput:
    return InvalidInput(
        f"{item!r} is not a workflow item: a stream id (1733380000000-0), dead:<id>, certificate:<name> "
        "or service:<name>",
        [{"loc": ["path", "item"], "msg": "not a workflow item id", "type": "value_error"}],
    )


class WorkflowMonitor:
    def __init__(
        self,
        redis: aioredis.Redis,
        reader: Reader,
        certificates: CertificateService,
        services: ServiceManager,
    ) -> None:
        self._redis = redis
        self._reader = reader
        self._certificates = certificates
        self._services = services

    async def list(self, principal: Principal, *, limit: int = DEFAULT_LIST_LIMIT) -> list[WorkflowView]:
        principal.require_admin("see the workflows")
        return [await self._view(name, stream, group, limit) for name, (stream, group) in _STREAMS.items()]

    async def lag(self) -> dict[str, tuple[int, int, int]]:
        """Per workflow: (undelivered, unacknowledged, dead-lettered) events; for the metrics."""
        out: dict[str, tuple[int, int, int]] = {}
        for name, (stream, group) in _STREAMS.items():
            info = await self._group_info(stream, group)
            undelivered = await self._undelivered_count(stream, info)
            dead = int(await self._redis.xlen(keys.workflow_dead_letters(stream)))
            out[name] = (undelivered, int(info.get("pending", 0)) if info else 0, dead)
        return out

    async def retry(self, principal: Principal, workflow: str, item: str) -> WorkflowAction:
        principal.require_admin("retry workflow items")
        name, stream, group = _workflow(workflow)
        kind, key = self._parse_item(item)
        if kind == "certificate":
            if name != "acme":
                raise NotFound(f"no item {item!r} in workflow {name!r}")
            cert = await self._reader.get(certificates(), key)
            if cert is None or cert.status != "failed":
                raise NotFound(f"no failed certificate {key!r}")
            await self._certificates.renew(ADMIN, key)
            return WorkflowAction(workflow=name, item=item, action="retried")
        if kind == "service":
            if name != "services":
                raise NotFound(f"no item {item!r} in workflow {name!r}")
            status = await self._reader.get(service_status(), key)
            if status is None or status.state != "failed":
                raise NotFound(f"no failed service {key!r}")
            await self._services.restart(ADMIN, key)
            return WorkflowAction(workflow=name, item=item, action="retried")
        if kind == "dead":
            dead = keys.workflow_dead_letters(stream)
            fields = await self._entry(dead, key)
            if fields is None:
                raise NotFound(f"no dead letter {item!r} in workflow {name!r}")
            try:
                event = json.loads(fields.get("event", "{}"))
            except ValueError:
                event = {}
            if not isinstance(event, dict) or not event:
                raise Conflict(f"dead letter {item!r} holds no event to retry; drop it")
            new_id = await append_event(self._redis, stream, {str(k): str(v) for k, v in event.items()})
            await self._redis.xdel(dead, key)
            return WorkflowAction(workflow=name, item=item, action="retried", new_item=new_id)
        fields = await self._entry(stream, key)
        if fields is None:
            raise NotFound(f"no item {item!r} in workflow {name!r}")
        if not await self._is_delivered(stream, group, key):
            raise Conflict(f"item {item!r} has not been delivered yet: it is already queued")
        new_id = await append_event(self._redis, stream, fields)
        await self._remove_event(stream, group, key)
        return WorkflowAction(workflow=name, item=item, action="retried", new_item=new_id)

    async def drop(self, principal: Principal, workflow: str, item: str) -> WorkflowAction:
        principal.require_admin("drop workflow items")
        name, stream, group = _workflow(workflow)
        kind, key = self._parse_item(item)
        if kind in ("certificate", "service"):
            raise Conflict(
                f"{item!r} is the {kind}'s own failed state, not a queued event: delete the {kind} to stop it"
            )
        if kind == "dead":
            if not await self._redis.xdel(keys.workflow_dead_letters(stream), key):
                raise NotFound(f"no dead letter {item!r} in workflow {name!r}")
            return WorkflowAction(workflow=name, item=item, action="dropped")
        if await self._entry(stream, key) is None and not await self._is_delivered(stream, group, key):
            raise NotFound(f"no item {item!r} in workflow {name!r}")
        await self._remove_event(stream, group, key)
        return WorkflowAction(workflow=name, item=item, action="dropped")

    @staticmethod
    def _parse_item(item: str) -> tuple[str, str]:
        prefix, colon, rest = item.partition(":")
        if not colon:
            if _STREAM_ID_RE.fullmatch(item):
                return "event", item
            raise _bad_item(item)
        if prefix == "dead" and _STREAM_ID_RE.fullmatch(rest):
            return "dead", rest
        if prefix in ("certificate", "service") and 0 < len(rest) <= 253:
            return prefix, rest
        raise _bad_item(item)

    async def _remove_event(self, stream: str, group: str, entry_id: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xack(stream, group, entry_id)
            pipe.xdel(stream, entry_id)
            pipe.hdel(keys.workflow_failures(stream), entry_id)
            await pipe.execute()

    async def _entry(self, stream: str, entry_id: str) -> dict[str, str] | None:
        try:
            found: Any = await self._redis.xrange(stream, min=entry_id, max=entry_id, count=1)
        except ResponseError:  # an id Redis will not parse (out of range): no such entry
            return None
        return {str(k): str(v) for k, v in found[0][1].items()} if found else None

    async def _is_delivered(self, stream: str, group: str, entry_id: str) -> bool:
        try:
            found: Any = await self._redis.xpending_range(stream, group, min=entry_id, max=entry_id, count=1)
        except ResponseError:  # no stream or no group yet
            return False
        return bool(found)

    async def _group_info(self, stream: str, group: str) -> dict[str, Any] | None:
        try:
            groups: Any = await self._redis.xinfo_groups(stream)
        except ResponseError:  # no such stream yet
            return None
        for info in groups:
            if str(info.get("name")) == group:
                return dict(info)
        return None

    async def _undelivered_count(self, stream: str, info: dict[str, Any] | None) -> int:
        if info is not None and info.get("lag") is not None:
            return int(info["lag"])
        # No group yet (everything is undelivered) or a lag Redis cannot tell (after XDEL): count them.
        start = "-" if info is None else f"({info['last-delivered-id']}"
        return len(await self._redis.xrange(stream, min=start, max="+", count=MAX_LIST_LIMIT))

    async def _view(self, name: WorkflowName, stream: str, group: str, limit: int) -> WorkflowView:
        info = await self._group_info(stream, group)
        consumers: list[ConsumerView] = []
        if info is not None:
            for consumer in await self._redis.xinfo_consumers(stream, group):
                consumers.append(
                    ConsumerView(
                        name=str(consumer["name"]),
                        pending=int(consumer["pending"]),
                        idle_seconds=int(consumer["idle"]) / 1000,
                    )
                )
        start = "-" if info is None else f"({info['last-delivered-id']}"
        undelivered: Any = await self._redis.xrange(stream, min=start, max="+", count=limit)
        pending = [
            WorkflowItem(
                item=str(entry_id),
                state="pending",
                event={str(k): str(v) for k, v in fields.items()},
                enqueued_at=_id_time(str(entry_id)),
            )
            for entry_id, fields in undelivered
        ]
        in_flight, failed = await self._delivered(stream, group, limit) if info is not None else ([], [])
        failed += await self._own_failures(name, limit)
        dead = await self._dead(stream, limit)
        counts = WorkflowCounts(
            pending=await self._undelivered_count(stream, info),
            in_flight=len(in_flight),
            failed=len(failed),
            dead=int(await self._redis.xlen(keys.workflow_dead_letters(stream))),
        )
        if info is not None:
            # Failures recorded for pending events count as failed, not in flight.
            counts.in_flight = int(info.get("pending", 0)) - sum(1 for i in failed if i.kind == "event")
        return WorkflowView(
            workflow=name,
            stream=stream,
            group=group,
            dead_letter_stream=keys.workflow_dead_letters(stream),
            consumers=consumers,
            counts=counts,
            pending=pending,
            in_flight=in_flight,
            failed=failed,
            dead=dead,
        )

    async def _delivered(
        self, stream: str, group: str, limit: int
    ) -> tuple[list[WorkflowItem], list[WorkflowItem]]:
        delivered: Any = await self._redis.xpending_range(stream, group, min="-", max="+", count=limit)
        if not delivered:
            return [], []
        recorded: Any = await self._redis.hgetall(keys.workflow_failures(stream))
        async with self._redis.pipeline(transaction=False) as pipe:
            for entry in delivered:
                pipe.xrange(stream, min=entry["message_id"], max=entry["message_id"], count=1)
            bodies: list[Any] = await pipe.execute()
        now = time.time()
        in_flight: list[WorkflowItem] = []
        failed: list[WorkflowItem] = []
        for entry, body in zip(delivered, bodies, strict=True):
            entry_id = str(entry["message_id"])
            item = WorkflowItem(
                item=entry_id,
                state="in_flight",
                event={str(k): str(v) for k, v in body[0][1].items()} if body else {},
                enqueued_at=_id_time(entry_id),
                consumer=str(entry["consumer"]),
                delivered_at=now - int(entry["time_since_delivered"]) / 1000,
                deliveries=int(entry["times_delivered"]),
            )
            raw = recorded.get(entry_id)
            failure = None
            if raw is not None:
                try:
                    failure = WorkflowFailure.model_validate_json(raw)
                except ValidationError:
                    failure = None
            if failure is None:
                in_flight.append(item)
            else:
                item.state = "failed"
                item.error, item.attempts, item.failed_at = failure.error, failure.attempts, failure.failed_at
                failed.append(item)
        return in_flight, failed

    async def _own_failures(self, name: WorkflowName, limit: int) -> list[WorkflowItem]:
        try:
            return (await self._read_own_failures(name))[:limit]
        except ResponseError as error:
            # A damaged collection (wrong key type) must not hide the queues, which is where it shows up.
            log.warning("workflow %s: the controller's own failures are unreadable: %s", name, error)
            return []

    async def _read_own_failures(self, name: WorkflowName) -> list[WorkflowItem]:
        items: list[WorkflowItem] = []
        if name == "acme":
            for cert_name, cert in sorted((await self._reader.all(certificates())).items()):
                if cert.status == "failed":
                    items.append(
                        WorkflowItem(
                            item=f"certificate:{cert_name}",
                            state="failed",
                            kind="certificate",
                            error=cert.error,
                            attempts=cert.attempts,
                            failed_at=cert.updated_at,
                            next_retry_at=cert.next_retry_at,
                        )
                    )
        else:
            for service, status in sorted((await self._reader.all(service_status())).items()):
                if status.state == "failed":
                    items.append(
                        WorkflowItem(
                            item=f"service:{service}", state="failed", kind="service", error=status.error
                        )
                    )
        return items

    async def _dead(self, stream: str, limit: int) -> list[WorkflowItem]:
        letters: Any = await self._redis.xrevrange(keys.workflow_dead_letters(stream), count=limit)
        items = []
        for entry_id, fields in letters:
            try:
                event = json.loads(fields.get("event", "{}"))
            except ValueError:
                event = {}
            items.append(
                WorkflowItem(
                    item=f"dead:{entry_id}",
                    state="dead",
                    event={str(k): str(v) for k, v in event.items()} if isinstance(event, dict) else {},
                    enqueued_at=_id_time(str(fields.get("original_id", entry_id))),
                    consumer=str(fields.get("consumer", "")),
                    error=str(fields.get("error", "")),
                    attempts=int(fields.get("attempts", 0) or 0),
                    failed_at=float(fields.get("failed_at", 0) or 0) or None,
                    original_id=str(fields.get("original_id", "")),
                )
            )
        return items
