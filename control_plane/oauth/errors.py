"""Typed OAuth errors (RFC 6749 §5.2 / §4.1.2.1), mapped to responses in one place (api/oauth.py).

- OAuthError: answered as RFC 6749 JSON `{"error", "error_description"}` with `status`.
- RedirectError: an /authorize error once the redirect URI is known to be registered; sent back to the
  client as query parameters (with `state` and `iss`).
- PageError: an /authorize error with no trustworthy redirect URI (unknown client, unregistered URI, bad
  state at the callback); shown as a safe HTML page, never a redirect.
"""

from __future__ import annotations


class OAuthError(Exception):
    def __init__(
        self,
        error: str,
        description: str,
        *,
        status: int = 400,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status
        self.headers = headers or {}

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


class InvalidClient(OAuthError):
    """Client authentication failed or the client is unknown: always 401 (RFC 6749 §5.2)."""

    def __init__(self, description: str, *, basic_used: bool = False) -> None:
        headers = {"WWW-Authenticate": 'Basic realm="oauth"'} if basic_used else {}
        super().__init__("invalid_client", description, status=401, headers=headers)


class RedirectError(Exception):
    def __init__(self, error: str, description: str, *, redirect_uri: str, state: str | None) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.redirect_uri = redirect_uri
        self.state = state


class PageError(Exception):
    def __init__(self, title: str, description: str, *, status: int = 400) -> None:
        super().__init__(f"{title}: {description}")
        self.title = title
        self.description = description
        self.status = status


class NotConfigured(OAuthError):
    """The server lacks a setting it needs (e.g. the signing key): 503 with the name of the setting."""

    def __init__(self, description: str) -> None:
        super().__init__("temporarily_unavailable", description, status=503)
