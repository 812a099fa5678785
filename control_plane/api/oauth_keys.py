"""`/api/v1/oauth/keys/`: the authorization server's token-signing keys (admin only).

Lists what may be shown (kid, created, active, retires; never private material) and rotates: a new key
signs at once on every control-plane replica, the old one verifies until it retires (see oauth/key_ring.py).
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from ..oauth.key_ring import KeyInfo
from .deps import PrincipalDep, RuntimeDep

router = APIRouter(prefix="/api/v1/oauth/keys", tags=["oauth signing keys"])

MAX_RETIRE_SECONDS = 30 * 86400


class SigningKeyView(BaseModel):
    kid: str = Field(description="RFC 7638 thumbprint; the `kid` header of the tokens it signs")
    created_at: float
    active: bool = Field(description="true for the one key that signs new tokens")
    retires_at: float | None = Field(description="when a key that no longer signs leaves the JWKS")

    @classmethod
    def of(cls, info: KeyInfo) -> SigningKeyView:
        return cls(kid=info.kid, created_at=info.created_at, active=info.active, retires_at=info.retires_at)


class KeyRotation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    retire_previous_after_seconds: int | None = Field(
        default=None,
        ge=0,
        le=MAX_RETIRE_SECONDS,
        description="seconds the replaced key (and any older one) still verifies; default: the access-token "
        "lifetime plus a margin, so tokens it signed run out first. 0 removes them at once (a leaked key): "
        "tokens they signed stop working.",
    )


@router.get("/", response_model=list[SigningKeyView])
async def list_keys(runtime: RuntimeDep, principal: PrincipalDep) -> list[SigningKeyView]:
    principal.require_admin("list the token-signing keys")
    return [SigningKeyView.of(info) for info in await runtime.oauth.ready.signing_keys.describe()]


@router.post("/rotate", response_model=list[SigningKeyView])
async def rotate_keys(
    runtime: RuntimeDep, principal: PrincipalDep, body: KeyRotation | None = None
) -> list[SigningKeyView]:
    """Make a new key the signer; every control-plane replica and data plane picks it up within seconds."""
    principal.require_admin("rotate the token-signing keys")
    retire = body.retire_previous_after_seconds if body is not None else None
    return [SigningKeyView.of(info) for info in await runtime.oauth.ready.signing_keys.rotate(retire)]
