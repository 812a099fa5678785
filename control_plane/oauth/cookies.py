"""Signed browser cookies of the authorization server: `__Host-` prefix, Secure, HttpOnly, SameSite=Lax.

A value is base64url(JSON payload with `exp`) "." base64url(HMAC-SHA256). The HMAC key is derived from
the KEK (KEY_ENCRYPTION_KEY_B64), so every control-plane replica agrees on it; cookies signed under a
previous KEK (KEY_ENCRYPTION_PREVIOUS_KEYS_B64) still verify, so a KEK rotation logs no one out. It is not
derived from the token-signing key: a leaked signing key must not let anyone forge a session, and a routine
rotation of that key must not log browsers out. Payloads are not secret (do not put secrets in them); they
are only tamper-proof and expiring.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from control_plane.records import UserIdentity
from shared.encryption import Keyring

CONSENT_COOKIE = "__Host-mhp_consent"
FLOW_COOKIE = "__Host-mhp_flow"
SESSION_COOKIE = "__Host-mhp_session"
CONSENTS_COOKIE = "__Host-mhp_consents"  # CSRF binding of the consents page's revoke forms


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _derive(secret_material: bytes) -> bytes:
    return hmac.new(secret_material, b"mhp-oauth-cookie-v1", hashlib.sha256).digest()


class CookieSigner:
    """Signs with the first secret; verifies with any of them."""

    def __init__(self, secret: bytes, previous: Sequence[bytes] = ()) -> None:
        self._key = _derive(secret)
        self._verify_keys = [self._key, *(_derive(s) for s in previous)]

    @classmethod
    def from_keyring(cls, keyring: Keyring) -> CookieSigner:
        current = keyring.keys[keyring.current_id]
        return cls(current, [key for kid, key in keyring.keys.items() if kid != keyring.current_id])

    def _mac(self, name: str, body: str, key: bytes | None = None) -> bytes:
        # The cookie name is signed too, so a value cannot be moved from one cookie to another.
        return hmac.new(key or self._key, f"{name}\x00{body}".encode("ascii"), hashlib.sha256).digest()

    def encode(
        self, name: str, payload: dict[str, Any], max_age_seconds: int, now: float | None = None
    ) -> str:
        issued = time.time() if now is None else now
        body = _b64(
            json.dumps({**payload, "exp": int(issued) + max_age_seconds}, separators=(",", ":")).encode()
        )
        return f"{body}.{_b64(self._mac(name, body))}"

    def decode(self, name: str, value: str | None, now: float | None = None) -> dict[str, Any] | None:
        if not value or value.count(".") != 1:
            return None
        body, mac = value.split(".")
        try:
            presented = _unb64(mac)
            if not any(hmac.compare_digest(presented, self._mac(name, body, k)) for k in self._verify_keys):
                return None
            payload = json.loads(_unb64(body))
        except (ValueError, UnicodeError):
            return None
        if not isinstance(payload, dict) or not isinstance(payload.get("exp"), int):
            return None
        if payload["exp"] < (time.time() if now is None else now):
            return None
        return payload

    def set_cookie(self, name: str, payload: dict[str, Any], max_age_seconds: int) -> str:
        """A Set-Cookie header value."""
        value = self.encode(name, payload, max_age_seconds)
        return f"{name}={value}; Path=/; Max-Age={max_age_seconds}; Secure; HttpOnly; SameSite=Lax"


def session_user(signer: CookieSigner, cookies: dict[str, str]) -> UserIdentity | None:
    """Who signed in at the upstream provider in this browser (our session cookie), or None."""
    session = signer.decode(SESSION_COOKIE, cookies.get(SESSION_COOKIE))
    if session is None:
        return None
    try:
        return UserIdentity.model_validate(session.get("user"))
    except ValidationError:
        # Signed by us but from an older schema: ignore it, the user signs in again.
        return None


def clear_cookie(name: str) -> str:
    return f"{name}=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Lax"
