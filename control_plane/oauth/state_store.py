"""OAuth protocol state in Redis: clients, pending requests, codes, grants, refresh tokens, consents,
device logins and revoked token ids. Every key comes from shared.keys and every object from shared.models.

This is not configuration: nothing here goes through the config-write transaction. Every key carries a TTL
so abandoned flows clean themselves up. Single-use objects are consumed atomically (GETDEL, or a Lua script
for codes so that a replay is told apart from an unknown code). Revoking access tokens adds their jti to a
sorted set scored by expiry and PUBLISHes each jti, which data planes apply within a second.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import redis.asyncio as aioredis
from pydantic import BaseModel, ValidationError
from redis.exceptions import WatchError

from control_plane.records import (
    AuthorizationCode,
    AuthorizationRequest,
    DeviceLogin,
    OAuthClient,
    OAuthConsent,
    OAuthGrant,
    RefreshRecord,
    UpstreamLogin,
)
from shared import keys

from ..errors import StoreBusy
from ..preconditions import etag_of, require_match

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

# Atomically consume a code and remember which grant family it issued, or report that it was already used.
_REDEEM_CODE = """
local value = redis.call('GET', KEYS[1])
if value then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
  return {'ok', value}
end
local family = redis.call('GET', KEYS[2])
if family then return {'replayed', family} end
return {'unknown', ''}
"""


@dataclass(frozen=True, slots=True)
class CodeRedemption:
    outcome: Literal["ok", "replayed", "unknown"]
    code: AuthorizationCode | None = None
    replayed_family: str = ""


def _parse(model: type[M], raw: str | bytes | None, key: str) -> M | None:
    if raw is None:
        return None
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        log.error("ignoring invalid %s at %s: %s", model.__name__, key, exc)
        return None


MAX_CONDITIONAL_ATTEMPTS = 20


class OAuthState:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    async def _put(self, key: str, obj: BaseModel, ttl_seconds: int) -> None:
        await self._redis.set(key, obj.model_dump_json(), ex=max(1, int(ttl_seconds)))

    async def _get(self, model: type[M], key: str) -> M | None:
        return _parse(model, await self._redis.get(key), key)

    # ---- clients

    async def put_client(self, client: OAuthClient, ttl_seconds: int) -> None:
        await self._put(keys.oauth_client(client.client_id), client, ttl_seconds)

    async def get_client(self, client_id: str, *, renew_ttl_seconds: int | None = None) -> OAuthClient | None:
        key = keys.oauth_client(client_id)
        client = await self._get(OAuthClient, key)
        if client is not None and renew_ttl_seconds:
            # Registrations stay alive while in use.
            await self._redis.expire(key, renew_ttl_seconds)
        return client

    async def delete_client(self, client_id: str) -> None:
        await self._redis.delete(keys.oauth_client(client_id))

    async def put_preregistered_client(self, client: OAuthClient) -> None:
        await self._redis.hset(keys.oauth_preregistered_clients(), client.client_id, client.model_dump_json())

    async def get_preregistered_client(self, client_id: str) -> OAuthClient | None:
        key = keys.oauth_preregistered_clients()
        return _parse(OAuthClient, await self._redis.hget(key, client_id), f"{key}[{client_id}]")

    async def list_preregistered_clients(self) -> list[OAuthClient]:
        key = keys.oauth_preregistered_clients()
        raw = await self._redis.hgetall(key)
        parsed = (_parse(OAuthClient, value, key) for value in raw.values())
        return sorted((c for c in parsed if c is not None), key=lambda c: c.client_id)

    async def delete_preregistered_client(self, client_id: str, if_match: str | None = None) -> bool:
        """Delete the client; with `if_match`, only while its ETag is one of those (else 412)."""
        key = keys.oauth_preregistered_clients()
        if if_match is None:
            return bool(await self._redis.hdel(key, client_id))
        what = f"OAuth client {client_id!r}"
        return await self._delete_field_if_match(key, client_id, OAuthClient, if_match, what)

    async def _delete_field_if_match(
        self, key: str, field: str, model: type[BaseModel], if_match: str, what: str
    ) -> bool:
        """HDEL one field when the stored object's ETag matches `if_match` (preconditions.py), atomically:
        the row is read under WATCH, so a write between the check and the delete re-runs the check. An
        absent row deletes nothing (the caller's 404), it is not a 412."""
        for _ in range(MAX_CONDITIONAL_ATTEMPTS):
            async with self._redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(key)
                    current = _parse(model, await pipe.hget(key, field), f"{key}[{field}]")
                    if current is None:
                        return False
                    require_match(if_match, etag_of(current), what)
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.hdel(key, field)
                    (deleted,) = await pipe.execute()
                    return bool(deleted)
                except WatchError:
                    continue
        raise StoreBusy(f"{what} kept changing; retry the request")

    # ---- authorization requests and upstream logins

    async def put_authorization_request(self, request: AuthorizationRequest, ttl_seconds: int) -> None:
        await self._put(keys.oauth_authorization_request(request.request_id), request, ttl_seconds)

    async def get_authorization_request(self, request_id: str) -> AuthorizationRequest | None:
        return await self._get(AuthorizationRequest, keys.oauth_authorization_request(request_id))

    async def take_authorization_request(self, request_id: str) -> AuthorizationRequest | None:
        key = keys.oauth_authorization_request(request_id)
        return _parse(AuthorizationRequest, await self._redis.getdel(key), key)

    async def put_upstream_login(self, state_sha256: str, login: UpstreamLogin, ttl_seconds: int) -> None:
        await self._put(keys.oauth_upstream_state(state_sha256), login, ttl_seconds)

    async def take_upstream_login(self, state_sha256: str) -> UpstreamLogin | None:
        key = keys.oauth_upstream_state(state_sha256)
        return _parse(UpstreamLogin, await self._redis.getdel(key), key)

    # ---- codes

    async def put_code(self, code_sha256: str, code: AuthorizationCode, ttl_seconds: int) -> None:
        await self._put(keys.oauth_code(code_sha256), code, ttl_seconds)

    async def get_code(self, code_sha256: str) -> AuthorizationCode | None:
        """Read a code without consuming it (its checks run before redeem_code takes it)."""
        return await self._get(AuthorizationCode, keys.oauth_code(code_sha256))

    async def redeem_code(self, code_sha256: str, family_id: str, remember_seconds: int) -> CodeRedemption:
        code_key = keys.oauth_code(code_sha256)
        outcome, value = await self._redis.eval(
            _REDEEM_CODE, 2, code_key, keys.oauth_code_used(code_sha256), family_id, str(remember_seconds)
        )
        if outcome == "ok":
            code = _parse(AuthorizationCode, value, code_key)
            return CodeRedemption("ok", code) if code is not None else CodeRedemption("unknown")
        if outcome == "replayed":
            return CodeRedemption("replayed", replayed_family=str(value))
        return CodeRedemption("unknown")

    # ---- grants and refresh tokens

    async def put_grant(self, grant: OAuthGrant, ttl_seconds: int) -> None:
        await self._put(keys.oauth_grant(grant.family_id), grant, ttl_seconds)

    async def get_grant(self, family_id: str) -> OAuthGrant | None:
        return await self._get(OAuthGrant, keys.oauth_grant(family_id))

    async def extend_grant(self, family_id: str, ttl_seconds: int) -> None:
        await self._redis.expire(keys.oauth_grant(family_id), ttl_seconds)
        await self._redis.expire(keys.oauth_grant_jtis(family_id), ttl_seconds)

    async def add_grant_jti(self, family_id: str, jti: str, exp: int, ttl_seconds: int) -> None:
        key = keys.oauth_grant_jtis(family_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zadd(key, {jti: exp})
            pipe.zremrangebyscore(key, "-inf", time.time() - 60)
            pipe.expire(key, ttl_seconds)
            await pipe.execute()

    async def put_refresh(self, token_sha256: str, record: RefreshRecord, ttl_seconds: int) -> None:
        await self._put(keys.oauth_refresh_token(token_sha256), record, ttl_seconds)

    async def get_refresh(self, token_sha256: str) -> RefreshRecord | None:
        return await self._get(RefreshRecord, keys.oauth_refresh_token(token_sha256))

    async def mark_rotated(self, token_sha256: str, record: RefreshRecord) -> bool:
        """Record the first rotation of a refresh token; False when another request rotated it first."""
        key = keys.oauth_refresh_token(token_sha256)
        async with self._redis.pipeline(transaction=True) as pipe:
            await pipe.watch(key)
            current = _parse(RefreshRecord, await pipe.get(key), key)
            if current is None or current.rotated_at is not None:
                await pipe.unwatch()  # type: ignore[no-untyped-call]
                return False
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.set(key, record.model_dump_json(), keepttl=True)
            try:
                await pipe.execute()
            except aioredis.WatchError:
                return False
        return True

    async def delete_refresh(self, token_sha256: str) -> None:
        await self._redis.delete(keys.oauth_refresh_token(token_sha256))

    async def revoke_family(self, family_id: str) -> list[str]:
        """End a grant: its refresh tokens stop working (they need the grant) and its access tokens' jtis
        are revoked. Returns the revoked jtis."""
        jtis_key = keys.oauth_grant_jtis(family_id)
        entries: list[Any] = list(await self._redis.zrange(jtis_key, 0, -1, withscores=True))
        await self._redis.delete(keys.oauth_grant(family_id), jtis_key)
        revoked = {str(jti): int(exp) for jti, exp in entries}
        await self.revoke_jtis(revoked)
        return list(revoked)

    # ---- revoked access tokens

    async def revoke_jtis(self, jtis: dict[str, int]) -> None:
        if not jtis:
            return
        now = time.time()
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zadd(keys.oauth_revoked_jtis(), {jti: exp for jti, exp in jtis.items()})
            # An expired token is refused on its own; its jti need not be remembered any longer.
            pipe.zremrangebyscore(keys.oauth_revoked_jtis(), "-inf", now - 300)
            for jti, exp in jtis.items():
                pipe.publish(keys.oauth_revocations_channel(), f"{jti} {exp}")
            await pipe.execute()

    async def is_jti_revoked(self, jti: str) -> bool:
        return await self._redis.zscore(keys.oauth_revoked_jtis(), jti) is not None

    # ---- consent (per login: a hash of records, each with its own expiry)

    async def put_consent(self, consent: OAuthConsent) -> None:
        key = keys.oauth_consents(consent.login)
        ttl = max(1, int(consent.expires_at - time.time()) + 1)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, consent.consent_id, consent.model_dump_json())
            # The hash lives as long as its latest record: set a TTL if it has none, else only extend it.
            pipe.expire(key, ttl, nx=True)
            pipe.expire(key, ttl, gt=True)
            pipe.sadd(keys.oauth_consent_logins(), consent.login)
            await pipe.execute()

    async def consents_of(self, login: str) -> list[OAuthConsent]:
        """A login's consent records that have not expired (expired ones are deleted on the way)."""
        key = keys.oauth_consents(login)
        raw = await self._redis.hgetall(key)
        if not raw:  # expired as a whole (its TTL): forget the login in the listing index too
            await self._redis.srem(keys.oauth_consent_logins(), login)
            return []
        now = time.time()
        live: list[OAuthConsent] = []
        stale: list[str] = []
        for consent_id, value in raw.items():
            consent = _parse(OAuthConsent, value, f"{key}[{consent_id}]")
            if consent is None or consent.expires_at <= now:
                stale.append(consent_id)
            else:
                live.append(consent)
        if stale:
            await self.delete_consents(login, stale)
        return sorted(live, key=lambda c: c.created_at)

    async def delete_consents(self, login: str, consent_ids: list[str]) -> int:
        if not consent_ids:
            return 0
        key = keys.oauth_consents(login)
        deleted = int(await self._redis.hdel(key, *consent_ids))
        if not await self._redis.exists(key):
            await self._redis.srem(keys.oauth_consent_logins(), login)
        return deleted

    async def delete_consent_if_match(self, login: str, consent_id: str, if_match: str) -> bool:
        key = keys.oauth_consents(login)
        what = f"consent {consent_id!r}"
        deleted = await self._delete_field_if_match(key, consent_id, OAuthConsent, if_match, what)
        if deleted and not await self._redis.exists(key):
            await self._redis.srem(keys.oauth_consent_logins(), login)
        return deleted

    async def consent_logins(self) -> list[str]:
        """Logins that may have consent records (some may have expired since; consents_of tells)."""
        return sorted(await self._redis.smembers(keys.oauth_consent_logins()))

    # ---- device logins

    async def put_device_login(self, code_sha256: str, login: DeviceLogin, ttl_seconds: int) -> None:
        await self._put(keys.oauth_device_login(code_sha256), login, ttl_seconds)

    async def get_device_login(self, code_sha256: str) -> DeviceLogin | None:
        return await self._get(DeviceLogin, keys.oauth_device_login(code_sha256))

    async def delete_device_login(self, code_sha256: str) -> bool:
        return bool(await self._redis.delete(keys.oauth_device_login(code_sha256)))
