"""Secret generation and hashing shared by the control plane, the CLI and `just up`'s .env writer."""

from __future__ import annotations

import hashlib
import hmac
import secrets

API_TOKEN_PREFIX = "acm_"


def new_api_token() -> str:
    return API_TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))
