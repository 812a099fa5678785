"""RFC 7636 PKCE: only S256 is accepted (OAuth 2.1 refuses `plain`)."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets

from shared.secrets import constant_time_equal

# RFC 7636 §4.1: 43..128 characters from the unreserved set.
_VERIFIER = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")
_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def new_verifier() -> str:
    return secrets.token_urlsafe(48)


def challenge_is_valid(challenge: str) -> bool:
    return bool(_CHALLENGE.match(challenge))


def verifier_matches(verifier: str, challenge: str) -> bool:
    return bool(_VERIFIER.match(verifier)) and constant_time_equal(s256(verifier), challenge)
