"""What deleting a token deletes: every resource kind registers a function that plans removal of one owner's
objects, so later kinds (certificates, services) plug in without the token service knowing about them.

Cleanups only *plan* (they return a ConfigWrite read under the same WATCH); the token service commits the
token deletion and every cleanup in one transaction, with one change event per deleted object.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from .store import ConfigWrite, Reader

OwnerCleanup = Callable[[Reader, str], Awaitable[ConfigWrite]]


class CascadeRegistry:
    def __init__(self) -> None:
        self._cleanups: dict[str, OwnerCleanup] = {}

    def register(self, kind: str, cleanup: OwnerCleanup) -> None:
        if kind in self._cleanups:
            raise ValueError(f"a cascade cleanup for {kind!r} is already registered")
        self._cleanups[kind] = cleanup

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(self._cleanups)

    async def plan(self, reader: Reader, owner: str) -> ConfigWrite:
        write = ConfigWrite()
        for cleanup in self._cleanups.values():
            write.extend(await cleanup(reader, owner))
        return write
