"""Redirect URI rules: what may be registered, and how a request's URI is matched (RFC 6749 §3.1.2,
OAuth 2.1 exact matching, RFC 8252 §7.3 loopback with any port).

Registrable: https with a host, or http on a loopback host (127.0.0.1, [::1], localhost); never a fragment
or user info. Matching is exact string comparison, except that for a loopback URI the port may differ.
"""

from __future__ import annotations

from urllib.parse import urlsplit

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
MAX_REDIRECT_URI_LENGTH = 2000


class InvalidRedirectUri(ValueError):
    pass


def check_registrable(uri: str) -> str:
    if len(uri) > MAX_REDIRECT_URI_LENGTH:
        raise InvalidRedirectUri("redirect URI is too long")
    parts = urlsplit(uri)
    if parts.fragment or "#" in uri:
        raise InvalidRedirectUri(f"redirect URI {uri!r} must not have a fragment")
    if parts.username or parts.password:
        raise InvalidRedirectUri(f"redirect URI {uri!r} must not carry credentials")
    if not parts.hostname:
        raise InvalidRedirectUri(f"redirect URI {uri!r} must be absolute with a host")
    try:
        _ = parts.port
    except ValueError as exc:
        raise InvalidRedirectUri(f"redirect URI {uri!r} has an invalid port") from exc
    if parts.scheme == "https":
        return uri
    if parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS:
        return uri
    raise InvalidRedirectUri(
        f"redirect URI {uri!r} must use https, or http on a loopback address (127.0.0.1, [::1], localhost)"
    )


def _without_port(uri: str) -> tuple[str, str, str, str]:
    parts = urlsplit(uri)
    return (parts.scheme, parts.hostname or "", parts.path, parts.query)


def matches(registered: list[str], requested: str) -> bool:
    if requested in registered:
        return True
    parts = urlsplit(requested)
    if parts.scheme != "http" or parts.hostname not in LOOPBACK_HOSTS or parts.fragment:
        return False
    if parts.username or parts.password:
        return False
    wanted = _without_port(requested)
    return any(
        urlsplit(uri).scheme == "http"
        and urlsplit(uri).hostname in LOOPBACK_HOSTS
        and _without_port(uri) == wanted
        for uri in registered
    )
