"""Certificates: request (POST), list, show, status, renew, convert to production, delete.

The API never issues inline: it stores the certificate as `pending` and appends a "certificate wanted" event
to the workflow stream; a worker (control_plane/acme) issues it. A domain belongs to at most one certificate
(409), wildcards are refused (422: HTTP-01 cannot validate them). Ownership works like proxies: an ordinary
token sees and changes only its own certificates, and may name only hostnames its own proxies serve (or
inside its delegated zones; services/hostname_claims.py), never the authorization server's host, so nobody
can squat a name another owner will need. Responses never carry the private key.

The email defaults to the owner token's cert_email, then ACME_EMAIL. Proxies with enable_https ask for a
certificate through `want_for_proxy` (an event), and the worker creates an `auto` certificate via
`ensure_for_proxy` when no certificate covers the hostname yet.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from redis.exceptions import RedisError

from control_plane.records import CertificateWanted
from shared import keys
from shared.config import Settings
from shared.hostnames import InvalidHostname, normalise_hostname, public_ca_refusal
from shared.models import ADMIN_OWNER, CERT_NAME_PATTERN, MAX_CERTIFICATE_DOMAINS, Certificate, ProxyTarget

from .. import store
from ..acme.records import certificate_for_domain, certificates, delete_certificate, put_certificate
from ..acme.workflow import request_certificate
from ..cascade import plan_owned_deletions
from ..errors import Conflict, Forbidden, invalid_from_validation
from ..principal import Principal, require_current
from ..store import ConfigWrite, Reader, Store
from .hostname_claims import certificate_refusal, name_facts, own_zones, reserved_hostnames
from .owned import read_owned

log = logging.getLogger(__name__)

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class CertificateCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cert_name: Annotated[str, Field(pattern=CERT_NAME_PATTERN, description="Unique certificate name")]
    domains: Annotated[
        list[str],
        Field(min_length=1, max_length=MAX_CERTIFICATE_DOMAINS, description="1..100 names, no wildcards"),
    ]
    email: str | None = Field(default=None, description="ACME contact; default: token cert_email, ACME_EMAIL")
    environment: Literal["staging", "production"] = "production"

    @field_validator("domains")
    @classmethod
    def _domains(cls, value: list[str]) -> list[str]:
        out: list[str] = []
        for domain in value:
            if domain.strip().startswith("*"):
                raise ValueError(
                    f"{domain!r}: wildcard certificates need DNS-01, which is not supported (HTTP-01 only)"
                )
            try:
                name = normalise_hostname(domain, allow_wildcard=False)
            except InvalidHostname as exc:
                raise ValueError(str(exc)) from exc
            if name in out:
                raise ValueError(f"{domain!r} is listed twice")
            out.append(name)
        return out

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if value and not _EMAIL.match(value):
            raise ValueError("email must be an email address (or empty)")
        return value


class CertificateView(BaseModel):
    """A certificate as shown by the API: metadata and the public chain, never the private key."""

    cert_name: str
    domains: list[str]
    email: str
    environment: Literal["staging", "production"]
    directory_url: str
    status: Literal["pending", "active", "failed"]
    error: str
    issuer: str
    serial: str
    not_before: float | None
    not_after: float | None
    fingerprint_sha256: str
    fullchain_pem: str
    auto: bool
    owner: str
    created_at: float
    updated_at: float
    attempts: int
    next_retry_at: float | None

    @classmethod
    def of(cls, cert: Certificate) -> CertificateView:
        return cls.model_validate(cert.model_dump(exclude={"private_key_encrypted"}))


class CertificateStatus(BaseModel):
    cert_name: str
    status: Literal["pending", "active", "failed"]
    error: str
    domains: list[str]
    environment: Literal["staging", "production"]
    not_after: float | None
    attempts: int
    next_retry_at: float | None
    updated_at: float

    @classmethod
    def of(cls, cert: Certificate) -> CertificateStatus:
        return cls.model_validate(cert.model_dump(include=set(cls.model_fields)))


def auto_certificate_name(hostname: str) -> str:
    """A valid, stable certificate name for an HTTPS proxy's hostname."""
    if re.fullmatch(CERT_NAME_PATTERN, hostname):
        return hostname
    return "auto-" + hashlib.sha256(hostname.encode()).hexdigest()[:32]


class CertificateService:
    def __init__(self, store_: Store, settings: Settings) -> None:
        self._store = store_
        self._settings = settings
        self._reserved = reserved_hostnames(settings)

    @property
    def _redis(self) -> aioredis.Redis:
        return self._store.redis

    def _directory(self, environment: str) -> str:
        if environment == "staging":
            return self._settings.ACME_STAGING_URL
        return self._settings.ACME_DIRECTORY_URL

    async def _email_for(self, reader: Reader, owner: str, requested: str | None) -> str:
        if requested is not None:
            return requested
        if owner != ADMIN_OWNER:
            token = await reader.get(store.tokens(), owner)
            if token is not None and token.cert_email:
                return token.cert_email
        return self._settings.ACME_EMAIL

    async def create(self, principal: Principal, body: CertificateCreate) -> Certificate:
        result: list[Certificate] = []

        async def plan(reader: Reader) -> ConfigWrite:
            await require_current(reader, principal)
            if await reader.exists(certificates(), body.cert_name):
                raise Conflict(f"certificate {body.cert_name!r} already exists")
            zones = await own_zones(reader, principal)
            for domain in body.domains:
                refusal = certificate_refusal(
                    principal, zones, await name_facts(reader, domain), self._reserved
                )
                if refusal is not None:
                    raise Forbidden(refusal)
            await _check_domains_free(reader, body.domains, body.cert_name)
            now = time.time()
            try:
                cert = Certificate(
                    cert_name=body.cert_name,
                    domains=body.domains,
                    email=await self._email_for(reader, principal.owner, body.email),
                    environment=body.environment,
                    directory_url=self._directory(body.environment),
                    owner=principal.owner,
                    created_at=now,
                    updated_at=now,
                )
            except ValidationError as exc:
                raise invalid_from_validation(exc) from exc
            result[:] = [cert]
            write = ConfigWrite()
            put_certificate(write, cert, previous=None)
            write.about(certificates(), cert.cert_name, f"certificate {cert.cert_name!r}")
            write.change("certificate", "created", cert.cert_name, cert.owner)
            return write

        await self._store.transact(plan)
        cert = result[0]
        await self._want(CertificateWanted(reason="created", cert_name=cert.cert_name))
        return cert

    async def list(self, principal: Principal) -> list[Certificate]:
        rows = await self._store.reader.all(certificates())
        return [c for _, c in sorted(rows.items()) if principal.can_access(c.owner)]

    async def get(self, principal: Principal, cert_name: str) -> Certificate:
        return await read_owned(self._store.reader, principal, certificates(), "certificate", cert_name)

    async def renew(self, principal: Principal, cert_name: str) -> Certificate:
        """Ask for a new chain now, even if the current one is far from expiry (and skip any backoff)."""

        def change(current: Certificate, now: float) -> dict[str, Any]:
            return {"renew_requested_at": now, "next_retry_at": None, "attempts": 0, "updated_at": now}

        cert = await self._update(principal, cert_name, change)
        await self._want(CertificateWanted(reason="renew", cert_name=cert_name))
        return cert

    async def convert_to_production(self, principal: Principal, cert_name: str) -> Certificate:
        def change(current: Certificate, now: float) -> dict[str, Any]:
            if current.environment == "production":
                raise Conflict(f"certificate {cert_name!r} is already a production certificate")
            # The staging chain keeps being served until the production one replaces it.
            return {
                "environment": "production",
                "directory_url": self._settings.ACME_DIRECTORY_URL,
                "status": "pending",
                "error": "",
                "next_retry_at": None,
                "attempts": 0,
                "updated_at": now,
            }

        cert = await self._update(principal, cert_name, change)
        await self._want(CertificateWanted(reason="convert", cert_name=cert_name))
        return cert

    async def delete(self, principal: Principal, cert_name: str) -> None:
        async def plan(reader: Reader) -> ConfigWrite:
            await require_current(reader, principal)
            write = ConfigWrite()
            write.about(certificates(), cert_name, f"certificate {cert_name!r}")
            if principal.is_admin and await reader.is_damaged(certificates(), cert_name):
                write.delete(certificates(), cert_name)
                write.change("certificate", "deleted", cert_name, principal.owner)
                return write
            current = await read_owned(reader, principal, certificates(), "certificate", cert_name)
            delete_certificate(write, current)
            write.change("certificate", "deleted", cert_name, current.owner)
            return write

        await self._store.transact(plan)

    async def _update(
        self,
        principal: Principal,
        cert_name: str,
        change: Callable[[Certificate, float], dict[str, Any]],
    ) -> Certificate:
        result: list[Certificate] = []

        async def plan(reader: Reader) -> ConfigWrite:
            await require_current(reader, principal)
            current = await read_owned(reader, principal, certificates(), "certificate", cert_name)
            now = time.time()
            new = current.model_copy(update=change(current, now))
            result[:] = [new]
            write = ConfigWrite()
            put_certificate(write, new, previous=current)
            write.about(certificates(), cert_name, f"certificate {cert_name!r}")
            write.change("certificate", "updated", cert_name, current.owner)
            return write

        await self._store.transact(plan)
        return result[0]

    async def _want(self, event: CertificateWanted) -> None:
        # The certificate is committed; if this XADD is lost the scheduler's scan finds the certificate due
        # and asks again, so a Redis hiccup here delays issuance rather than losing it.
        try:
            await request_certificate(self._redis, event)
        except (RedisError, OSError):
            log.exception("could not queue %s; the scheduler will pick it up", event)

    # ---- proxies with HTTPS ----

    async def want_for_proxy(self, proxy: ProxyTarget) -> None:
        """Proxy create/update hook: queue a request when HTTPS is on and no certificate covers the name."""
        if not proxy.enable_https:
            return
        refusal = public_ca_refusal(proxy.hostname)
        if refusal is not None:
            log.info("no automatic certificate for %s: %s", proxy.hostname, refusal)
            return
        try:
            if await self._redis.hexists(keys.certificate_domains(), proxy.hostname):
                return
        except (RedisError, OSError):
            log.exception("could not check certificates for proxy %s", proxy.hostname)
            return
        await self._want(CertificateWanted(reason="proxy", hostname=proxy.hostname))

    async def ensure_for_proxy(self, hostname: str) -> str | None:
        """Worker side: the certificate name covering `hostname`, creating an auto certificate if none.

        None when the proxy no longer exists or no longer wants HTTPS.
        """
        result: list[str | None] = [None]

        async def plan(reader: Reader) -> ConfigWrite:
            write = ConfigWrite()
            result[0] = None
            proxy = await reader.get(store.proxies(), hostname)
            if proxy is None or not proxy.enable_https or hostname.startswith("*."):
                return write
            existing = await certificate_for_domain(reader, hostname)
            if existing is not None:
                result[0] = existing
                return write
            name = auto_certificate_name(hostname)
            if await reader.exists(certificates(), name):
                name = "auto-" + hashlib.sha256(hostname.encode()).hexdigest()[:32]
                if await reader.exists(certificates(), name):
                    raise Conflict(f"no free certificate name for {hostname!r}")
            environment = self._settings.ACME_AUTO_ENVIRONMENT
            cert = Certificate(
                cert_name=name,
                domains=[hostname],
                email=await self._email_for(reader, proxy.owner, None),
                environment=environment,
                directory_url=self._directory(environment),
                owner=proxy.owner,
                auto=True,
            )
            put_certificate(write, cert, previous=None)
            write.change("certificate", "created", name, cert.owner)
            result[0] = name
            return write

        await self._store.transact(plan)
        return result[0]


async def _check_domains_free(reader: Reader, domains: list[str], cert_name: str) -> None:
    for domain in domains:
        holder = await certificate_for_domain(reader, domain)
        if holder is not None and holder != cert_name:
            raise Conflict(f"domain {domain!r} already belongs to certificate {holder!r}")


async def delete_owned_certificates(reader: Reader, owner: str) -> ConfigWrite:
    """Cascade cleanup: plan deletion of every certificate `owner` owns."""
    return await plan_owned_deletions(reader, owner, certificates(), "certificate", remove=delete_certificate)
