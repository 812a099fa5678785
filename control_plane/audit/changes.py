"""The change audit: every management-API write, recorded by the store inside the write's own MULTI/EXEC.

`Store.transact` calls `entries()` after the plan ran (under WATCH, so the old values it reads are the ones
the write replaces) and queues the XADDs with `append()` after the write's own commands: the audit entry and
the change commit together or not at all, so a refused or failed write records nothing. Only writes made
while serving an API request are recorded (request_context.py says who and from where); a controller's or
worker's own bookkeeping is not an audit event.

Actions that do not go through a config transaction (port allocations, pre-registered OAuth clients,
consent revocations) are recorded with `record()` after they succeeded.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis.asyncio as aioredis

from shared import keys

from .. import request_context
from ..request_context import RequestContext
from ..store import ConfigWrite, HashDelete, HashPut, Reader, StringPut
from .masking import diff
from .records import ChangeAuditEntry, FieldChange
from .streams import AuditStream

# Stored collections whose rows are diffed (Redis key -> label); indexes and observed state are not.
_LABELS = {
    keys.tokens(): "token",
    keys.proxies(): "proxy",
    keys.routes(): "route",
    keys.certificates(): "certificate",
    keys.proxy_auth(): "auth",
    keys.proxy_resources(): "resource",
    keys.services(): "service",
    keys.service_endpoints(): "endpoint",
    keys.ports(): "port",
    keys.oauth_signing_keys(): "signing-keys",
}
SIGNING_KEYS_CHANGE = "oauth-signing-keys"  # the change name control_plane/oauth/key_ring.py writes


class ChangeAudit:
    def __init__(self, stream: AuditStream) -> None:
        self.stream = stream

    async def entries(self, reader: Reader, write: ConfigWrite, context: RequestContext) -> list[str]:
        """One JSON document per change of `write`, with the masked diff of the rows it touches."""
        now = time.time()
        olds = await _old_values(reader, write)
        out: list[str] = []
        covered: set[int] = set()
        for change in write.changes:
            touched = [
                (index, op)
                for index, op in enumerate(write.ops)
                if op.key in _LABELS and _name_of(op) == change.name
            ]
            changes: dict[str, FieldChange] = {}
            for index, op in touched:
                covered.add(index)
                old = olds[index]
                new = op.value if isinstance(op, HashPut | StringPut) else None
                prefix = _LABELS[op.key] if len(touched) > 1 else ""
                changes.update(diff(old, new, prefix=prefix))
            # A token "owns" its own record (as the tokens API says), whoever created it.
            kind, action, owner = (
                change.kind,
                change.action,
                change.name if change.kind == "token" else change.owner,
            )
            if change.name == SIGNING_KEYS_CHANGE:
                kind, action = "signing-key", "rotated" if context.path.endswith("/rotate") else action
            out.append(self._document(context, kind, action, change.name, owner, changes, now))
        # Rows a write touches without naming a change (a port released, a service's endpoint removed).
        for index, op in enumerate(write.ops):
            if index in covered or op.key not in _LABELS or isinstance(op, StringPut):
                continue
            old = olds[index]
            new = op.value if isinstance(op, HashPut) else None
            action = "deleted" if new is None else ("updated" if old is not None else "created")
            owner = _owner_in(new) or _owner_in(old) or ""
            document = self._document(context, _LABELS[op.key], action, op.field, owner, diff(old, new), now)
            out.append(document)
        return out

    def append(self, pipe: Any, documents: list[str]) -> None:
        for document in documents:
            self.stream.append(pipe, document)

    async def record(
        self,
        redis: aioredis.Redis,
        *,
        kind: str,
        action: str,
        name: str,
        owner: str,
        changes: dict[str, FieldChange] | None = None,
    ) -> None:
        """Record an action of the current API request that was committed outside a config transaction."""
        context = request_context.current()
        if context is None or not context.api:
            return
        document = self._document(context, kind, action, name, owner, changes or {}, time.time())
        await self.stream.add(redis, document)

    @staticmethod
    def _document(
        context: RequestContext,
        kind: str,
        action: str,
        name: str,
        owner: str,
        changes: dict[str, FieldChange],
        now: float,
    ) -> str:
        entry = ChangeAuditEntry(
            at=now,
            actor=context.actor or "anonymous",
            client_address=context.client_address,
            method=context.method,
            path=context.path,
            kind=kind,
            action=action,
            name=name,
            owner=owner,
            diff=changes,
        )
        return json.dumps(entry.model_dump(exclude={"id"}), separators=(",", ":"))


def _name_of(op: HashPut | HashDelete | StringPut) -> str:
    return op.field if isinstance(op, HashPut | HashDelete) else SIGNING_KEYS_CHANGE


def _owner_in(document: str | None) -> str | None:
    if not document:
        return None
    try:
        owner = json.loads(document).get("owner")
    except (ValueError, AttributeError):
        return None
    return owner if isinstance(owner, str) else None


async def _old_values(reader: Reader, write: ConfigWrite) -> dict[int, str | None]:
    """The stored value each audited op of `write` replaces, by op index: one HMGET per hash key (a cascade
    touching many rows costs one round trip per collection, not one per row)."""
    fields_by_key: dict[str, list[str]] = {}
    strings: set[str] = set()
    for op in write.ops:
        if op.key not in _LABELS:
            continue
        if isinstance(op, StringPut):
            strings.add(op.key)
        else:
            fields_by_key.setdefault(op.key, []).append(op.field)
    stored = {key: await reader.raw_many(key, fields) for key, fields in fields_by_key.items()}
    string_values = {key: await reader.string(key) for key in strings}
    return {
        index: string_values[op.key] if isinstance(op, StringPut) else stored[op.key][op.field]
        for index, op in enumerate(write.ops)
        if op.key in _LABELS
    }
