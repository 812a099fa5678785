"""The OAuth audit: what happened at the authorization server, appended to a bounded stream.

Recorded: sign-ins at the upstream identity provider (success, failure and why), consents granted, denied
and revoked, tokens issued (by grant type), refreshed and revoked, token requests refused (the OAuth error
and its description: bad PKCE, a reused refresh token, invalid_grant, invalid_target, ...), tokens issued
for a resource whose allowlist will refuse them (allowlist_denied; the data plane enforces the
allowlists), device logins started, client registrations (DCR, RFC 7592) and Client ID Metadata Document
fetches with their refusals, introspection calls (token_requests.py and client_requests.py build those),
and requests refused by a rate limit (at most one entry per client address and minute, so a flood cannot
push real events out of the bounded stream). The client address comes from the request's context
(request_context.py: the TCP peer, or X-Forwarded-For from a trusted proxy).

Never recorded: token, code, device code, verifier, secret, registration access token or cookie values; an
entry names the login, the client id, the grant type, the resources, the scope and, where it helps, a
`detail` (a client's name and redirect URI hosts). Recording never fails the OAuth request: a Redis error is
logged and the request goes on.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shared import keys

from .. import request_context
from .records import OAuthAuditEvent, OAuthOutcome
from .streams import AuditStream

log = logging.getLogger(__name__)

RATE_LIMITED_DEDUPE_SECONDS = 60


class OAuthAudit:
    def __init__(self, redis: aioredis.Redis, stream: AuditStream) -> None:
        self._redis = redis
        self.stream = stream

    async def record(
        self,
        event: str,
        outcome: OAuthOutcome,
        *,
        reason: str = "",
        login: str = "",
        client_id: str = "",
        grant_type: str = "",
        resources: Iterable[str] = (),
        scope: str = "",
        detail: str = "",
    ) -> None:
        context = request_context.current()
        entry = OAuthAuditEvent(
            at=time.time(),
            event=event,
            outcome=outcome,
            reason=reason[:500],
            login=login,
            client_id=client_id[:300],
            grant_type=grant_type,
            resources=[r[:500] for r in list(resources)[:20]],
            scope=scope[:500],
            client_address=context.client_address if context is not None else "",
            detail=detail[:500],
        )
        try:
            await self.stream.add(
                self._redis, json.dumps(entry.model_dump(exclude={"id"}), separators=(",", ":"))
            )
        except (RedisError, OSError) as exc:
            log.warning("could not record OAuth audit event %s (%s): %r", event, outcome, exc)

    async def rate_limited(self, path: str, client_address: str) -> None:
        """A request refused with 429; one entry per client address and minute."""
        try:
            first = await self._redis.set(
                keys.audit_rate_limited(client_address), "1", nx=True, ex=RATE_LIMITED_DEDUPE_SECONDS
            )
        except (RedisError, OSError) as exc:
            log.warning("could not record a rate-limit audit event: %r", exc)
            return
        if first:
            await self.record("rate_limited", "failure", reason=f"too many requests (first refused: {path})")
