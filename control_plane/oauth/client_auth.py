"""Client authentication at the token, introspection and revocation endpoints (RFC 6749 §2.3, §3.2.1).

Methods: `none` (public clients send client_id only), `client_secret_basic` and `client_secret_post`.
A confidential client may use either secret method. An unknown client, or a wrong or missing secret, is
401 invalid_client. Secrets are compared as SHA-256 digests in constant time.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from urllib.parse import unquote_plus

from control_plane.records import OAuthClient
from shared.secrets import constant_time_equal, token_sha256

from .errors import InvalidClient, OAuthError
from .params import Params


def _basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidClient("malformed HTTP Basic credentials", basic_used=True) from exc
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise InvalidClient("malformed HTTP Basic credentials", basic_used=True)
    # RFC 6749 §2.3.1: both parts are form-urlencoded before Basic encoding.
    return unquote_plus(client_id), unquote_plus(secret)


ClientLookup = Callable[[str], Awaitable[OAuthClient | None]]


async def authenticate_client(params: Params, authorization: str | None, lookup: ClientLookup) -> OAuthClient:
    basic = _basic_credentials(authorization)
    if basic is not None:
        client_id, secret = basic
        if params.get("client_id", client_id) != client_id:
            raise OAuthError("invalid_request", "client_id differs between Basic credentials and the body")
        if "client_secret" in params:
            raise OAuthError("invalid_request", "use one client authentication method, not two")
    else:
        client_id = params.get("client_id", "")
        secret = params.get("client_secret", "")
        if not client_id:
            raise InvalidClient("client authentication is required (client_id)")
    client = await lookup(client_id)
    if client is None:
        raise InvalidClient(f"unknown client {client_id!r}", basic_used=basic is not None)
    if client.token_endpoint_auth_method == "none":
        return client
    if not secret or not constant_time_equal(token_sha256(secret), client.client_secret_sha256):
        raise InvalidClient("client authentication failed", basic_used=basic is not None)
    return client
