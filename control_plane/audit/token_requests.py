"""OAuth audit events of the token-side endpoints (/token, /device/token, /revoke, /authorize refusals),
taken at the HTTP boundary (api/oauth.py) from the request's parameters and the answer.

Who a token was issued to is read from the access token we just minted (its payload; the signature is ours
and was made a moment ago), so no OAuth module has to report it. Only names go into an event: the token
itself, codes, verifiers and secrets never do.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import unquote_plus

from ..oauth.errors import OAuthError
from ..oauth.params import Params
from .oauth_events import OAuthAudit

# Device-flow polls answered "not yet": the normal rhythm of a device login, not events.
_NOT_EVENTS = frozenset({"authorization_pending", "slow_down"})
_GRANT_SHORT = {"urn:ietf:params:oauth:grant-type:device_code": "device_code"}


def _claims(jwt: object) -> dict[str, Any]:
    if not isinstance(jwt, str) or jwt.count(".") != 2:
        return {}
    payload = jwt.split(".")[1]
    try:
        decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError:
        return {}
    return decoded if isinstance(decoded, dict) else {}


def _audience(claims: dict[str, Any]) -> list[str]:
    aud = claims.get("aud")
    if isinstance(aud, str):
        return [aud]
    return [a for a in aud if isinstance(a, str)] if isinstance(aud, list) else []


def _grant(params: Params, default: str = "") -> str:
    grant = params.get("grant_type") or default
    return _GRANT_SHORT.get(grant, grant)[:100]


async def token_answered(audit: OAuthAudit, params: Params, client_id: str, answer: dict[str, Any]) -> None:
    claims = _claims(answer.get("access_token"))
    grant = _grant(params, "device_code")
    await audit.record(
        "token_refreshed" if grant == "refresh_token" else "token_issued",
        "success",
        login=str(claims.get("login") or ""),
        client_id=client_id,
        grant_type=grant,
        resources=_audience(claims),
        scope=str(answer.get("scope") or claims.get("scope") or ""),
    )


def claimed_client_id(params: Params, authorization: str | None) -> str:
    """The client id a request claims (body, or the user part of HTTP Basic; never the secret part)."""
    if params.get("client_id"):
        return params.get("client_id") or ""
    scheme, _, credentials = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return ""
    try:
        user = base64.b64decode(credentials.strip(), validate=True).decode("utf-8").split(":", 1)[0]
    except (ValueError, UnicodeDecodeError):
        return ""
    return unquote_plus(user)[:300]


async def token_refused(
    audit: OAuthAudit, params: Params, exc: OAuthError, client_id: str, *, device: bool = False
) -> None:
    if exc.error in _NOT_EVENTS:
        return
    await audit.record(
        "token_denied",
        "failure",
        reason=f"{exc.error}: {exc.description}",
        client_id=client_id,
        grant_type=_grant(params, "device_code" if device else ""),
        resources=params.all("resource"),
        scope=params.get("scope") or "",
    )


async def token_revoked(audit: OAuthAudit, params: Params, client_id: str, error: OAuthError | None) -> None:
    claims = _claims(params.get("token"))
    await audit.record(
        "token_revoked",
        "success" if error is None else "failure",
        reason="" if error is None else f"{error.error}: {error.description}",
        login=str(claims.get("login") or ""),
        client_id=client_id,
        resources=_audience(claims),
    )


async def authorization_refused(audit: OAuthAudit, params: Params, error: str, description: str) -> None:
    await audit.record(
        "authorization_denied",
        "failure",
        reason=f"{error}: {description}",
        client_id=params.get("client_id") or "",
        resources=params.all("resource"),
        scope=params.get("scope") or "",
    )
