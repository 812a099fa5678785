"""WebSocket opening-handshake rules (RFC 6455 section 4) for a proxy that relays the upgrade, sans-IO.

The proxy does not terminate WebSocket: it checks the client's upgrade request, forwards it, and checks that
the upstream's 101 carries the right Sec-WebSocket-Accept for the client's key, then tunnels bytes. Extensions
(permessage-deflate) and subprotocols are therefore negotiated end to end between client and backend.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass

from wsproto.utilities import generate_accept_token

from data_plane.protocol.forwarding import connection_tokens

SUPPORTED_VERSION = b"13"


@dataclass(frozen=True, slots=True)
class UpgradeRejected:
    status: int
    reason: str
    headers: tuple[tuple[bytes, bytes], ...] = ()


def is_websocket_upgrade(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    return any(name == b"upgrade" and b"websocket" in value.lower() for name, value in headers)


def check_upgrade_request(
    method: bytes, http_version: bytes, headers: Sequence[tuple[bytes, bytes]]
) -> bytes | UpgradeRejected:
    """The client's Sec-WebSocket-Key when the request is a valid upgrade, else why it is refused."""
    key = b""
    version = b""
    for name, value in headers:
        if name == b"sec-websocket-key":
            key = value.strip()
        elif name == b"sec-websocket-version":
            version = value.strip()
    if method != b"GET" or http_version != b"1.1":
        return UpgradeRejected(400, "WebSocket upgrade needs GET over HTTP/1.1")
    if b"upgrade" not in connection_tokens(headers):
        return UpgradeRejected(400, "WebSocket upgrade needs 'Connection: Upgrade'")
    if version != SUPPORTED_VERSION:
        return UpgradeRejected(
            426, "unsupported WebSocket version (need 13)", ((b"sec-websocket-version", SUPPORTED_VERSION),)
        )
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            return UpgradeRejected(400, "invalid Sec-WebSocket-Key")
    except (ValueError, binascii.Error):
        return UpgradeRejected(400, "invalid Sec-WebSocket-Key")
    return key


def accept_is_valid(key: bytes, response_headers: Sequence[tuple[bytes, bytes]]) -> bool:
    expected = generate_accept_token(key)
    return any(
        name == b"sec-websocket-accept" and value.strip() == expected for name, value in response_headers
    )
