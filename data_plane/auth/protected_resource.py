"""Protected Resource Metadata (RFC 9728) and the WWW-Authenticate challenge (RFC 6750 §3).

The resource URI is what the client typed: scheme://host[:port] from the request plus the proxy's resource
path, canonicalised like shared.models.canonical_resource_uri (default port dropped, no trailing slash).
The PRM document is served at /.well-known/oauth-protected-resource and at the path-inserted form
/.well-known/oauth-protected-resource<resource path>.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from shared.hostnames import InvalidHostname, normalise_hostname
from shared.models import canonical_resource_uri

PRM_WELL_KNOWN = "/.well-known/oauth-protected-resource"
# Clients of the 2025-03-26 spec look for the authorization server on the resource's own origin; the data
# plane forwards these paths of a protected host to the authorization server (the AUTH_HOST proxy).
AUTHORIZATION_SERVER_PATHS = ("/authorize", "/token", "/register")
AUTHORIZATION_SERVER_WELL_KNOWN = (
    "/.well-known/oauth-authorization-server",
    "/.well-known/openid-configuration",
)


def is_authorization_server_path(path: str) -> bool:
    """True for the AS paths a protected host answers by forwarding to the authorization server."""
    if path in AUTHORIZATION_SERVER_PATHS or path.startswith("/register/") or path == "/authorize/consent":
        return True
    return any(path == p or path.startswith(p + "/") for p in AUTHORIZATION_SERVER_WELL_KNOWN)


# Both below are pure and called on every request to a protected proxy with the same few values (its Host
# header, its resource path); URL canonicalisation is the costliest part of the gate's decision. Bounded,
# since the Host header is the client's.
@functools.lru_cache(maxsize=4096)
def origin_of(scheme: str, host_header: str) -> str | None:
    """scheme://host[:port] from the Host header, or None when the header is not a usable host."""
    host = host_header.strip()
    port = ""
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return None
        name, rest = host[1:end], host[end + 1 :]
        if rest and not (rest.startswith(":") and rest[1:].isdigit()):
            return None
        port = rest[1:]
        display = f"[{name.lower()}]"
    else:
        name, _, port = host.partition(":")
        if port and not port.isdigit():
            return None
        try:
            display = normalise_hostname(name, allow_wildcard=False)
        except InvalidHostname:
            return None
    try:
        return canonical_resource_uri(f"{scheme}://{display}{':' + port if port else ''}")
    except ValueError:
        return None


def resource_uri(origin: str, resource_path: str) -> str:
    return canonical_resource_uri(origin + resource_path)


@functools.lru_cache(maxsize=4096)
def accepted_audiences(origin: str, resource_path: str) -> frozenset[str]:
    """The token audiences this resource accepts: its resource URI, and the bare origin."""
    return frozenset({resource_uri(origin, resource_path), canonical_resource_uri(origin)})


def prm_paths(resource_path: str) -> tuple[str, ...]:
    return (PRM_WELL_KNOWN, PRM_WELL_KNOWN + resource_path) if resource_path else (PRM_WELL_KNOWN,)


def prm_url(origin: str, resource_path: str) -> str:
    return origin + PRM_WELL_KNOWN + resource_path


def prm_document(
    *,
    resource: str,
    issuer: str,
    scopes_supported: tuple[str, ...] | list[str],
    resource_name: str = "",
    resource_documentation: str = "",
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "resource": resource,
        "authorization_servers": [issuer],
        "scopes_supported": list(scopes_supported),
        "bearer_methods_supported": ["header"],
        "resource_signing_alg_values_supported": ["RS256"],
    }
    if resource_name:
        document["resource_name"] = resource_name
    if resource_documentation:
        document["resource_documentation"] = resource_documentation
    return document


def prm_body(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode("utf-8")


def _quoted(value: str) -> str:
    # RFC 7230 quoted-string: escape backslash and quote; drop control characters.
    cleaned = "".join(ch for ch in value if ch >= " " and ch != "\x7f")
    return '"' + cleaned.replace("\\", "\\\\").replace('"', '\\"') + '"'


def www_authenticate(
    resource_metadata: str,
    *,
    error: str | None = None,
    description: str | None = None,
    scope: str | None = None,
) -> str:
    params = [f"resource_metadata={_quoted(resource_metadata)}"]
    if error:
        params.append(f"error={_quoted(error)}")
    if description:
        params.append(f"error_description={_quoted(description)}")
    if scope:
        params.append(f"scope={_quoted(scope)}")
    return "Bearer " + ", ".join(params)
