"""The token-signing key ring: every control-plane replica signs with the same keys, kept in Redis.

The ring (shared.keys.oauth_signing_keys(), an OAuthSigningKeyRing) holds each key's private half encrypted
with the KEK (context "oauth-signing-key:<kid>"), its public JWK, which key signs, and when each key that
no longer signs retires. It is only ever written through the config-write transaction (Store.transact:
optimistic, under WATCH of the config version), together with the published JWKS (shared.keys.oauth_jwks()),
a config-version bump and an "auth" change event. So:

- it is created once: the first replica that needs keys and finds none writes a ring (the key of
  OAUTH_JWT_PRIVATE_KEY_B64 when set, an import for deployments that kept it in .env; else a fresh RSA
  key); a replica that loses that race re-plans, finds the winner's ring and adopts it (the design's
  SET NX, made atomic with the JWKS it publishes);
- a rotation wakes every data plane at once (they reload their JWKS with the new config version) and every
  other control-plane replica, which listens on the same wake-up channel and also re-reads the ring every
  OAUTH_SIGNING_KEYS_REFRESH_SECONDS (pub/sub is only a hint);
- after a rotation the new key signs at once and the previous one keeps verifying until its `retires_at`
  (default: the access-token lifetime plus a margin, so every token it signed has expired). Each replica
  wakes at the earliest retirement and removes retired keys; whoever commits first wins, the others find
  nothing left to do.

Invariants: plaintext private keys exist only in memory; a ring that cannot be read or decrypted (KEK
missing or changed, damaged JSON) is never replaced, the server answers 503 instead; a ring Redis lost
(flushed) is written back, from memory, by the next replica about to sign, so the JWKS data planes read
always names the key that signs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import RedisError

from control_plane.records import OAuthSigningKey, OAuthSigningKeyRing
from shared import keys
from shared.encryption import EncryptionError, Keyring
from shared.models import ADMIN_OWNER

from ..store import ConfigWrite, Reader, Store
from .errors import NotConfigured, OAuthError
from .signing import SigningKeyError, SigningKeys, load_private_key, new_private_pem, public_jwk

log = logging.getLogger(__name__)

# Beyond the access-token lifetime: the data plane's expiry leeway (30 s) and clock skew between hosts.
RETIREMENT_MARGIN_SECONDS = 60
LISTEN_POLL_SECONDS = 1.0
BACKOFF_INITIAL_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 10.0
CHANGE_NAME = "oauth-signing-keys"

RingChange = Callable[[OAuthSigningKeyRing | None, float], OAuthSigningKeyRing | None]


def signing_key_context(kid: str) -> str:
    """Encryption context of a signing key's private half: a ciphertext moved to another kid fails."""
    return f"oauth-signing-key:{kid}"


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What may be shown about a key: never private material."""

    kid: str
    created_at: float
    active: bool
    retires_at: float | None


def _retired(key: OAuthSigningKey, now: float) -> bool:
    return key.retires_at is not None and key.retires_at <= now


def published_jwks(ring: OAuthSigningKeyRing, now: float) -> dict[str, list[dict[str, str]]]:
    """The JWKS for a ring: the active key first, then every key that has not retired."""
    ordered = sorted(ring.keys, key=lambda k: k.kid != ring.active_kid)
    return {"keys": [dict(k.public_jwk) for k in ordered if not _retired(k, now)]}


def _parse(raw: str) -> OAuthSigningKeyRing:
    try:
        return OAuthSigningKeyRing.model_validate_json(raw)
    except ValidationError as exc:
        log.error("the signing-key ring in Redis does not validate: %s", exc)
        raise NotConfigured(
            f"the token-signing key ring in Redis ({keys.oauth_signing_keys()}) is damaged; "
            "it is never replaced automatically"
        ) from exc


class SigningKeyRing:
    def __init__(
        self,
        store: Store,
        kek: Keyring,
        *,
        import_pem: bytes | None,
        default_retire_seconds: int,
        refresh_seconds: float,
    ) -> None:
        self._store = store
        self._redis: aioredis.Redis = store.redis
        self._kek = kek
        self._import_pem = import_pem
        self._default_retire_seconds = default_retire_seconds
        self._refresh_seconds = refresh_seconds
        self._ring: OAuthSigningKeyRing | None = None  # what `_keys` was built from
        self._keys: SigningKeys | None = None
        self._valid_until = float("inf")  # the earliest retirement among the keys in `_keys`
        self._lost = False  # Redis no longer holds the ring this replica signs with
        self._warned_import = False
        self._next_check = 0.0
        self._stopped = False
        self._lock = asyncio.Lock()

    # ---- what the endpoints use

    async def current(self, *, for_signing: bool = False) -> SigningKeys:
        """The keys to sign and verify with. On first use the ring is loaded (and created when Redis has
        none); before signing, a ring Redis lost is written back first (one EXISTS per token)."""
        ring_key = keys.oauth_signing_keys()
        try:
            if self._keys is None or time.time() >= self._valid_until:
                async with self._lock:
                    if self._keys is None or time.time() >= self._valid_until:
                        await self._reload(create=True)
            if for_signing and not await self._redis.exists(ring_key):
                async with self._lock:
                    if not await self._redis.exists(ring_key):
                        await self._write_back()
        except (RedisError, OSError) as exc:
            raise OAuthError(
                "temporarily_unavailable", "the token-signing keys cannot be read from Redis", status=503
            ) from exc
        assert self._keys is not None
        return self._keys

    async def describe(self) -> list[KeyInfo]:
        """Every key of the ring as stored in Redis (the authority), the active one first."""
        await self.current()
        raw = await self._redis.get(keys.oauth_signing_keys())
        ring = _parse(raw) if raw is not None else self._ring
        if ring is None:
            return []
        ordered = sorted(ring.keys, key=lambda k: (k.kid != ring.active_kid, -k.created_at))
        return [KeyInfo(k.kid, k.created_at, k.kid == ring.active_kid, k.retires_at) for k in ordered]

    async def rotate(self, retire_previous_after_seconds: int | None = None) -> list[KeyInfo]:
        """A new key signs from now on. The key it replaces verifies for `retire_previous_after_seconds`
        (default: the access-token lifetime plus a margin); given explicitly, it also shortens the time left
        to any older key still retiring (0 = remove them at once, for a key that leaked)."""
        await self.current(for_signing=True)
        pem = await asyncio.to_thread(new_private_pem)
        fresh = self._entry(pem, time.time())
        explicit = retire_previous_after_seconds is not None
        retire_after = retire_previous_after_seconds if explicit else self._default_retire_seconds

        def change(stored: OAuthSigningKeyRing | None, now: float) -> OAuthSigningKeyRing:
            base = stored if stored is not None else self._ring
            if base is None:  # current() loaded or created one; only a concurrent FLUSHALL gets here
                raise OAuthError("temporarily_unavailable", "no signing-key ring to rotate", status=503)
            retire_at = now + (retire_after or 0)
            kept: list[OAuthSigningKey] = []
            for key in base.keys:
                if key.kid == base.active_kid:
                    key = key.model_copy(update={"retires_at": retire_at})
                elif explicit:
                    key = key.model_copy(update={"retires_at": min(key.retires_at or retire_at, retire_at)})
                if not _retired(key, now):
                    kept.append(key)
            return OAuthSigningKeyRing(active_kid=fresh.kid, keys=[fresh, *kept], updated_at=now)

        async with self._lock:
            await self._transact(change)
            await self._reload(create=False)
        log.info("token-signing key rotated: %s signs now", fresh.kid)
        return await self.describe()

    # ---- following the ring

    async def refresh(self) -> None:
        """Re-read the ring (a wake-up, the periodic check or a retirement time); remove retired keys."""
        async with self._lock:
            try:
                await self._reload(create=False)
                ring = self._ring
                if ring is not None and not self._lost and any(_retired(k, time.time()) for k in ring.keys):
                    await self._transact(_without_retired)
                    await self._reload(create=False)
            finally:
                self._schedule()

    def stop(self) -> None:
        """End `run` at its next wake-up (at most LISTEN_POLL_SECONDS): a cancellation can be lost inside
        the Redis client while it connects, so the loop also checks this flag."""
        self._stopped = True

    async def run(self) -> None:
        """Follow rotations made by any replica until stopped: re-read on every config wake-up (ring
        writes bump the config version), at least every refresh interval, and at each retirement."""
        backoff = BACKOFF_INITIAL_SECONDS
        while not self._stopped:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(keys.changes_channel())
                await self.refresh()
                backoff = BACKOFF_INITIAL_SECONDS
                while not self._stopped:
                    timeout = min(max(self._next_check - time.time(), 0.0), LISTEN_POLL_SECONDS)
                    message = await pubsub.get_message(timeout=timeout)
                    if message is not None or time.time() >= self._next_check:
                        await self.refresh()
            except (RedisError, OSError) as exc:
                log.warning("signing-key ring: Redis unavailable (%s); retrying", type(exc).__name__)
            except OAuthError as exc:
                log.error("signing-key ring: %s", exc.description)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)

    # ---- internals (called with the lock held)

    def _schedule(self) -> None:
        now = time.time()
        retirements = [k.retires_at for k in (self._ring.keys if self._ring else []) if k.retires_at]
        self._next_check = min([now + self._refresh_seconds, *(t for t in retirements if t > now)])

    async def _reload(self, *, create: bool) -> None:
        raw = await self._redis.get(keys.oauth_signing_keys())
        if raw is None:
            if self._ring is not None:
                if not self._lost:
                    log.warning(
                        "the signing-key ring is gone from Redis; it is written back before the next token"
                    )
                self._lost = True
                return
            if not create:
                return
            await self._create()
            raw = await self._redis.get(keys.oauth_signing_keys())
            if raw is None:
                raise OAuthError("temporarily_unavailable", "the signing-key ring vanished", status=503)
        self._lost = False
        ring = _parse(raw)
        now = time.time()
        if ring != self._ring or now >= self._valid_until:
            self._keys = self._decrypt(ring, now)
            self._ring = ring
            self._valid_until = min(
                [float("inf"), *(k.retires_at for k in ring.keys if k.retires_at and k.retires_at > now)]
            )
        self._warn_about_import(ring)

    async def _create(self) -> None:
        pem = self._import_pem or await asyncio.to_thread(new_private_pem)
        first = self._entry(pem, time.time())

        def change(stored: OAuthSigningKeyRing | None, now: float) -> OAuthSigningKeyRing | None:
            if stored is not None:
                return None  # another replica created it first: adopt theirs
            return OAuthSigningKeyRing(active_kid=first.kid, keys=[first], updated_at=now)

        await self._transact(change)
        log.info(
            "token-signing key ring created (%s)",
            "imported OAUTH_JWT_PRIVATE_KEY_B64" if self._import_pem else "new key",
        )

    async def _write_back(self) -> None:
        held = self._ring

        def change(stored: OAuthSigningKeyRing | None, now: float) -> OAuthSigningKeyRing | None:
            if stored is not None or held is None:
                return None
            return _without_retired(held, now) or held

        await self._transact(change)
        self._lost = False
        log.warning("the signing-key ring was missing from Redis; wrote back the one this replica holds")

    async def _transact(self, change: RingChange) -> None:
        async def plan(reader: Reader) -> ConfigWrite:
            raw = await reader.string(keys.oauth_signing_keys())
            now = time.time()
            updated = change(_parse(raw) if raw is not None else None, now)
            write = ConfigWrite()
            if updated is not None:
                write.put_string(keys.oauth_signing_keys(), updated.model_dump_json())
                jwks = json.dumps(published_jwks(updated, now), separators=(",", ":"))
                write.put_string(keys.oauth_jwks(), jwks)
                write.change("auth", "updated", CHANGE_NAME, ADMIN_OWNER)
            return write

        await self._store.transact(plan)

    def _entry(self, pem: bytes, now: float) -> OAuthSigningKey:
        jwk = public_jwk(load_private_key(pem, "the new signing key").public_key())
        return OAuthSigningKey(
            kid=jwk["kid"],
            private_key_encrypted=self._kek.encrypt(pem, context=signing_key_context(jwk["kid"])),
            public_jwk=jwk,
            created_at=now,
        )

    def _decrypt(self, ring: OAuthSigningKeyRing, now: float) -> SigningKeys:
        pems: dict[str, bytes] = {}
        for key in ring.keys:
            if key.kid != ring.active_kid and _retired(key, now):
                continue
            try:
                pems[key.kid] = self._kek.decrypt(
                    key.private_key_encrypted, context=signing_key_context(key.kid)
                )
            except EncryptionError as exc:
                raise NotConfigured(
                    f"the token-signing key {key.kid} in Redis cannot be decrypted ({exc}); configure the "
                    "KEK it was stored with (KEY_ENCRYPTION_KEY_B64, or KEY_ENCRYPTION_PREVIOUS_KEYS_B64)"
                ) from exc
        active = pems.pop(ring.active_kid)
        try:
            snapshot = SigningKeys.from_pems(active, list(pems.values()))
        except SigningKeyError as exc:
            raise NotConfigured(f"the token-signing key ring in Redis is damaged: {exc}") from exc
        if snapshot.kid != ring.active_kid or set(snapshot.public_pems) != {ring.active_kid, *pems}:
            raise NotConfigured(
                "the token-signing key ring in Redis is damaged: a key does not match its kid"
            )
        return snapshot

    def _warn_about_import(self, ring: OAuthSigningKeyRing) -> None:
        if self._import_pem is None or self._warned_import:
            return
        self._warned_import = True
        kid = public_jwk(load_private_key(self._import_pem, "OAUTH_JWT_PRIVATE_KEY_B64").public_key())["kid"]
        if kid not in {k.kid for k in ring.keys}:
            log.warning(
                "OAUTH_JWT_PRIVATE_KEY_B64 is ignored: the signing-key ring in Redis is the authority "
                "(it was only imported when Redis had no ring); remove it from the environment"
            )


def _without_retired(ring: OAuthSigningKeyRing | None, now: float) -> OAuthSigningKeyRing | None:
    """The ring without its retired keys, or None when there are none to remove."""
    if ring is None or not any(_retired(k, now) for k in ring.keys):
        return None
    kept = [k for k in ring.keys if not _retired(k, now)]
    return ring.model_copy(update={"keys": kept, "updated_at": now})
