"""What deleting a token deletes: every resource kind registers a function that plans removal of one owner's
objects, so later kinds (certificates, services) plug in without the token service knowing about them.

Cleanups only *plan* (they return a ConfigWrite read under the same WATCH); the token service commits the
token deletion and every cleanup in one transaction, with one change event per deleted object. A kind whose
objects have a life outside Redis (service containers) also registers an `after_commit` hook, run once the
transaction committed: it only nudges a controller, which also finds the leftovers on its own periodic
reconcile, so a hook that fails loses nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .store import ChangeKind, Collection, ConfigWrite, Reader

log = logging.getLogger(__name__)

OwnerCleanup = Callable[[Reader, str], Awaitable[ConfigWrite]]
AfterCommit = Callable[[str], Awaitable[None]]


class CascadeRegistry:
    def __init__(self) -> None:
        self._cleanups: dict[str, OwnerCleanup] = {}
        self._after_commit: dict[str, AfterCommit] = {}

    def register(self, kind: str, cleanup: OwnerCleanup, *, after_commit: AfterCommit | None = None) -> None:
        if kind in self._cleanups:
            raise ValueError(f"a cascade cleanup for {kind!r} is already registered")
        self._cleanups[kind] = cleanup
        if after_commit is not None:
            self._after_commit[kind] = after_commit

    async def committed(self, owner: str) -> None:
        """Run the after-commit hooks of a committed deletion of `owner`'s objects."""
        for kind, hook in self._after_commit.items():
            try:
                await hook(owner)
            except Exception:
                log.exception(
                    "after-commit cleanup of %s objects of %r failed (the reconcile repairs it)", kind, owner
                )

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(self._cleanups)

    async def plan(self, reader: Reader, owner: str) -> ConfigWrite:
        write = ConfigWrite()
        for cleanup in self._cleanups.values():
            write.extend(await cleanup(reader, owner))
        return write


async def plan_owned_deletions(
    reader: Reader,
    owner: str,
    collection: Collection[Any],
    kind: ChangeKind | None,
    *,
    into: ConfigWrite | None = None,
    remove: Callable[[ConfigWrite, Any], None] | None = None,
) -> ConfigWrite:
    """The usual cleanup: delete every object of `collection` that `owner` owns, with one change event each
    (`kind` None: no event, for rows that only accompany another kind). `remove` replaces the plain hash
    delete when an object has index entries of its own."""
    write = into if into is not None else ConfigWrite()
    for object_id, item in (await reader.all(collection)).items():
        if item.owner != owner:
            continue
        if remove is None:
            write.delete(collection, object_id)
        else:
            remove(write, item)
        if kind is not None:
            write.change(kind, "deleted", object_id, owner)
    return write
