"""FastAPI dependencies: the runtime from lifespan state, and the calling principal from the bearer token."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .. import request_context
from ..principal import OAuthAdmins, Principal, authenticate
from ..runtime import Runtime

# Declared for the OpenAPI "Authorize" button; the header itself is checked by `authenticate`, so a missing
# or malformed header gets our 401 with WWW-Authenticate instead of FastAPI's 403.
_bearer_scheme = HTTPBearer(
    auto_error=False, description="ADMIN_TOKEN, an API token (acm_...), or an `mhp oauth login` access token"
)


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_principal(
    request: Request,
    runtime: Annotated[Runtime, Depends(get_runtime)],
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer_scheme)] = None,
) -> Principal:
    oauth = OAuthAdmins(runtime.oauth.api_login, runtime.settings.admin_github_users)
    principal = await authenticate(
        request.headers.get("authorization"), runtime.settings.ADMIN_TOKEN, runtime.store.reader, oauth
    )
    context = request_context.current()
    if context is not None:
        context.actor = principal.actor
    return principal


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
