"""A local stand-in for GitHub that speaks its OAuth and user API shapes, on a real loopback socket.

    GET  /login/oauth/authorize      "signs in" `next_login` and redirects back with code + state
    POST /login/oauth/access_token   code exchange (client secret, redirect_uri, PKCE S256 checked) and the
                                     device-code grant (authorization_pending until a test approves)
    POST /login/device/code          starts a device flow
    GET  /user, /user/orgs, /user/emails

Errors come back as GitHub sends them: HTTP 200 with {"error": ...} from the token endpoint. Tests set
users and `next_login`, and read what was requested (e.g. the PKCE challenge) from the object.
Tests only; this never ships.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from tests.harness.json_http import LoopbackFake, LoopbackServer, send_json


@dataclass
class FakeUser:
    login: str
    id: int
    name: str = ""
    email: str = ""
    orgs: list[str] = field(default_factory=list)
    private_email: str = ""


@dataclass
class _Code:
    client_id: str
    login: str
    redirect_uri: str
    code_challenge: str
    code_challenge_method: str


@dataclass
class _Device:
    user_code: str
    login: str | None = None


class GitHubFake(LoopbackFake):
    def __init__(self, client_id: str = "gh-client-id", client_secret: str = "gh-client-secret") -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.apps = {client_id: client_secret}  # every OAuth app this "GitHub" knows
        self.users: dict[str, FakeUser] = {}
        self.next_login = ""
        self.codes: dict[str, _Code] = {}
        self.tokens: dict[str, str] = {}
        self.devices: dict[str, _Device] = {}
        self.authorize_requests: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._http = LoopbackServer(self._handler_class())

    def add_user(self, user: FakeUser) -> None:
        self.users[user.login] = user

    def approve_device(self, user_code: str, login: str) -> None:
        with self._lock:
            for device in self.devices.values():
                if device.user_code == user_code:
                    device.login = login
                    return
        raise KeyError(user_code)

    def settings_env(self) -> dict[str, str]:
        return {
            "GITHUB_CLIENT_ID": self.client_id,
            "GITHUB_CLIENT_SECRET": self.client_secret,
            "GITHUB_AUTHORIZE_URL": f"{self.url}/login/oauth/authorize",
            "GITHUB_TOKEN_URL": f"{self.url}/login/oauth/access_token",
            "GITHUB_DEVICE_CODE_URL": f"{self.url}/login/device/code",
            "GITHUB_API_URL": f"{self.url}/api",
        }

    # ---- protocol

    def _authorize(self, query: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        self.authorize_requests.append(query)
        if query.get("client_id") not in self.apps:
            return 404, {}, {"error": "unknown client"}
        login = self.next_login
        if login not in self.users:
            redirect = (
                f"{query['redirect_uri']}?{urlencode({'error': 'access_denied', 'state': query['state']})}"
            )
            return 302, {"Location": redirect}, None
        code = secrets.token_hex(10)
        with self._lock:
            self.codes[code] = _Code(
                query["client_id"],
                login,
                query["redirect_uri"],
                query.get("code_challenge", ""),
                query.get("code_challenge_method", ""),
            )
        redirect = f"{query['redirect_uri']}?{urlencode({'code': code, 'state': query['state']})}"
        return 302, {"Location": redirect}, None

    def _issue(self, login: str) -> dict[str, str]:
        token = "gho_" + secrets.token_hex(16)
        with self._lock:
            self.tokens[token] = login
        return {"access_token": token, "token_type": "bearer", "scope": "read:org,user:email"}

    def _access_token(self, form: dict[str, str]) -> dict[str, str]:
        if form.get("client_id") not in self.apps:
            return {"error": "incorrect_client_credentials"}
        if form.get("grant_type") == "urn:ietf:params:oauth:grant-type:device_code":
            with self._lock:
                device = self.devices.get(form.get("device_code", ""))
                if device is None:
                    return {"error": "expired_token"}
                if device.login is None:
                    return {"error": "authorization_pending"}
                del self.devices[form["device_code"]]
            return self._issue(device.login)
        with self._lock:
            code = self.codes.pop(form.get("code", ""), None)
        if code is None or code.client_id != form.get("client_id"):
            return {"error": "bad_verification_code"}
        if form.get("client_secret") != self.apps[code.client_id]:
            return {"error": "incorrect_client_credentials"}
        if code.redirect_uri != form.get("redirect_uri"):
            return {"error": "bad_verification_code"}
        if code.code_challenge:
            verifier = form.get("code_verifier", "")
            digest = (
                base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            )
            if code.code_challenge_method != "S256" or digest != code.code_challenge:
                return {"error": "bad_verification_code"}
        return self._issue(code.login)

    def _device_code(self, form: dict[str, str]) -> dict[str, Any]:
        if form.get("client_id") != self.client_id:
            return {"error": "unauthorized_client"}
        device_code = secrets.token_hex(20)
        user_code = f"{secrets.token_hex(2).upper()}-{secrets.token_hex(2).upper()}"
        with self._lock:
            self.devices[device_code] = _Device(user_code)
        return {
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": f"{self.url}/login/device",
            "expires_in": 900,
            "interval": 1,
        }

    def _api(self, path: str, authorization: str) -> tuple[int, Any]:
        scheme, _, token = authorization.partition(" ")
        login = self.tokens.get(token.strip()) if scheme.lower() in ("bearer", "token") else None
        if login is None:
            return 401, {"message": "Bad credentials"}
        user = self.users[login]
        if path == "/user":
            return 200, {"login": user.login, "id": user.id, "name": user.name, "email": user.email or None}
        if path == "/user/orgs":
            return 200, [{"login": org, "id": index} for index, org in enumerate(user.orgs)]
        if path == "/user/emails":
            emails = [user.private_email] if user.private_email else []
            return 200, [{"email": e, "primary": True, "verified": True, "visibility": None} for e in emails]
        return 404, {"message": "Not Found"}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def _send(self, status: int, headers: dict[str, str], body: Any) -> None:
                send_json(self, status, headers, body)

            def _form(self) -> dict[str, str]:
                length = int(self.headers.get("Content-Length") or 0)
                return dict(parse_qsl(self.rfile.read(length).decode()))

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                if parts.path == "/login/oauth/authorize":
                    self._send(*fake._authorize(dict(parse_qsl(parts.query))))
                elif parts.path.startswith("/api/"):
                    status, body = fake._api(parts.path[len("/api") :], self.headers.get("Authorization", ""))
                    self._send(status, {}, body)
                else:
                    self._send(404, {}, {"message": "Not Found"})

            def do_POST(self) -> None:
                path = urlsplit(self.path).path
                if path == "/login/oauth/access_token":
                    self._send(200, {}, fake._access_token(self._form()))
                elif path == "/login/device/code":
                    self._send(200, {}, fake._device_code(self._form()))
                else:
                    self._send(404, {}, {"message": "Not Found"})

        return Handler
