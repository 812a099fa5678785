"""A scripted browser + OAuth client for the tests: registers, walks /authorize -> consent -> GitHub
stand-in -> /callback, and redeems codes, keeping cookies by hand (our cookies are `__Host-`/Secure, which
a cookie jar would withhold over the plain-HTTP loopback issuer)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html import unescape
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from control_plane.oauth.pkce import new_verifier, s256

REDIRECT_URI = "http://127.0.0.1:38999/callback"


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


@dataclass
class Browser:
    http: httpx.AsyncClient
    cookies: dict[str, str] = field(default_factory=dict)

    def absorb(self, response: httpx.Response) -> None:
        for header in response.headers.get_list("set-cookie"):
            pair, _, attributes = header.partition(";")
            name, _, value = pair.strip().partition("=")
            if "max-age=0" in attributes.lower().replace(" ", ""):
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value

    def cookie_header(self) -> dict[str, str]:
        if not self.cookies:
            return {}
        return {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}

    async def get(self, url: str) -> httpx.Response:
        response = await self.http.get(url, headers=self.cookie_header())
        self.absorb(response)
        return response

    async def post_form(self, url: str, data: dict[str, str]) -> httpx.Response:
        response = await self.http.post(
            url,
            content=urlencode(data),
            headers={**self.cookie_header(), "Content-Type": "application/x-www-form-urlencoded"},
        )
        self.absorb(response)
        return response


def consent_fields(html: str) -> dict[str, str]:
    fields = dict(re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)">', html))
    return {k: unescape(v) for k, v in fields.items()}


@dataclass
class Client:
    client_id: str
    registration: dict[str, Any]
    secret: str = ""


async def register(
    http: httpx.AsyncClient,
    *,
    redirect_uris: list[str] | None = None,
    auth_method: str = "none",
    name: str = "Test MCP client",
) -> Client:
    response = await http.post(
        "/register",
        json={
            "redirect_uris": redirect_uris or [REDIRECT_URI],
            "client_name": name,
            "token_endpoint_auth_method": auth_method,
            "grant_types": ["authorization_code", "refresh_token"],
        },
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return Client(body["client_id"], body, body.get("client_secret", ""))


def authorize_url(
    client: Client,
    *,
    verifier: str,
    resource: str | None,
    state: str = "st-123",
    redirect_uri: str = REDIRECT_URI,
    **extra: str,
) -> str:
    params = {
        "response_type": "code",
        "client_id": client.client_id,
        "redirect_uri": redirect_uri,
        "code_challenge": s256(verifier),
        "code_challenge_method": "S256",
        "state": state,
        "scope": "mcp",
    }
    if resource is not None:
        params["resource"] = resource
    params.update(extra)
    return "/authorize?" + urlencode({k: v for k, v in params.items() if v != ""})


@dataclass
class LoginResult:
    code: str
    redirect: dict[str, str]
    verifier: str


async def login(
    browser: Browser,
    client: Client,
    *,
    resource: str | None,
    state: str = "st-123",
    redirect_uri: str = REDIRECT_URI,
    **extra: str,
) -> LoginResult:
    """The whole browser leg: authorize -> consent page -> approve -> GitHub -> callback -> code.
    `extra` overrides authorization parameters (e.g. scope="mcp read")."""
    verifier = new_verifier()
    response = await browser.get(
        authorize_url(
            client, verifier=verifier, resource=resource, state=state, redirect_uri=redirect_uri, **extra
        )
    )
    if response.status_code == 200:
        fields = consent_fields(response.text)
        response = await browser.post_form("/authorize/consent", {**fields, "decision": "approve"})
        assert response.status_code == 302, response.text
        async with httpx.AsyncClient() as outside:  # the GitHub stand-in, on its own socket
            github_response = await outside.get(response.headers["location"])
        assert github_response.status_code == 302, github_response.text
        callback = github_response.headers["location"]
        response = await browser.get(callback)
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(redirect_uri.split("?")[0]), location
    redirect = query_of(location)
    return LoginResult(redirect.get("code", ""), redirect, verifier)


async def redeem(
    http: httpx.AsyncClient,
    client: Client,
    result: LoginResult,
    *,
    redirect_uri: str = REDIRECT_URI,
    **extra: str,
) -> httpx.Response:
    data = {
        "grant_type": "authorization_code",
        "code": result.code,
        "redirect_uri": redirect_uri,
        "code_verifier": result.verifier,
        "client_id": client.client_id,
        **extra,
    }
    return await http.post("/token", data=data)


async def refresh(
    http: httpx.AsyncClient, client: Client, refresh_token: str, **extra: str
) -> httpx.Response:
    """A refresh request; `extra` adds parameters such as `scope` or `resource`."""
    return await http.post(
        "/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": client.client_id,
            **extra,
        },
    )
