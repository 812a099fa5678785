"""Searching the audit trails on behalf of a caller, and who may see which entry.

Visibility: the admin (ADMIN_TOKEN, or an ADMIN_GITHUB_USERS login) sees every entry. An ordinary API token
sees change-audit entries about objects it owns (`owner` is the token) and about its own token record, and
OAuth events with at least one resource served by a proxy it owns now (the exact hostname, else the longest
wildcard proxy covering the name, as the data plane routes). OAuth events without a resource (most sign-in
failures, rate limits, revocations of opaque refresh tokens) are the admin's only.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

import redis.asyncio as aioredis

from .. import store
from ..errors import InvalidInput
from ..principal import Principal
from .records import ChangeAuditEntry, OAuthAuditEvent
from .streams import CURSOR_PATTERN, AuditStream, Page, search

_RELATIVE = re.compile(r"^(\d{1,9})([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(value: str | None, field: str, now: float | None = None) -> float | None:
    """Unix seconds, an ISO 8601 time (UTC when no offset), or an age such as 15m / 2h / 7d; else 422."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    now = time.time() if now is None else now
    if match := _RELATIVE.match(text):
        return now - int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    try:
        number = float(text)
    except ValueError:
        number = None
    if number is not None and 0 <= number < 1e11:
        return number
    try:
        parsed = datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return max(0.0, parsed.timestamp())
    except (ValueError, OverflowError, OSError):
        message = "expected Unix seconds, an ISO 8601 time, or an age such as 15m, 2h or 7d"
        raise InvalidInput(
            f"{field}: {message}", [{"loc": ["query", field], "msg": message, "type": "value_error"}]
        ) from None


def check_cursor(cursor: str | None) -> None:
    # A stream id is two unsigned 64-bit numbers; anything else would be a Redis error, not a 422.
    if cursor is not None and (
        not CURSOR_PATTERN.match(cursor) or any(int(part) >= 2**64 for part in cursor.split("-"))
    ):
        message = "not a cursor this API returned (next_cursor)"
        raise InvalidInput(
            f"cursor: {message}", [{"loc": ["query", "cursor"], "msg": message, "type": "value_error"}]
        )


@dataclass(frozen=True, slots=True)
class Window:
    since: float | None
    until: float | None
    cursor: str | None
    limit: int


@dataclass(frozen=True, slots=True)
class ChangeFilters:
    actor: str | None = None
    kind: str | None = None
    name: str | None = None
    action: str | None = None

    def keep(self, entry: ChangeAuditEntry) -> bool:
        return (
            (self.actor is None or entry.actor == self.actor)
            and (self.kind is None or entry.kind == self.kind)
            and (self.name is None or entry.name == self.name)
            and (self.action is None or entry.action == self.action)
        )


@dataclass(frozen=True, slots=True)
class OAuthFilters:
    login: str | None = None
    client_id: str | None = None
    event: str | None = None
    outcome: str | None = None
    resource: str | None = None
    client_address: str | None = None

    def keep(self, entry: OAuthAuditEvent) -> bool:
        return (
            (self.login is None or entry.login.lower() == self.login.lower())
            and (self.client_id is None or entry.client_id == self.client_id)
            and (self.event is None or entry.event == self.event)
            and (self.outcome is None or entry.outcome == self.outcome)
            and (
                self.resource is None or self.resource.rstrip("/") in [r.rstrip("/") for r in entry.resources]
            )
            and (self.client_address is None or entry.client_address == self.client_address)
        )


def owner_of_host(owners: dict[str, str], host: str) -> str | None:
    """Who serves `host` now, chosen as the data plane routes: the exact name, else the longest wildcard."""
    if host in owners:
        return owners[host]
    labels = host.split(".")
    for index in range(1, len(labels)):
        owner = owners.get("*." + ".".join(labels[index:]))
        if owner is not None:
            return owner
    return None


async def search_changes(
    redis: aioredis.Redis, stream: AuditStream, principal: Principal, filters: ChangeFilters, window: Window
) -> Page:
    def visible(entry: ChangeAuditEntry) -> bool:
        if not principal.is_admin and not (
            entry.owner == principal.name or (entry.kind == "token" and entry.name == principal.name)
        ):
            return False
        return filters.keep(entry)

    return await search(
        redis,
        stream,
        ChangeAuditEntry,
        visible,
        since=window.since,
        until=window.until,
        cursor=window.cursor,
        limit=window.limit,
    )


async def search_oauth(
    redis: aioredis.Redis,
    stream: AuditStream,
    reader: store.Reader,
    principal: Principal,
    filters: OAuthFilters,
    window: Window,
) -> Page:
    owners = (
        {} if principal.is_admin else {h: p.owner for h, p in (await reader.all(store.proxies())).items()}
    )

    def owns(resource: str) -> bool:
        return owner_of_host(owners, (urlsplit(resource).hostname or "").lower()) == principal.name

    def visible(entry: OAuthAuditEvent) -> bool:
        if not principal.is_admin and not any(owns(r) for r in entry.resources):
            return False
        return filters.keep(entry)

    return await search(
        redis,
        stream,
        OAuthAuditEvent,
        visible,
        since=window.since,
        until=window.until,
        cursor=window.cursor,
        limit=window.limit,
    )
