"""The two kinds of audit entries as stored (one JSON document per stream entry, field `e`).

`id` is the Redis stream id; it is not stored, it is filled in when an entry is read.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class FieldChange(BaseModel):
    old: Any = None
    new: Any = None


class ChangeAuditEntry(BaseModel):
    """One management-API write (or admin action) on one object."""

    id: str = ""
    at: float = Field(description="Unix time of the commit")
    actor: str = Field(description='token name, "admin" (ADMIN_TOKEN) or "oauth:<login>"')
    client_address: str = ""
    method: str = ""
    path: str = ""
    kind: str = Field(description="token, proxy, route, certificate, auth, service, port, oauth-client, ...")
    action: str = Field(description="created, updated, deleted (or rotated, revoked)")
    name: str
    owner: str = Field(
        description="the token that owns the object (admin for the admin's; a token's record: the token)"
    )
    diff: dict[str, FieldChange] = Field(
        default_factory=dict, description='changed fields (dotted paths); secret values shown as "***"'
    )


OAuthOutcome = Literal["success", "failure"]


class OAuthAuditEvent(BaseModel):
    """One event of the authorization server."""

    id: str = ""
    at: float
    event: str = Field(
        description=(
            "sign_in, consent_granted, consent_denied, consent_revoked, token_issued, token_refreshed, "
            "token_revoked, token_introspected, authorization_denied, token_denied, allowlist_denied, "
            "device_authorization, client_registered, client_updated, client_deleted, "
            "client_metadata_fetched, rate_limited"
        )
    )
    outcome: OAuthOutcome
    reason: str = Field(default="", description="why it failed: an OAuth error code and a short description")
    login: str = ""
    client_id: str = ""
    grant_type: str = ""
    resources: list[str] = Field(default_factory=list)
    scope: str = ""
    client_address: str = ""
    detail: str = Field(
        default="", description="what the event was about beyond the fields above (a client's name and hosts)"
    )
