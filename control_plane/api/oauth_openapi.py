"""OpenAPI descriptions of the OAuth endpoints' request bodies and query parameters.

The handlers read their form or query themselves (control_plane/oauth/params.py: repeated parameters are
refused, `resource` may repeat), so FastAPI cannot infer what they take; these descriptions put it in the
document, for readers of /docs and for the schemathesis run in the tests, which generates requests from it.
Documentation only: nothing here validates (the handlers do, with RFC 6749 errors).
"""

from __future__ import annotations

from typing import Any

_STRING: dict[str, Any] = {"type": "string"}


def _object(required: list[str], **properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required}


def form(required: list[str], **properties: dict[str, Any]) -> dict[str, Any]:
    """openapi_extra for a route taking an application/x-www-form-urlencoded body."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/x-www-form-urlencoded": {"schema": _object(required, **properties)}},
        }
    }


def query(**parameters: tuple[bool, dict[str, Any]]) -> dict[str, Any]:
    """openapi_extra for a route reading query parameters (name -> (required, schema))."""
    return {
        "parameters": [
            {"name": name, "in": "query", "required": required, "schema": schema}
            for name, (required, schema) in parameters.items()
        ]
    }


CLIENT_AUTH = {"client_id": _STRING, "client_secret": _STRING}

TOKEN = form(
    ["grant_type"],
    grant_type={
        "type": "string",
        "enum": [
            "authorization_code",
            "refresh_token",
            "urn:ietf:params:oauth:grant-type:device_code",
            "client_credentials",
        ],
    },
    code=_STRING,
    code_verifier=_STRING,
    redirect_uri=_STRING,
    refresh_token=_STRING,
    device_code=_STRING,
    scope=_STRING,
    resource=_STRING,
    **CLIENT_AUTH,
)
INTROSPECT = form(["token"], token=_STRING, token_type_hint=_STRING, **CLIENT_AUTH)
REVOKE = form(["token"], token=_STRING, token_type_hint=_STRING, **CLIENT_AUTH)
DEVICE_CODE = form(["client_id"], scope=_STRING, resource=_STRING, **CLIENT_AUTH)
DEVICE_TOKEN = form(["device_code", "client_id"], device_code=_STRING, grant_type=_STRING, **CLIENT_AUTH)
CONSENT = form(
    ["request_id", "csrf_token", "decision"],
    request_id=_STRING,
    csrf_token=_STRING,
    decision={"type": "string", "enum": ["approve", "deny"]},
)
CONSENT_REVOKE = form(["consent_id", "csrf_token"], consent_id=_STRING, csrf_token=_STRING)
AUTHORIZE = query(
    response_type=(True, {"type": "string", "enum": ["code"]}),
    client_id=(True, _STRING),
    redirect_uri=(False, _STRING),
    state=(False, _STRING),
    scope=(False, _STRING),
    resource=(False, _STRING),
    code_challenge=(True, _STRING),
    code_challenge_method=(True, {"type": "string", "enum": ["S256"]}),
    prompt=(False, _STRING),
)
CALLBACK = query(state=(True, _STRING), code=(False, _STRING), error=(False, _STRING))
_METADATA = _object(
    ["redirect_uris"],
    redirect_uris={"type": "array", "items": {"type": "string"}},
    client_name=_STRING,
    token_endpoint_auth_method={
        "type": "string",
        "enum": ["none", "client_secret_basic", "client_secret_post"],
    },
    grant_types={"type": "array", "items": {"type": "string"}},
    response_types={"type": "array", "items": {"type": "string"}},
    scope=_STRING,
    client_uri=_STRING,
    logo_uri=_STRING,
    contacts={"type": "array", "items": {"type": "string"}},
    software_id=_STRING,
    software_version=_STRING,
)
REGISTRATION = {"requestBody": {"required": True, "content": {"application/json": {"schema": _METADATA}}}}
