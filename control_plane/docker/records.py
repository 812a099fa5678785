"""Where services live in Redis: the collections of records, statuses and endpoints (shared.keys names them),
and the encryption context of a secret environment value."""

from __future__ import annotations

from shared import keys
from shared.models import ServiceEndpoint

from ..store import Collection
from .spec import ServiceRecord, ServiceStatus


def service_records() -> Collection[ServiceRecord]:
    return Collection(keys.services(), ServiceRecord)


def service_status() -> Collection[ServiceStatus]:
    return Collection(keys.service_status(), ServiceStatus)


def endpoints() -> Collection[ServiceEndpoint]:
    return Collection(keys.service_endpoints(), ServiceEndpoint)


def secret_context(service: str, variable: str) -> str:
    """Binds an encrypted environment value to its service and variable: a copied ciphertext won't
    decrypt elsewhere."""
    return f"service-env:{service}:{variable}"
