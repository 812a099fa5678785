"""Resource indicators (RFC 8707): which `resource` values a grant may name, and the scopes on offer.

A resource is one of our protected proxies (auth config enabled), named as scheme://host[:port] alone or
followed by the proxy's resource path (see ProxyResource.path): the same two forms a data plane accepts as
the token audience. Values are compared after shared.models.canonical_resource_uri.
When a request names no resource and only one protected proxy exists, that proxy is the resource.

The authorization server's own origin (the issuer, and any name the system reserves for itself) is never a
resource, whatever proxy covers it: a token whose audience is the issuer would be a management credential
(control_plane/oauth/api_access.py), and no client may obtain one through /authorize or /token.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from shared.allowlist import client_allowed, user_allowed
from shared.models import DEFAULT_MCP_SCOPE, ProxyAuthConfig, ProxyResource, canonical_resource_uri

from ..services.auth_config import proxy_auth_collection, proxy_resource_collection
from ..store import Reader
from .errors import OAuthError


@dataclass(frozen=True, slots=True)
class ProtectedProxy:
    hostname: str
    path: str
    scopes: tuple[str, ...]
    has_github_app: bool = False
    allowed_users: frozenset[str] = frozenset()
    allowed_orgs: frozenset[str] = frozenset()
    allowed_clients: frozenset[str] = frozenset()

    def allowlist_refusal(self, login: str, orgs: list[str], client_id: str) -> str | None:
        """Why the data plane will refuse (403) this proxy's requests with a token of `login` (or, with no
        login, of the machine client `client_id`); None when the allowlists admit it (shared/allowlist.py)."""
        if not login:
            if client_allowed(self.allowed_clients, client_id):
                return None
            return f"OAuth client {client_id!r} is not among the allowed clients of {self.hostname}"
        if user_allowed(self.allowed_users, self.allowed_orgs, login.lower(), [o.lower() for o in orgs]):
            return None
        return f"user {login!r} is not on the allowlist (users or organisations) of {self.hostname}"

    def admits(self, host: str, path: str) -> bool:
        if self.hostname.startswith("*."):
            suffix = self.hostname[1:]
            host_ok = host.endswith(suffix) and len(host) > len(suffix)
        else:
            host_ok = host == self.hostname
        return host_ok and path in ("", self.path)


def _origin(uri: str) -> str:
    parts = urlsplit(canonical_resource_uri(uri))
    return f"{parts.scheme}://{parts.netloc}"


def authorization_server_refusal(resource: str, issuer: str, reserved_hosts: frozenset[str]) -> str | None:
    """Why `resource` (canonical) may not be a token audience: it is the authorization server itself."""
    host = (urlsplit(resource).hostname or "").lower()
    if host in reserved_hosts or (issuer and _origin(resource) == _origin(issuer)):
        return f"{resource!r} is the authorization server itself, not a protected resource"
    return None


@dataclass(frozen=True, slots=True)
class ResourceCatalogue:
    proxies: tuple[ProtectedProxy, ...]
    issuer: str = ""
    reserved_hosts: frozenset[str] = frozenset()

    def refuse_authorization_server(self, canonical: str) -> None:
        """invalid_target for a resource on the issuer's origin or on a host the system reserves."""
        refusal = authorization_server_refusal(canonical, self.issuer, self.reserved_hosts)
        if refusal is not None:
            raise OAuthError("invalid_target", refusal)

    @property
    def scopes_supported(self) -> list[str]:
        out = [DEFAULT_MCP_SCOPE]
        for proxy in self.proxies:
            out += [s for s in proxy.scopes if s not in out]
        return out

    def proxy_for(self, resource: str) -> ProtectedProxy | None:
        parts = urlsplit(resource)
        host = (parts.hostname or "").lower()
        return next((p for p in self.proxies if p.admits(host, parts.path)), None)

    def upstream_app_hostname(self, resources: list[str]) -> str:
        """The proxy whose own GitHub app signs users in for these resources ("" = the default app)."""
        apps = set()
        for resource in resources:
            proxy = self.proxy_for(resource)
            apps.add(proxy.hostname if proxy is not None and proxy.has_github_app else "")
        if len(apps) > 1:
            raise OAuthError(
                "invalid_target",
                "these resources sign users in with different GitHub apps; request one at a time",
            )
        return apps.pop() if apps else ""

    def validate(self, values: list[str]) -> list[str]:
        """Canonical resource URIs for a request's `resource` parameters; raises invalid_target."""
        if not values:
            concrete = [p for p in self.proxies if not p.hostname.startswith("*.")]
            if len(self.proxies) == 1 and concrete:
                only = concrete[0]
                return [f"https://{only.hostname}{only.path}"]
            raise OAuthError(
                "invalid_target",
                "name the protected resource with the `resource` parameter (RFC 8707); "
                f"{len(self.proxies)} protected resources exist",
            )
        out: list[str] = []
        for value in values:
            try:
                canonical = canonical_resource_uri(value)
            except ValueError as exc:
                raise OAuthError("invalid_target", f"resource {value!r}: {exc}") from exc
            self.refuse_authorization_server(canonical)
            parts = urlsplit(canonical)
            host = (parts.hostname or "").lower()
            if not any(proxy.admits(host, parts.path) for proxy in self.proxies):
                raise OAuthError(
                    "invalid_target", f"{canonical!r} is not a protected resource of this server"
                )
            if canonical not in out:
                out.append(canonical)
        return out


async def load_catalogue(
    reader: Reader, *, issuer: str = "", reserved_hosts: frozenset[str] = frozenset()
) -> ResourceCatalogue:
    auth: dict[str, ProxyAuthConfig] = await reader.all(proxy_auth_collection())
    resources: dict[str, ProxyResource] = await reader.all(proxy_resource_collection())
    proxies: list[ProtectedProxy] = []
    for hostname, config in sorted(auth.items()):
        if not config.enabled or hostname in reserved_hosts:
            continue
        resource = resources.get(hostname)
        path = resource.path if resource is not None else ProxyResource(hostname=hostname).path
        scopes = list(config.required_scopes)
        for rule in config.scope_rules:
            scopes += [s for s in rule.scopes if s not in scopes]
        if resource is not None:
            scopes += [s for s in resource.scopes_supported if s not in scopes]
        proxies.append(
            ProtectedProxy(
                hostname=hostname,
                path=path,
                scopes=tuple(scopes),
                has_github_app=bool(config.github_client_id and config.github_client_secret_encrypted),
                allowed_users=frozenset(config.allowed_users),
                allowed_orgs=frozenset(config.allowed_orgs),
                allowed_clients=frozenset(config.allowed_clients),
            )
        )
    return ResourceCatalogue(tuple(proxies), issuer, reserved_hosts)
