"""Typed errors raised by services and the store, mapped to HTTP status in one place (api/error_handlers.py).

Services never import FastAPI; they raise these, and the API boundary turns them into responses.
"""

from __future__ import annotations

from typing import Any


class ControlPlaneError(Exception):
    """Base class; `detail` is what the client sees."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class Unauthorized(ControlPlaneError):
    """No bearer token, or one that matches nothing (401 with WWW-Authenticate)."""

    def __init__(self, detail: str, *, invalid_token: bool) -> None:
        super().__init__(detail)
        self.invalid_token = invalid_token


class Forbidden(ControlPlaneError):
    """Authenticated, but the object belongs to someone else or the action is admin-only (403)."""


class NotFound(ControlPlaneError):
    """No such object (404)."""


class Conflict(ControlPlaneError):
    """The object already exists (409)."""


class InvalidInput(ControlPlaneError):
    """Input that parsed but breaks a rule checked against stored state or the stored model (422).

    `errors` follows FastAPI's validation-error shape so clients see one format for every 422.
    """

    def __init__(self, detail: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail)
        self.errors = errors or [{"loc": ["body"], "msg": detail, "type": "value_error"}]


class PreconditionFailed(ControlPlaneError):
    """An If-Match precondition did not hold: the object changed since the client read it (412)."""


class StoreBusy(ControlPlaneError):
    """Optimistic transaction lost the race too many times in a row (503, the client may retry)."""


class Unavailable(ControlPlaneError):
    """A part of the system this request needs is off or not answering (503): Docker-managed services without
    DOCKER_URL, or an engine that does not answer."""


def invalid_from_validation(exc: Exception) -> InvalidInput:
    """Turn a pydantic ValidationError from building a stored model into a 422 that names the fields."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return InvalidInput(str(exc))
    errors: list[dict[str, Any]] = []
    for item in exc.errors(include_url=False, include_context=False, include_input=False):
        errors.append({"loc": ["body", *item["loc"]], "msg": item["msg"], "type": item["type"]})
    first = errors[0] if errors else {"loc": ["body"], "msg": str(exc)}
    field = ".".join(str(part) for part in first["loc"][1:]) or "body"
    return InvalidInput(f"{field}: {first['msg']}", errors)
