"""What a run of entries of the changes stream asks the data plane to re-read (sans-IO).

Every config write appends one ChangeEvent per changed object to `{mhp}:changes` in the MULTI that bumps the
config version, so the entries after the last one applied name everything that changed since. `collect`
turns them into the names to re-read, or says that they cannot be trusted to (None), and then the caller
reloads everything:
- a gap: the first entry is not the next version, or versions jump (the stream was trimmed past our
  cursor, or something bumped the version without an event);
- an entry that does not parse, or a kind this data plane does not know how to apply piecewise.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import ValidationError

from shared.models import ChangeEvent

# Kinds whose objects live in the hashes the data plane reads piecewise; `token` changes carry no config
# of their own (a token's deletion cascades as proxy/route/auth events).
_IGNORED = frozenset({"token"})


@dataclass(frozen=True, slots=True)
class ChangeSet:
    proxies: frozenset[str]
    routes: frozenset[str]
    auth: frozenset[str]  # hostnames whose proxy-auth or proxy-resources row changed
    services: frozenset[str]  # names whose service endpoint (where service://NAME goes) may have changed
    certificates: bool
    last_id: str  # stream id of the last entry
    last_version: int

    @property
    def names(self) -> tuple[frozenset[str], frozenset[str], frozenset[str], frozenset[str]]:
        return self.proxies, self.routes, self.auth, self.services


def collect(entries: Iterable[tuple[str, dict[str, str]]], *, after_version: int) -> ChangeSet | None:
    """The names the entries after `after_version` changed; None when only a full reload is safe.
    Entries must be non-empty."""
    proxies: set[str] = set()
    routes: set[str] = set()
    auth: set[str] = set()
    services: set[str] = set()
    certificates = False
    version = after_version
    last_id = ""
    for entry_id, fields in entries:
        try:
            event = ChangeEvent.from_stream_fields(fields)
        except ValidationError:
            return None
        # One transaction's events share its version; the next transaction's is one more.
        if event.version != version + 1 and not (event.version == version and version > after_version):
            return None
        version = event.version
        last_id = entry_id
        if event.kind == "proxy":
            proxies.add(event.name)
        elif event.kind == "route":
            routes.add(event.name)
        elif event.kind == "auth":
            auth.add(event.name)
        elif event.kind == "service":
            services.add(event.name)
        elif event.kind == "certificate":
            certificates = True
        elif event.kind not in _IGNORED:
            return None
    if not last_id:
        raise ValueError("collect needs at least one entry")
    return ChangeSet(
        frozenset(proxies),
        frozenset(routes),
        frozenset(auth),
        frozenset(services),
        certificates,
        last_id,
        version,
    )
