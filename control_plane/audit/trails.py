"""Both audit trails, built once per app lifespan from the settings (kept on the Runtime)."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from shared import keys
from shared.config import Settings

from .changes import ChangeAudit
from .oauth_events import OAuthAudit
from .streams import AuditStream

DAY_SECONDS = 86400


@dataclass(frozen=True, slots=True)
class AuditTrails:
    changes: ChangeAudit
    oauth: OAuthAudit

    @classmethod
    def build(cls, settings: Settings, redis: aioredis.Redis) -> AuditTrails:
        changes = AuditStream(
            keys.audit_changes_stream(),
            settings.AUDIT_RETENTION_DAYS * DAY_SECONDS,
            settings.AUDIT_MAX_ENTRIES,
        )
        oauth = AuditStream(
            keys.audit_oauth_stream(),
            settings.OAUTH_AUDIT_RETENTION_DAYS * DAY_SECONDS,
            settings.OAUTH_AUDIT_MAX_ENTRIES,
        )
        return cls(changes=ChangeAudit(changes), oauth=OAuthAudit(redis, oauth))
