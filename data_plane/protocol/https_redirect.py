"""Where a plain-HTTP request is sent when its proxy has HTTPS live (sans-IO).

`https_location(host, target, port)` is the Location of the 308: same host, same request target, the HTTPS
port unless it is 443. The host comes from the client's Host header, so it is checked to be a plain DNS name
before it goes into a URL: a wildcard proxy matches `evil.com/x.example.com` by its suffix, and echoing that
would make the proxy an open redirector.
"""

from __future__ import annotations

import re
from typing import Final

DEFAULT_HTTPS_PORT: Final = 443
_LABEL: Final = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_DNS_NAME: Final = re.compile(rf"(?:{_LABEL}\.)*{_LABEL}")


def https_location(host: str, target: bytes, port: int) -> bytes | None:
    """The redirect URL, or None when `host` is not a DNS name or `target` is not origin-form."""
    if len(host) > 253 or not _DNS_NAME.fullmatch(host) or not target.startswith(b"/"):
        return None
    authority = host if port == DEFAULT_HTTPS_PORT else f"{host}:{port}"
    return b"https://" + authority.encode("ascii") + target
