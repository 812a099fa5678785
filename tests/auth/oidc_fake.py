"""A local stand-in for an OpenID Connect provider (the shapes Keycloak, Google, Okta speak), on a real
loopback socket.

    GET  /.well-known/openid-configuration   discovery (issuer = `issuer_override` or this server's URL)
    GET  /authorize                          "signs in" `next_subject`, redirects back with code + state
    POST /token                              code exchange: client auth (Basic, or client_secret_post when
                                             `basic_auth` is off), redirect_uri and PKCE S256 checked
    GET  /userinfo                           the claims of the token's user

Tests set users (sub -> userinfo claims) and `next_subject`, and read what was requested. Tests only.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from tests.harness.json_http import LoopbackFake, LoopbackServer, send_json


@dataclass
class _Code:
    subject: str
    redirect_uri: str
    code_challenge: str


class OidcFake(LoopbackFake):
    def __init__(self, client_id: str = "oidc-client", client_secret: str = "oidc-secret") -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.users: dict[str, dict[str, Any]] = {}
        self.next_subject = ""
        self.basic_auth = True
        self.issuer_override: str | None = None
        self.authorize_requests: list[dict[str, str]] = []
        self.token_auth_seen: list[str] = []
        self._codes: dict[str, _Code] = {}
        self._tokens: dict[str, str] = {}
        self._lock = threading.Lock()
        self._http = LoopbackServer(self._handler_class())

    def settings_env(self) -> dict[str, str]:
        return {
            "UPSTREAM_IDENTITY_PROVIDER": "oidc",
            "OIDC_ISSUER": self.url,
            "OIDC_CLIENT_ID": self.client_id,
            "OIDC_CLIENT_SECRET": self.client_secret,
        }

    def _discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer_override or self.url,
            "authorization_endpoint": f"{self.url}/authorize",
            "token_endpoint": f"{self.url}/token",
            "userinfo_endpoint": f"{self.url}/userinfo",
            "token_endpoint_auth_methods_supported": (
                ["client_secret_basic", "client_secret_post"] if self.basic_auth else ["client_secret_post"]
            ),
            "code_challenge_methods_supported": ["S256"],
        }

    def _authorize(self, query: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        self.authorize_requests.append(query)
        if query.get("client_id") != self.client_id or query.get("response_type") != "code":
            return 400, {}, {"error": "invalid_request"}
        if "openid" not in query.get("scope", "").split():
            return 400, {}, {"error": "invalid_scope"}
        code = secrets.token_urlsafe(16)
        issued = _Code(self.next_subject, query["redirect_uri"], query.get("code_challenge", ""))
        with self._lock:
            self._codes[code] = issued
        location = query["redirect_uri"] + "?" + urlencode({"code": code, "state": query.get("state", "")})
        return 302, {"Location": location}, None

    def _client_ok(self, form: dict[str, str], authorization: str) -> bool:
        if authorization.startswith("Basic "):
            self.token_auth_seen.append("client_secret_basic")
            user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
            return (user, password) == (self.client_id, self.client_secret)
        self.token_auth_seen.append("client_secret_post")
        return (form.get("client_id"), form.get("client_secret")) == (self.client_id, self.client_secret)

    def _token(self, form: dict[str, str], authorization: str) -> tuple[int, Any]:
        if not self._client_ok(form, authorization):
            return 401, {"error": "invalid_client"}
        with self._lock:
            code = self._codes.pop(form.get("code", ""), None)
        if code is None or form.get("redirect_uri") != code.redirect_uri:
            return 400, {"error": "invalid_grant"}
        digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
        if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != code.code_challenge:
            return 400, {"error": "invalid_grant", "error_description": "PKCE verification failed"}
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = code.subject
        return 200, {"access_token": token, "token_type": "Bearer", "expires_in": 300, "id_token": "unused"}

    def _userinfo(self, authorization: str) -> tuple[int, Any]:
        subject = self._tokens.get(authorization.removeprefix("Bearer "))
        if subject is None:
            return 401, {"error": "invalid_token"}
        return 200, {"sub": subject, **self.users.get(subject, {})}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def _send(self, status: int, headers: dict[str, str], body: Any) -> None:
                send_json(self, status, headers, body)

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                if parts.path == "/.well-known/openid-configuration":
                    self._send(200, {}, fake._discovery())
                elif parts.path == "/authorize":
                    self._send(*fake._authorize(dict(parse_qsl(parts.query))))
                elif parts.path == "/userinfo":
                    status, body = fake._userinfo(self.headers.get("Authorization", ""))
                    self._send(status, {}, body)
                else:
                    self._send(404, {}, {"error": "not_found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = dict(parse_qsl(self.rfile.read(length).decode()))
                if urlsplit(self.path).path == "/token":
                    status, body = fake._token(form, self.headers.get("Authorization", ""))
                    self._send(status, {}, body)
                else:
                    self._send(404, {}, {"error": "not_found"})

        return Handler
