"""The control plane's writer of configuration (everything a config version covers), and its typed reads.
(Protocol state that is not configuration, such as OAuth codes or rate-limit counters, is written by its own
module.)

Every write is a `ConfigWrite` (hash puts/deletes, whole-string puts, plus change descriptions) committed by
`Store.transact` as one MULTI/EXEC that also INCRs the config version and XADDs one ChangeEvent per change
carrying the new version; after EXEC it PUBLISHes the version as a wake-up hint. Check-then-write is made
safe optimistically: the plan reads under WATCH of the config version, which every config write bumps, so any
concurrent write makes EXEC fail and the plan is re-run against fresh state (a duplicate create is detected
by the re-run). A process runs one config transaction at a time (WATCH then only arbitrates between
replicas, which retry after a short jittered wait).

During an API request (request_context.py) the same transaction also checks the request's If-Match against
the object the write names as its subject (preconditions.py: 412 when stale, so the check and the write are
atomic), and appends the change-audit entries (audit/changes.py), so a write that fails records nothing.

Reads validate each stored row; a row that fails to validate is logged and skipped, never fatal.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar

import redis.asyncio as aioredis
from pydantic import BaseModel, ValidationError
from redis.exceptions import RedisError, WatchError

from control_plane.records import ApiToken, ZoneDelegation
from shared import keys
from shared.models import ADMIN_OWNER, ChangeEvent, ProxyTarget, Route

from . import request_context
from .errors import StoreBusy
from .preconditions import etag_of, etag_of_json, require_match

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
ChangeKind = Literal["token", "proxy", "route", "certificate", "auth", "service"]
ChangeAction = Literal["created", "updated", "deleted"]

CHANGES_STREAM_MAXLEN = 10_000
MAX_TRANSACTION_ATTEMPTS = 20


@dataclass(frozen=True, slots=True)
class Collection(Generic[M]):
    """A Redis hash of one stored model, keyed by the object's id."""

    key: str
    model: type[M]


def tokens() -> Collection[ApiToken]:
    return Collection(keys.tokens(), ApiToken)


def token_zones() -> Collection[ZoneDelegation]:
    return Collection(keys.token_zones(), ZoneDelegation)


def proxies() -> Collection[ProxyTarget]:
    return Collection(keys.proxies(), ProxyTarget)


def routes() -> Collection[Route]:
    return Collection(keys.routes(), Route)


@dataclass(frozen=True, slots=True)
class HashPut:
    key: str
    field: str
    value: str


@dataclass(frozen=True, slots=True)
class HashDelete:
    key: str
    field: str


@dataclass(frozen=True, slots=True)
class StringPut:
    """A whole-value SET, for a document that is read and replaced as one (the signing-key ring)."""

    key: str
    value: str


@dataclass(frozen=True, slots=True)
class Change:
    kind: ChangeKind
    action: ChangeAction
    name: str
    owner: str = ADMIN_OWNER


@dataclass(frozen=True, slots=True)
class Subject:
    collection: Collection[Any]
    object_id: str
    label: str


@dataclass(slots=True)
class ConfigWrite:
    """What one transaction will do. Plans build these; only the store executes them."""

    ops: list[HashPut | HashDelete | StringPut] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    # The one object an API write is about (what its If-Match refers to and whose new ETag it answers with).
    subject: Subject | None = None

    def about(self, collection: Collection[Any], object_id: str, label: str) -> None:
        """Name the object this write is about; `label` ("proxy 'a.example'") is what a 412 message says."""
        self.subject = Subject(collection, object_id, label)

    def put(self, collection: Collection[M], object_id: str, obj: M) -> None:
        self.ops.append(HashPut(collection.key, object_id, obj.model_dump_json()))

    def delete(self, collection: Collection[Any], object_id: str) -> None:
        self.ops.append(HashDelete(collection.key, object_id))

    def put_string(self, key: str, value: str) -> None:
        self.ops.append(StringPut(key, value))

    def put_token_hash(self, digest: str, name: str) -> None:
        self.ops.append(HashPut(keys.token_hashes(), digest, name))

    def delete_token_hash(self, digest: str) -> None:
        self.ops.append(HashDelete(keys.token_hashes(), digest))

    def change(self, kind: ChangeKind, action: ChangeAction, name: str, owner: str) -> None:
        self.changes.append(Change(kind, action, name, owner))

    def extend(self, other: ConfigWrite) -> None:
        self.ops.extend(other.ops)
        self.changes.extend(other.changes)

    @property
    def empty(self) -> bool:
        return not self.ops and not self.changes


class Reader:
    """Typed reads over a Redis connection: the pool, or a pipeline in WATCH (immediate) mode."""

    def __init__(self, conn: Any) -> None:
        # `Any`: redis-py types pipeline reads in immediate mode as non-awaitable; both shapes await here.
        self._conn = conn

    async def get(self, collection: Collection[M], object_id: str) -> M | None:
        raw = await self._conn.hget(collection.key, object_id)
        if raw is None:
            return None
        return _parse(collection, object_id, raw)

    async def all(self, collection: Collection[M]) -> dict[str, M]:
        raw_rows: dict[str, str] = await self._conn.hgetall(collection.key)
        out: dict[str, M] = {}
        for object_id, raw in raw_rows.items():
            parsed = _parse(collection, object_id, raw)
            if parsed is not None:
                out[object_id] = parsed
        return out

    async def get_many(self, collection: Collection[M], object_ids: list[str]) -> dict[str, M]:
        """The rows that exist among `object_ids` (one HMGET)."""
        if not object_ids:
            return {}
        raw_rows: list[str | None] = await self._conn.hmget(collection.key, object_ids)
        out: dict[str, M] = {}
        for object_id, raw in zip(object_ids, raw_rows, strict=True):
            if raw is not None and (parsed := _parse(collection, object_id, raw)) is not None:
                out[object_id] = parsed
        return out

    async def exists(self, collection: Collection[Any], object_id: str) -> bool:
        return bool(await self._conn.hexists(collection.key, object_id))

    async def is_damaged(self, collection: Collection[Any], object_id: str) -> bool:
        """True when a row exists but no longer validates (reads treat it as absent)."""
        raw = await self._conn.hget(collection.key, object_id)
        return raw is not None and _parse(collection, object_id, raw) is None

    async def raw_many(self, key: str, fields: list[str]) -> dict[str, str | None]:
        """Several hash fields as stored (unparsed), in one HMGET: what the change audit diffs against."""
        if not fields:
            return {}
        unique = list(dict.fromkeys(fields))
        values: list[str | None] = await self._conn.hmget(key, unique)
        return dict(zip(unique, values, strict=True))

    async def token_name_for_hash(self, digest: str) -> str | None:
        name: str | None = await self._conn.hget(keys.token_hashes(), digest)
        return name

    async def string(self, key: str) -> str | None:
        raw: str | None = await self._conn.get(key)
        return raw

    async def config_version(self) -> int:
        raw = await self._conn.get(keys.config_version())
        return int(raw or 0)


def _parse(collection: Collection[M], object_id: str, raw: str) -> M | None:
    try:
        return collection.model.model_validate_json(raw)
    except ValidationError as exc:
        # One bad row must not take a whole listing (or the API) down; it is visible in the log.
        log.error(
            "skipping invalid %s %r in %s: %s", collection.model.__name__, object_id, collection.key, exc
        )
        return None


Plan = Callable[[Reader], Awaitable[ConfigWrite]]


class WriteAudit(Protocol):
    """Records API writes in the same MULTI/EXEC as the write (control_plane/audit/changes.py)."""

    async def entries(
        self, reader: Reader, write: ConfigWrite, context: request_context.RequestContext
    ) -> list[str]: ...

    def append(self, pipe: Any, documents: list[str]) -> None: ...


class Store:
    def __init__(self, redis: aioredis.Redis, *, audit: WriteAudit | None = None) -> None:
        self.redis = redis
        self.reader = Reader(redis)
        self._audit = audit
        # One config transaction at a time per process: every write WATCHes the one version key, so
        # concurrent writers of the same process would only invalidate each other and retry (8 concurrent
        # API clients exhausted the retries). Serialised here, WATCH arbitrates only between replicas.
        self._writing = asyncio.Lock()

    async def ping(self) -> None:
        await self.redis.ping()

    async def transact(self, plan: Plan) -> int | None:
        """Run `plan` under WATCH and commit its write atomically; returns the new config version.

        Returns None (and writes nothing) when the plan has nothing to do. Errors raised by the plan propagate
        unchanged and nothing is written.
        """
        async with self._writing:
            return await self._transact(plan)

    async def _transact(self, plan: Plan) -> int | None:
        for attempt in range(MAX_TRANSACTION_ATTEMPTS):
            if attempt:
                # Another replica won the race: let it finish before re-planning (jittered, growing).
                await asyncio.sleep(random.uniform(0, min(0.05, 0.002 * 2**attempt)))
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(keys.config_version())
                    reader = Reader(pipe)
                    write = await plan(reader)
                    context = request_context.current()
                    if context is not None and context.subject_committed:
                        context = None  # a follow-up write of the same request (e.g. a certificate request)
                    if context is not None and write.subject is not None:
                        current_etag = await _current_etag(reader, write.subject)
                        if context.if_match is not None:
                            require_match(context.if_match, current_etag, write.subject.label)
                        if write.empty:
                            context.subject_committed = True
                            context.etag = current_etag
                    if write.empty:
                        return None
                    request = request_context.current()
                    audit_documents = (
                        await self._audit.entries(reader, write, request)
                        if self._audit is not None and request is not None and request.api
                        else []
                    )
                    new_version = await reader.config_version() + 1
                    pipe.multi()  # type: ignore[no-untyped-call]
                    for op in write.ops:
                        if isinstance(op, HashPut):
                            pipe.hset(op.key, op.field, op.value)
                        elif isinstance(op, StringPut):
                            pipe.set(op.key, op.value)
                        else:
                            pipe.hdel(op.key, op.field)
                    pipe.incr(keys.config_version())
                    for change in write.changes:
                        event = ChangeEvent(
                            version=new_version,
                            kind=change.kind,
                            action=change.action,
                            name=change.name,
                            owner=change.owner,
                        )
                        pipe.xadd(
                            keys.changes_stream(),
                            event.to_stream_fields(),  # type: ignore[arg-type]
                            maxlen=CHANGES_STREAM_MAXLEN,
                            approximate=True,
                        )
                    if audit_documents and self._audit is not None:
                        # After the INCR and the change events, so their result positions stay fixed.
                        self._audit.append(pipe, audit_documents)
                    results = await pipe.execute()
                except WatchError:
                    continue
            committed_version = int(results[len(write.ops)])
            if context is not None and write.subject is not None:
                context.subject_committed = True
                context.etag = _written_etag(write, write.subject)
            await self._publish(committed_version)
            return committed_version
        raise StoreBusy("too many concurrent configuration writes; retry the request")

    async def _publish(self, version: int) -> None:
        # Pub/sub is only a hint (data planes also reconcile periodically), so a failed PUBLISH after a
        # committed EXEC is logged rather than reported as a failed write.
        try:
            await self.redis.publish(keys.changes_channel(), str(version))
        except (RedisError, OSError):
            log.exception("config version %d committed but the wake-up PUBLISH failed", version)


async def _current_etag(reader: Reader, subject: Subject) -> str | None:
    current = await reader.get(subject.collection, subject.object_id)
    return None if current is None else etag_of(current)


def _written_etag(write: ConfigWrite, subject: Subject) -> str | None:
    """The ETag of the subject as this write left it (None when it deleted it)."""
    written: str | None = None
    for op in write.ops:
        if isinstance(op, HashPut | HashDelete) and (op.key, op.field) == (
            subject.collection.key,
            subject.object_id,
        ):
            written = op.value if isinstance(op, HashPut) else None
    return None if written is None else etag_of_json(written)
