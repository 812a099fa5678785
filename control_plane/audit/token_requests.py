"""OAuth audit events of the token-side endpoints (/token, /device/code, /device/token, /introspect,
/revoke, /authorize refusals), taken at the HTTP boundary (api/oauth.py) from the request's parameters and
the answer. A token issued for a resource whose allowlist will not admit its user (or machine client) is
recorded as `allowlist_denied`: the data plane enforces the allowlists, the authorization server only says
so when it issues the token.

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
from ..oauth.resource_indicators import ResourceCatalogue
from .oauth_events import OAuthAudit

# Device-flow polls answered "not yet": the normal rhythm of a device login, not events.
_NOT_EVENTS = frozenset({"authorization_pending", "slow_down"})
ALLOWLIST_DENIED = "allowlist_denied"
DEVICE_AUTHORIZATION = "device_authorization"
TOKEN_INTROSPECTED = "token_introspected"
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


async def token_answered(
    audit: OAuthAudit,
    params: Params,
    client_id: str,
    answer: dict[str, Any],
    catalogue: ResourceCatalogue | None = None,
) -> None:
    claims = _claims(answer.get("access_token"))
    grant = _grant(params, "device_code")
    login = str(claims.get("login") or "")
    scope = str(answer.get("scope") or claims.get("scope") or "")
    await audit.record(
        "token_refreshed" if grant == "refresh_token" else "token_issued",
        "success",
        login=login,
        client_id=client_id,
        grant_type=grant,
        resources=_audience(claims),
        scope=scope,
    )
    if catalogue is None or grant == "refresh_token":
        return  # a refresh changes nobody's access: the new grant's issue said it already
    # The allowlists are enforced by the data plane on every request; what the authorization server can do
    # is say, when it issues a token, at which resources the data plane will refuse it and why.
    orgs = claims.get("orgs")
    org_names = [o for o in orgs if isinstance(o, str)] if isinstance(orgs, list) else []
    for resource in _audience(claims):
        proxy = catalogue.proxy_for(resource)
        refusal = proxy.allowlist_refusal(login, org_names, client_id) if proxy is not None else None
        if refusal is not None:
            await audit.record(
                ALLOWLIST_DENIED,
                "failure",
                reason=f"access_denied: {refusal}; the proxy answers 403 to this token there",
                login=login,
                client_id=client_id,
                grant_type=grant,
                resources=[resource],
                scope=scope,
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


async def device_started(audit: OAuthAudit, params: Params, client_id: str, error: OAuthError | None) -> None:
    """A device login started (/device/code), or refused; its device and user codes are never recorded."""
    await audit.record(
        DEVICE_AUTHORIZATION,
        "success" if error is None else "failure",
        reason="" if error is None else f"{error.error}: {error.description}",
        client_id=client_id,
        grant_type="device_code",
        resources=params.all("resource"),
        scope=params.get("scope") or "",
    )


async def token_introspected(
    audit: OAuthAudit, caller: str, answer: dict[str, Any] | None, error: OAuthError | None
) -> None:
    """Who asked (`caller`: a client id, or "" for the admin token) and, for an active token, whose it is
    (from our own verified answer, never from the presented token)."""
    if error is not None:
        reason = f"{error.error}: {error.description}"
    elif not (answer or {}).get("active"):
        reason = "inactive: the token is unknown, expired, revoked or not the caller's"
    else:
        reason = ""
    answer = answer or {}
    aud = answer.get("aud")
    await audit.record(
        TOKEN_INTROSPECTED,
        "success" if not reason else "failure",
        reason=reason,
        login=str(answer.get("username") or ""),
        client_id=caller,
        resources=[aud] if isinstance(aud, str) else [a for a in aud or [] if isinstance(a, str)],
        scope=str(answer.get("scope") or ""),
        detail=f"token of client {answer.get('client_id')!r}" if answer.get("active") else "",
    )
