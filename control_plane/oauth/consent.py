"""Remembered consent: what a user approved on our consent page, so the same request need not ask again.

A record is (login, client, scope set, resource set), expiring OAUTH_CONSENT_TTL_SECONDS after the approval.
A later authorization request is covered only when ONE record of that login and client contains all of its
scopes and all of its resources; anything wider (another resource, another scope) shows the consent page
again, and `prompt=none` then fails with consent_required. Records are never merged: approving resource A
with scope x and, separately, resource B with scope y approves neither A with y nor both at once.

Approving the same sets again replaces the record (its id is a hash of what it covers) and restarts its
time. Users list and revoke their own records on the authorization server's consents page; the admin
through /api/v1/oauth/consents/. Revoking a record only makes the client ask again; tokens already issued
run until they expire or are revoked (/revoke).
"""

from __future__ import annotations

import hashlib
import time

from control_plane.records import OAuthConsent

from ..audit.oauth_events import OAuthAudit
from .state_store import OAuthState


def normalise_login(login: str) -> str:
    # GitHub logins are case-insensitive (as the data plane's allowlists treat them).
    return login.strip().lower()


def consent_id(login: str, client_id: str, scopes: list[str], resources: list[str]) -> str:
    covered = "\0".join([login, client_id, " ".join(sorted(set(scopes))), " ".join(sorted(set(resources)))])
    return hashlib.sha256(covered.encode()).hexdigest()[:32]


class Consents:
    def __init__(self, state: OAuthState, ttl_seconds: int, audit: OAuthAudit) -> None:
        self._state = state
        self._ttl_seconds = ttl_seconds
        self._audit = audit

    async def remember(
        self, login: str, client_id: str, client_name: str, scopes: list[str], resources: list[str]
    ) -> OAuthConsent:
        login = normalise_login(login)
        now = time.time()
        consent = OAuthConsent(
            consent_id=consent_id(login, client_id, scopes, resources),
            login=login,
            client_id=client_id,
            client_name=client_name,
            scopes=sorted(set(scopes)),
            resources=sorted(set(resources)),
            created_at=now,
            expires_at=now + self._ttl_seconds,
        )
        await self._state.put_consent(consent)
        await self._audit.record(
            "consent_granted",
            "success",
            login=login,
            client_id=client_id,
            resources=consent.resources,
            scope=" ".join(consent.scopes),
        )
        return consent

    async def covers(self, login: str, client_id: str, scopes: list[str], resources: list[str]) -> bool:
        wanted_scopes, wanted_resources = set(scopes), set(resources)
        return any(
            record.client_id == client_id
            and wanted_scopes <= set(record.scopes)
            and wanted_resources <= set(record.resources)
            for record in await self._state.consents_of(normalise_login(login))
        )

    async def list(self, *, login: str | None = None, client_id: str | None = None) -> list[OAuthConsent]:
        logins = [normalise_login(login)] if login else await self._state.consent_logins()
        out: list[OAuthConsent] = []
        for name in logins:
            out += [c for c in await self._state.consents_of(name) if client_id in (None, c.client_id)]
        return out

    async def get(self, consent_id: str) -> OAuthConsent | None:
        return next((c for c in await self.list() if c.consent_id == consent_id), None)

    async def revoke_if_match(self, consent_id: str, if_match: str) -> bool:
        """Delete one record only while its ETag is one of `if_match` (else 412); False when it is gone."""
        consent = await self.get(consent_id)
        if consent is None or not await self._state.delete_consent_if_match(
            consent.login, consent_id, if_match
        ):
            return False
        await self._audit_revoked(consent)
        return True

    async def revoke(
        self, *, login: str | None = None, client_id: str | None = None, consent_id: str | None = None
    ) -> int:
        """Delete the records matching every filter given; returns how many."""
        matching = [
            c for c in await self.list(login=login, client_id=client_id) if consent_id in (None, c.consent_id)
        ]
        revoked = 0
        for name in sorted({c.login for c in matching}):
            revoked += await self._state.delete_consents(
                name, [c.consent_id for c in matching if c.login == name]
            )
        for consent in matching:
            await self._audit_revoked(consent)
        return revoked

    async def _audit_revoked(self, consent: OAuthConsent) -> None:
        await self._audit.record(
            "consent_revoked",
            "success",
            login=consent.login,
            client_id=consent.client_id,
            resources=consent.resources,
            scope=" ".join(consent.scopes),
        )
