"""Authorization server metadata (RFC 8414) and its OpenID discovery twin.

Both documents are served at the well-known path, and, when the issuer URL has a path, at the
path-inserted form (`/.well-known/oauth-authorization-server/<path>`) and OpenID's appended form
(`<path>/.well-known/openid-configuration`). We issue no ID tokens, so the OpenID document carries the
same OAuth fields and nothing it cannot honour.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from .grant_types import AUTHORIZATION_CODE, CLIENT_CREDENTIALS, DEVICE_CODE, REFRESH_TOKEN

CLIENT_AUTH_METHODS = ["none", "client_secret_post", "client_secret_basic"]


def issuer_path(issuer: str) -> str:
    return urlsplit(issuer).path.rstrip("/")


def well_known_paths(issuer: str) -> list[str]:
    path = issuer_path(issuer)
    names = ["oauth-authorization-server", "openid-configuration"]
    out = [f"/.well-known/{name}" for name in names]
    if path:
        out += [f"/.well-known/{name}{path}" for name in names]
        out.append(f"{path}/.well-known/openid-configuration")
    return out


def endpoint(issuer: str, path: str) -> str:
    return f"{issuer}{path}"


def authorization_server_metadata(issuer: str, scopes_supported: list[str]) -> dict[str, Any]:
    return {
        "issuer": issuer,
        "authorization_endpoint": endpoint(issuer, "/authorize"),
        "token_endpoint": endpoint(issuer, "/token"),
        "registration_endpoint": endpoint(issuer, "/register"),
        "jwks_uri": endpoint(issuer, "/jwks.json"),
        "introspection_endpoint": endpoint(issuer, "/introspect"),
        "revocation_endpoint": endpoint(issuer, "/revoke"),
        "device_authorization_endpoint": endpoint(issuer, "/device/code"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": [
            AUTHORIZATION_CODE,
            REFRESH_TOKEN,
            DEVICE_CODE,
            CLIENT_CREDENTIALS,  # machine clients the admin pre-registered with it enabled
        ],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": CLIENT_AUTH_METHODS,
        "revocation_endpoint_auth_methods_supported": CLIENT_AUTH_METHODS,
        "introspection_endpoint_auth_methods_supported": CLIENT_AUTH_METHODS,
        "scopes_supported": scopes_supported,
        "resource_indicators_supported": True,
        "authorization_response_iss_parameter_supported": True,
        "client_id_metadata_document_supported": True,
        "token_endpoint_auth_signing_alg_values_supported": ["RS256"],
    }
