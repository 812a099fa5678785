"""Config objects read and deleted on behalf of a principal: 404 when absent, 403 when another token owns
it. The admin may also delete a row that no longer validates (it has no trustworthy owner left)."""

from __future__ import annotations

from typing import TypeVar

from shared.models import Certificate, ProxyTarget, Route

from ..errors import NotFound
from ..principal import Principal, require_current
from ..store import ChangeKind, Collection, ConfigWrite, Reader

Owned = TypeVar("Owned", ProxyTarget, Route, Certificate)


async def read_owned(
    reader: Reader, principal: Principal, collection: Collection[Owned], kind: ChangeKind, object_id: str
) -> Owned:
    found = await reader.get(collection, object_id)
    if found is None:
        raise NotFound(f"{kind} {object_id!r} not found")
    principal.require_access(kind, object_id, found.owner)
    return found


async def plan_delete(
    reader: Reader, principal: Principal, collection: Collection[Owned], kind: ChangeKind, object_id: str
) -> ConfigWrite:
    """The write that deletes one owned row (and records the change under its owner)."""
    await require_current(reader, principal)
    if principal.is_admin and await reader.is_damaged(collection, object_id):
        owner = principal.owner
    else:
        owner = (await read_owned(reader, principal, collection, kind, object_id)).owner
    write = ConfigWrite()
    write.delete(collection, object_id)
    write.about(collection, object_id, f"{kind} {object_id!r}")
    write.change(kind, "deleted", object_id, owner)
    return write
