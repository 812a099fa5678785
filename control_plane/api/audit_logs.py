"""`/api/v1/logs/audit/` and `/api/v1/logs/oauth/`: the change audit and the OAuth audit, newest first.

Both take a time range (`since`, `until`: Unix seconds, ISO 8601, or an age such as 15m / 2h / 7d), exact
filters, `limit` (at most 500 per page) and `cursor` (the previous page's `next_cursor`). A page may hold
fewer than `limit` entries while `next_cursor` is set: each request scans a bounded part of the stream; keep
following `next_cursor` until it is null. Who sees what: control_plane/audit/queries.py.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel

from ..audit.queries import (
    ChangeFilters,
    OAuthFilters,
    Window,
    check_cursor,
    parse_time,
    search_changes,
    search_oauth,
)
from ..audit.records import ChangeAuditEntry, OAuthAuditEvent
from .deps import PrincipalDep, RuntimeDep

router = APIRouter(prefix="/api/v1/logs", tags=["audit"])

MAX_PAGE = 500

Since = Annotated[
    str | None,
    Query(description="oldest time: Unix seconds, ISO 8601, or an age (15m, 2h, 7d)", max_length=64),
]
Until = Annotated[str | None, Query(description="newest time, same forms as since", max_length=64)]
Cursor = Annotated[str | None, Query(description="next_cursor of the previous page", max_length=64)]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"entries per page (at most {MAX_PAGE})")]


class ChangeAuditPage(BaseModel):
    items: list[ChangeAuditEntry]
    next_cursor: str | None


class OAuthAuditPage(BaseModel):
    items: list[OAuthAuditEvent]
    next_cursor: str | None


def _window(since: str | None, until: str | None, cursor: str | None, limit: int) -> Window:
    check_cursor(cursor)
    return Window(parse_time(since, "since"), parse_time(until, "until"), cursor, limit)


@router.get("/audit/", response_model=ChangeAuditPage)
async def change_audit(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    since: Since = None,
    until: Until = None,
    actor: Annotated[
        str | None, Query(description='token name, "admin" or "oauth:<login>"', max_length=200)
    ] = None,
    kind: Annotated[
        str | None, Query(description="token, proxy, route, certificate, auth, service, ...", max_length=50)
    ] = None,
    name: Annotated[
        str | None, Query(description="the object's name (hostname, route id, ...)", max_length=500)
    ] = None,
    action: Annotated[
        str | None, Query(description="created, updated, deleted, revoked", max_length=50)
    ] = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> ChangeAuditPage:
    """Management-API changes: who (token or OAuth login), what (kind, name, masked diff), when, from
    where."""
    page = await search_changes(
        runtime.redis,
        runtime.audit.changes.stream,
        principal,
        ChangeFilters(actor=actor, kind=kind, name=name, action=action),
        _window(since, until, cursor, limit),
    )
    return ChangeAuditPage(items=page.items, next_cursor=page.next_cursor)


@router.get("/oauth/", response_model=OAuthAuditPage)
async def oauth_audit(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    since: Since = None,
    until: Until = None,
    login: Annotated[str | None, Query(description="the signed-in user's login", max_length=200)] = None,
    client_id: Annotated[str | None, Query(max_length=300)] = None,
    event: Annotated[
        str | None,
        Query(
            description=(
                "sign_in, consent_granted, consent_denied, consent_revoked, token_issued, token_refreshed, "
                "token_revoked, token_introspected, token_denied, authorization_denied, allowlist_denied, "
                "device_authorization, client_registered, client_updated, client_deleted, "
                "client_metadata_fetched, rate_limited"
            ),
            max_length=50,
        ),
    ] = None,
    outcome: Literal["success", "failure"] | None = None,
    resource: Annotated[
        str | None, Query(description="a resource URI the event names", max_length=500)
    ] = None,
    client_ip: Annotated[str | None, Query(description="the client's address", max_length=64)] = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> OAuthAuditPage:
    """OAuth events of the authorization server: sign-ins, consents, tokens, refusals with their reason."""
    page = await search_oauth(
        runtime.redis,
        runtime.audit.oauth.stream,
        runtime.store.reader,
        principal,
        OAuthFilters(
            login=login,
            client_id=client_id,
            event=event,
            outcome=outcome,
            resource=resource,
            client_address=client_ip,
        ),
        _window(since, until, cursor, limit),
    )
    return OAuthAuditPage(items=page.items, next_cursor=page.next_cursor)
