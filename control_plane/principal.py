"""Who is calling: a bearer token resolved to a Principal, and the ownership rule every service applies.

ADMIN_TOKEN (settings) is compared in constant time and may do everything. Any other token is hashed with
SHA-256 and looked up in one HGET (keys.token_hashes()); the plaintext is never stored or compared.
An ordinary token sees and changes only objects whose `owner` is its own name.

A JWT access token our authorization server issued for the management API (`mhp oauth login`) names a GitHub
login; logins listed in ADMIN_GITHUB_USERS act as the admin, anyone else is refused with 403 (signed in, but
not allowed), so a GitHub account never gains access just by existing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from shared.models import ADMIN_OWNER
from shared.secrets import constant_time_equal, token_sha256

from . import store
from .errors import Forbidden, Unauthorized


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    is_admin: bool
    # The signed-in login behind an `mhp oauth login` token (audit only: it grants nothing by itself).
    login: str | None = field(default=None, compare=False)

    @property
    def actor(self) -> str:
        """Who this is in the audit log: the token's name, "admin", or "oauth:<login>"."""
        return f"oauth:{self.login}" if self.login else self.name

    @property
    def owner(self) -> str:
        """The `owner` value stamped on objects this principal creates."""
        return ADMIN_OWNER if self.is_admin else self.name

    def can_access(self, owner: str) -> bool:
        return self.is_admin or owner == self.name

    def require_access(self, kind: str, object_id: str, owner: str) -> None:
        if not self.can_access(owner):
            raise Forbidden(f"{kind} {object_id!r} belongs to another token")

    def require_admin(self, action: str) -> None:
        if not self.is_admin:
            raise Forbidden(f"only the admin token may {action}")


ADMIN = Principal(name=ADMIN_OWNER, is_admin=True)


async def require_current(reader: store.Reader, principal: Principal) -> None:
    """Re-check, inside a write plan, that the caller's token still exists.

    Authentication happens before the transaction; without this a write racing the token's deletion could
    commit after the cascade and leave an object owned by a token that no longer exists. Plans run under
    WATCH of the config version, which the deletion bumps, so the re-run sees the token gone.
    """
    if not principal.is_admin and not await reader.exists(store.tokens(), principal.name):
        raise Unauthorized("invalid or revoked token", invalid_token=True)


OAuthLogin = Callable[[str], Awaitable[str | None]]


@dataclass(frozen=True, slots=True)
class OAuthAdmins:
    """How management-API JWTs are resolved: the verifier, and the GitHub logins that act as admin."""

    login_of: OAuthLogin
    admin_logins: frozenset[str]


async def authenticate(
    authorization: str | None, admin_token: str, reader: store.Reader, oauth: OAuthAdmins | None = None
) -> Principal:
    """Resolve an `Authorization` header value; raises Unauthorized (401) when it names no one."""
    if not authorization:
        raise Unauthorized("missing bearer token", invalid_token=False)
    scheme, _, credentials = authorization.partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "bearer" or not credentials:
        raise Unauthorized("expected 'Authorization: Bearer <token>'", invalid_token=False)
    if admin_token and constant_time_equal(credentials, admin_token):
        return ADMIN
    if oauth is not None and credentials.count(".") == 2:
        login = await oauth.login_of(credentials)
        if login is None:
            raise Unauthorized("invalid, expired or revoked access token", invalid_token=True)
        if login.lower() in oauth.admin_logins:
            return Principal(name=ADMIN_OWNER, is_admin=True, login=login)
        raise Forbidden(
            f"GitHub user {login!r} is signed in but may not use the management API; "
            "the operator can add the login to ADMIN_GITHUB_USERS"
        )
    name = await reader.token_name_for_hash(token_sha256(credentials))
    if name is None:
        raise Unauthorized("invalid or revoked token", invalid_token=True)
    token = await reader.get(store.tokens(), name)
    # The hash index and the token record are written in one transaction; a mismatch means a damaged row,
    # and damaged rows authenticate no one.
    if token is None or not constant_time_equal(token.token_sha256, token_sha256(credentials)):
        raise Unauthorized("invalid or revoked token", invalid_token=True)
    return Principal(name=token.name, is_admin=False)
