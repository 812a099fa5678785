"""Whether a signed-in user, or a machine client, is admitted by a protected proxy's allowlists: the one rule.

The data plane judges it on every request (data_plane/auth/token_verifier.py); the authorization server
uses the same rule only to record in its audit that a token it issued will be refused at a resource (it
does not refuse the sign-in itself). Logins and organisations are compared as given: both sides pass them
lower-cased. `*` among the users admits any signed-in user, never a machine client (no user stands behind
its token); a machine client is admitted only by its client id among the allowed clients.
"""

from __future__ import annotations

from collections.abc import Iterable, Set


def user_allowed(allowed_users: Set[str], allowed_orgs: Set[str], login: str, orgs: Iterable[str]) -> bool:
    return "*" in allowed_users or login in allowed_users or not allowed_orgs.isdisjoint(orgs)


def client_allowed(allowed_clients: Set[str], client_id: str) -> bool:
    return bool(client_id) and client_id in allowed_clients
