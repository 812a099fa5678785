"""The one place typed errors become HTTP responses.

Every error body is `{"detail": ...}`: a string, or for 422 a list of {loc, msg, type} like FastAPI's own
validation errors, so clients parse one shape.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from ..errors import (
    Conflict,
    ControlPlaneError,
    Forbidden,
    InvalidInput,
    NotFound,
    PreconditionFailed,
    StoreBusy,
    Unauthorized,
    Unavailable,
)

log = logging.getLogger(__name__)

_STATUS: dict[type[ControlPlaneError], int] = {
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    InvalidInput: 422,
    PreconditionFailed: 412,
    StoreBusy: 503,
    Unavailable: 503,
}


async def _control_plane_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ControlPlaneError)
    status = next((code for kind, code in _STATUS.items() if isinstance(exc, kind)), 500)
    if isinstance(exc, InvalidInput):
        return JSONResponse({"detail": exc.errors}, status_code=status)
    headers: dict[str, str] = {}
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = 'Bearer error="invalid_token"' if exc.invalid_token else "Bearer"
    return JSONResponse({"detail": exc.detail}, status_code=status, headers=headers)


async def _redis_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("Redis error during %s %s: %r", request.method, request.url.path, exc)
    return JSONResponse({"detail": f"Redis is unavailable: {type(exc).__name__}"}, status_code=503)


def install(app: FastAPI) -> None:
    app.add_exception_handler(ControlPlaneError, _control_plane_error)
    app.add_exception_handler(RedisError, _redis_error)
