"""OAuth audit events about clients: Dynamic Client Registration (RFC 7591) and its management (RFC 7592),
taken at the HTTP boundary (api/oauth.py), and Client ID Metadata Document fetches (recorded by
oauth/client_metadata_documents.py where it fetches).

An event names the client id, its name and redirect URI hosts (`detail`), and the scope it registered;
never its secret, its registration access token or anything else the registration answer shows once.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from ..oauth.errors import OAuthError
from .oauth_events import OAuthAudit

CLIENT_REGISTERED = "client_registered"
CLIENT_UPDATED = "client_updated"
CLIENT_DELETED = "client_deleted"
CLIENT_METADATA_FETCHED = "client_metadata_fetched"


def describe(name: object, redirect_uris: object) -> str:
    """`name=... redirect_hosts=a,b`: who the client says it is and where its codes go (hosts only)."""
    hosts: list[str] = []
    for uri in redirect_uris if isinstance(redirect_uris, list) else []:
        host = urlsplit(uri).hostname if isinstance(uri, str) else None
        if host and host not in hosts:
            hosts.append(host)
    return f"name={str(name or '')[:200]!r} redirect_hosts={','.join(hosts[:10])}"


async def registration_answered(
    audit: OAuthAudit, event: str, view: dict[str, Any] | None, client_id: str
) -> None:
    """A registration created, replaced (`view` is the answer) or deleted (`view` None)."""
    view = view or {}
    await audit.record(
        event,
        "success",
        client_id=str(view.get("client_id") or client_id),
        scope=str(view.get("scope") or ""),
        detail=describe(view.get("client_name"), view.get("redirect_uris")) if view else "",
    )


async def registration_refused(audit: OAuthAudit, event: str, exc: OAuthError, client_id: str = "") -> None:
    await audit.record(event, "failure", reason=f"{exc.error}: {exc.description}", client_id=client_id)


async def metadata_document_fetched(
    audit: OAuthAudit, client_id: str, name: str, redirect_uris: list[str]
) -> None:
    await audit.record(
        CLIENT_METADATA_FETCHED, "success", client_id=client_id, detail=describe(name, redirect_uris)
    )


async def metadata_document_refused(audit: OAuthAudit, client_id: str, exc: OAuthError) -> None:
    await audit.record(
        CLIENT_METADATA_FETCHED, "failure", reason=f"{exc.error}: {exc.description}", client_id=client_id
    )
