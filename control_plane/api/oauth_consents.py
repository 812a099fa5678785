"""`/api/v1/oauth/consents/`: users' remembered consents (admin only).

A record is what one user approved for one client (scopes, resources) and when that approval expires; see
oauth/consent.py. Revoking makes the client ask the user again; tokens already issued run until they expire
or are revoked. Users manage their own records on the authorization server's /consents page.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel

from control_plane.records import OAuthConsent

from .. import request_context
from ..audit.records import FieldChange
from ..errors import InvalidInput, NotFound
from .deps import PrincipalDep, RuntimeDep
from .etag import IF_MATCH, tag

router = APIRouter(prefix="/api/v1/oauth/consents", tags=["oauth consents"])

LoginFilter = Annotated[str | None, Query(description="GitHub (or OIDC) login, case-insensitive")]
ClientFilter = Annotated[str | None, Query(description="OAuth client id")]


class ConsentView(BaseModel):
    consent_id: str
    login: str
    client_id: str
    client_name: str
    scopes: list[str]
    resources: list[str]
    created_at: float
    expires_at: float

    @classmethod
    def of(cls, consent: OAuthConsent) -> ConsentView:
        return cls.model_validate(consent.model_dump(include=set(cls.model_fields)))


class ConsentsRevoked(BaseModel):
    revoked: int


@router.get("/", response_model=list[ConsentView])
async def list_consents(
    runtime: RuntimeDep, principal: PrincipalDep, login: LoginFilter = None, client_id: ClientFilter = None
) -> list[ConsentView]:
    principal.require_admin("list OAuth consents")
    return [ConsentView.of(c) for c in await runtime.oauth.consents.list(login=login, client_id=client_id)]


@router.delete("/", response_model=ConsentsRevoked)
async def revoke_consents(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    login: LoginFilter = None,
    client_id: ClientFilter = None,
    consent_id: Annotated[str | None, Query(description="one record")] = None,
) -> ConsentsRevoked:
    """Revoke the records matching every filter given (at least one filter is required)."""
    principal.require_admin("revoke OAuth consents")
    if not (login or client_id or consent_id):
        raise InvalidInput("name what to revoke: login, client_id and/or consent_id")
    revoked = await runtime.oauth.consents.revoke(login=login, client_id=client_id, consent_id=consent_id)
    if revoked:
        named = {"login": login, "client_id": client_id, "consent_id": consent_id}
        await runtime.audit.changes.record(
            runtime.redis,
            kind="consent",
            action="revoked",
            name=" ".join(f"{k}={v}" for k, v in named.items() if v),
            owner=principal.owner,
            changes={"revoked": FieldChange(new=revoked)},
        )
    return ConsentsRevoked(revoked=revoked)


@router.get("/{consent_id}", response_model=ConsentView)
async def get_consent(consent_id: str, runtime: RuntimeDep, principal: PrincipalDep) -> ConsentView:
    """One record, with its ETag (for a conditional revoke)."""
    principal.require_admin("read OAuth consents")
    consent = await runtime.oauth.consents.get(consent_id)
    if consent is None:
        raise NotFound(f"consent {consent_id!r} not found")
    tag(consent)
    return ConsentView.of(consent)


@router.delete("/{consent_id}", status_code=204, dependencies=[IF_MATCH])
async def revoke_consent(consent_id: str, runtime: RuntimeDep, principal: PrincipalDep) -> Response:
    """Revoke one record; with If-Match, only while it is the record that was read (else 412)."""
    principal.require_admin("revoke OAuth consents")
    context = request_context.current()
    if_match = context.if_match if context is not None else None
    if if_match is None:
        revoked = await runtime.oauth.consents.revoke(consent_id=consent_id)
    else:
        revoked = int(await runtime.oauth.consents.revoke_if_match(consent_id, if_match))
    if not revoked:
        raise NotFound(f"consent {consent_id!r} not found")
    await runtime.audit.changes.record(
        runtime.redis,
        kind="consent",
        action="revoked",
        name=f"consent_id={consent_id}",
        owner=principal.owner,
        changes={"revoked": FieldChange(new=revoked)},
    )
    return Response(status_code=204)
