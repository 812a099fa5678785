"""Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document, MCP 2025-11-25): a client
whose client_id is an https URL is described by the JSON document at that URL, no registration needed.

Rules: the URL is https with a path; the fetched document is a JSON object whose `client_id` equals the
URL exactly; its redirect_uris follow our registration rules; only public clients
(token_endpoint_auth_method `none`) are accepted. Fetching is guarded against SSRF: every address the
host resolves to must be public (unless OAUTH_CIMD_ALLOW_PRIVATE_NETWORKS, for tests), no redirects,
a 5 s timeout and a 16 KiB cap. The name is resolved again by the HTTP client when it connects; a DNS
answer that changes between the two lookups is not defended against here. Documents are cached in Redis
for their Cache-Control max-age (clamped to 1 minute .. 1 day; 1 hour without one).
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import re
import socket
from urllib.parse import urlsplit

import httpx
import redis.asyncio as aioredis
from pydantic import ValidationError

from control_plane.records import OAuthClient
from shared import keys

from ..audit import client_requests
from ..audit.oauth_events import OAuthAudit
from .errors import OAuthError
from .redirect_uris import InvalidRedirectUri, check_registrable

MAX_DOCUMENT_BYTES = 16 * 1024
FETCH_TIMEOUT_SECONDS = 5.0
DEFAULT_CACHE_SECONDS = 3600
MIN_CACHE_SECONDS = 60
MAX_CACHE_SECONDS = 86400


def is_metadata_document_client_id(client_id: str) -> bool:
    return client_id.startswith("https://")


def _invalid(description: str) -> OAuthError:
    return OAuthError("invalid_client", f"client metadata document: {description}", status=401)


def address_allowed(address: str, *, allow_private: bool) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    return allow_private or ip.is_global


def check_url(client_id: str) -> tuple[str, int]:
    parts = urlsplit(client_id)
    if parts.scheme != "https" or not parts.hostname:
        raise _invalid("client_id must be an https URL")
    if parts.path in ("", "/") or parts.fragment or parts.username or parts.password:
        raise _invalid("client_id URL needs a path and no fragment or credentials")
    if "." in parts.path.split("/") or ".." in parts.path.split("/"):
        raise _invalid("client_id URL must not contain dot segments")
    try:
        port = parts.port or 443
    except ValueError as exc:
        raise _invalid("client_id URL has an invalid port") from exc
    return parts.hostname, port


def cache_seconds(cache_control: str | None) -> int:
    match = re.search(r"max-age=(\d+)", cache_control or "")
    if cache_control and "no-store" in cache_control:
        return MIN_CACHE_SECONDS
    if match is None:
        return DEFAULT_CACHE_SECONDS
    return max(MIN_CACHE_SECONDS, min(MAX_CACHE_SECONDS, int(match.group(1))))


def client_from_document(client_id: str, document: object) -> OAuthClient:
    if not isinstance(document, dict):
        raise _invalid("not a JSON object")
    if document.get("client_id") != client_id:
        raise _invalid("its client_id does not equal the URL it was fetched from")
    method = document.get("token_endpoint_auth_method", "none")
    if method != "none":
        raise _invalid(f"token_endpoint_auth_method {method!r} is not supported (only none)")
    redirect_uris = document.get("redirect_uris")
    if (
        not isinstance(redirect_uris, list)
        or not redirect_uris
        or not all(isinstance(u, str) for u in redirect_uris)
    ):
        raise _invalid("redirect_uris must be a non-empty list of strings")
    try:
        for uri in redirect_uris:
            check_registrable(uri)
    except InvalidRedirectUri as exc:
        raise _invalid(str(exc)) from exc
    grant_types = document.get("grant_types") or ["authorization_code", "refresh_token"]
    try:
        return OAuthClient(
            client_id=client_id,
            client_name=str(document.get("client_name") or "")[:200],
            redirect_uris=redirect_uris,
            grant_types=[g for g in grant_types if g in ("authorization_code", "refresh_token")],
            token_endpoint_auth_method="none",
            client_uri=str(document.get("client_uri") or "")[:2000],
            logo_uri=str(document.get("logo_uri") or "")[:2000],
        )
    except ValidationError as exc:
        raise _invalid("its metadata does not validate") from exc


class MetadataDocuments:
    def __init__(
        self,
        redis: aioredis.Redis,
        http: httpx.AsyncClient,
        *,
        allow_private_networks: bool,
        audit: OAuthAudit,
    ) -> None:
        self._redis = redis
        self._http = http
        self._allow_private = allow_private_networks
        self._audit = audit

    async def client(self, client_id: str) -> OAuthClient:
        """The client a document describes: from the cache, else fetched (each fetch, and each refusal
        with its reason, is an OAuth audit event: client_metadata_fetched)."""
        try:
            client, fetched = await self._client(client_id)
        except OAuthError as exc:
            await client_requests.metadata_document_refused(self._audit, client_id, exc)
            raise
        if fetched:
            await client_requests.metadata_document_fetched(
                self._audit, client_id, client.client_name, client.redirect_uris
            )
        return client

    async def _client(self, client_id: str) -> tuple[OAuthClient, bool]:
        host, port = check_url(client_id)
        key = keys.oauth_client_metadata_document(hashlib.sha256(client_id.encode()).hexdigest())
        cached = await self._redis.get(key)
        if cached is not None:
            try:
                return OAuthClient.model_validate_json(cached), False
            except ValidationError:
                await self._redis.delete(key)
        await self._check_addresses(host, port)
        try:
            async with self._http.stream(
                "GET", client_id, headers={"Accept": "application/json"}, timeout=FETCH_TIMEOUT_SECONDS
            ) as response:
                if response.status_code != 200:
                    raise _invalid(f"fetching it answered {response.status_code}")
                body = b""
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_DOCUMENT_BYTES:
                        raise _invalid("the document is too large")
                ttl = cache_seconds(response.headers.get("cache-control"))
        except httpx.HTTPError as exc:
            raise _invalid(f"cannot fetch it ({type(exc).__name__})") from exc
        try:
            document = json.loads(body)
        except ValueError as exc:
            raise _invalid("it is not JSON") from exc
        client = client_from_document(client_id, document)
        await self._redis.set(key, client.model_dump_json(), ex=ttl)
        return client, True

    async def _check_addresses(self, host: str, port: int) -> None:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise _invalid(f"its host {host!r} does not resolve") from exc
        for info in infos:
            if not address_allowed(str(info[4][0]), allow_private=self._allow_private):
                raise _invalid(f"its host {host!r} resolves to a non-public address")
