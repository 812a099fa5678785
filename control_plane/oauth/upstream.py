"""What the authorization server needs from the upstream identity provider (github.GitHub, oidc.OidcProvider):
the web sign-in (authorize URL, code exchange), the device flow, and who signed in."""

from __future__ import annotations

from typing import Any, Protocol

from control_plane.records import UserIdentity

from .github import GitHubApp


class UpstreamIdentityProvider(Protocol):
    async def authorize_url(
        self, *, redirect_uri: str, state: str, code_challenge: str, app: GitHubApp | None = None
    ) -> str: ...

    async def exchange_code(
        self, *, code: str, redirect_uri: str, code_verifier: str, app: GitHubApp | None = None
    ) -> str: ...

    async def identity(self, token: str) -> UserIdentity: ...

    async def start_device_flow(self) -> dict[str, Any]: ...

    async def poll_device_flow(self, device_code: str) -> str: ...
