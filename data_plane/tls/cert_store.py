"""The certificate table: one prebuilt SSLContext per certificate, selected by SNI name.

`CertificateTable` is immutable; a reload builds a new one and the listener swaps the reference, so new
handshakes see the new certificates while open connections keep theirs. `select(server_name)` is a pure
lookup: exact name, then a `*.parent` wildcard (one label, as TLS matches), else the fallback context.
Contexts of unchanged certificates (same name and fingerprint) are reused from the previous table, so a
reload costs work only for what changed.

`load_certificate_table` reads GET config version + HGETALL certificates + GET fallback in one MULTI. A
certificate that fails to validate, decrypt or load is skipped and logged; it never takes the table down.

`CertificateStore` packages this for the listener (the connection code owns the wiring):

    certs = CertificateStore(redis, Keyring.from_settings(settings), fallback_cn)
    await certs.start()                       # fallback ensured, first table loaded
    server = await loop.create_server(factory, host, port, ssl=certs.server_context())
    ...on a new config version: await certs.refresh()   # atomic swap; keeps the last good table on error
"""

from __future__ import annotations

import hashlib
import logging
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from cryptography import x509
from pydantic import ValidationError

from shared import keys
from shared.encryption import FALLBACK_KEY_CONTEXT, EncryptionError, Keyring, certificate_key_context
from shared.models import Certificate, FallbackCertificate

from .contexts import ContextBuildError, base_server_context, build_server_context, load_chain
from .fallback import ensure_fallback, parse_fallback

log = logging.getLogger(__name__)


def normalise_server_name(server_name: str | None) -> str | None:
    if not server_name:
        return None
    name = server_name.strip().rstrip(".").lower()
    return name or None


@dataclass(frozen=True, slots=True)
class LoadedCertificate:
    cert_name: str
    fingerprint_sha256: str
    names: tuple[str, ...]
    context: ssl.SSLContext


@dataclass(frozen=True, slots=True)
class CertificateTable:
    version: int
    fallback: ssl.SSLContext
    exact: Mapping[str, ssl.SSLContext] = field(default_factory=dict)
    wildcard: Mapping[str, ssl.SSLContext] = field(default_factory=dict)  # parent domain -> context
    loaded: Mapping[str, LoadedCertificate] = field(default_factory=dict)  # cert name -> entry
    fallback_pem: str = ""  # what `fallback` was built from, so a reload can reuse it

    def select(self, server_name: str | None) -> ssl.SSLContext:
        name = normalise_server_name(server_name)
        if name is None:
            return self.fallback
        context = self.exact.get(name)
        if context is not None:
            return context
        _, dot, parent = name.partition(".")
        if dot:
            context = self.wildcard.get(parent)
            if context is not None:
                return context
        return self.fallback

    def has_certificate_for(self, server_name: str) -> bool:
        return self.select(server_name) is not self.fallback


def build_table(
    version: int,
    certificates: list[Certificate],
    keyring: Keyring,
    fallback: ssl.SSLContext,
    previous: CertificateTable | None = None,
    fallback_pem: str = "",
) -> CertificateTable:
    """Build contexts for every certificate with a chain; reuse unchanged ones from `previous`."""
    loaded: dict[str, LoadedCertificate] = {}
    for cert in sorted(certificates, key=lambda c: c.cert_name):
        if not cert.has_chain:
            continue
        reused = previous.loaded.get(cert.cert_name) if previous is not None else None
        if reused is not None and reused.fingerprint_sha256 == cert.fingerprint_sha256:
            loaded[cert.cert_name] = reused
            continue
        try:
            loaded[cert.cert_name] = load_certificate(cert, keyring)
        except (EncryptionError, ContextBuildError, ValueError) as exc:
            log.error("certificate %r cannot be served and is skipped: %s", cert.cert_name, exc)
    exact: dict[str, ssl.SSLContext] = {}
    wildcard: dict[str, ssl.SSLContext] = {}
    # Sorted by name above, so when two certificates claim one name the choice is stable across replicas.
    for entry in loaded.values():
        for name in entry.names:
            if name.startswith("*."):
                wildcard.setdefault(name[2:], entry.context)
            else:
                exact.setdefault(name, entry.context)
    return CertificateTable(
        version=version,
        fallback=fallback,
        exact=exact,
        wildcard=wildcard,
        loaded=loaded,
        fallback_pem=fallback_pem,
    )


def load_certificate(cert: Certificate, keyring: Keyring) -> LoadedCertificate:
    key_pem = keyring.decrypt(cert.private_key_encrypted, context=certificate_key_context(cert.cert_name))
    context = build_server_context(cert.fullchain_pem, key_pem)
    names = _names_of(cert.fullchain_pem) or tuple(cert.domains)
    fingerprint = cert.fingerprint_sha256 or hashlib.sha256(cert.fullchain_pem.encode()).hexdigest()
    return LoadedCertificate(cert.cert_name, fingerprint, names, context)


def _names_of(fullchain_pem: str) -> tuple[str, ...]:
    """The DNS names the leaf is valid for: what a client will accept, whatever the record says."""
    leaf = x509.load_pem_x509_certificate(fullchain_pem.encode("ascii"))
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(n.lower().rstrip(".") for n in san.get_values_for_type(x509.DNSName))


def fallback_context(fallback: FallbackCertificate, keyring: Keyring) -> ssl.SSLContext:
    key_pem = keyring.decrypt(fallback.private_key_encrypted, context=FALLBACK_KEY_CONTEXT)
    return build_server_context(fallback.cert_pem, key_pem)


def dispatching_context(
    current_table: Callable[[], CertificateTable], fallback: FallbackCertificate, keyring: Keyring
) -> ssl.SSLContext:
    """The context the listener wraps sockets with: it carries the fallback chain (for clients whose
    handshake never reaches the callback) and an SNI callback that moves the handshake onto the prebuilt
    context of the current table. The callback only looks up; it never builds anything."""
    context = base_server_context()
    key_pem = keyring.decrypt(fallback.private_key_encrypted, context=FALLBACK_KEY_CONTEXT)
    load_chain(context, fallback.cert_pem, key_pem)

    def pick(
        ssl_object: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _ctx: ssl.SSLContext
    ) -> None:
        chosen = current_table().select(server_name)
        if chosen is not _ctx:
            ssl_object.context = chosen
        return None

    context.sni_callback = pick
    return context


async def load_certificate_table(
    redis: aioredis.Redis, keyring: Keyring, previous: CertificateTable | None = None
) -> CertificateTable:
    """One consistent snapshot of every certificate (plus the fallback) as a new table.

    Raises FallbackMissing when Redis has no usable fallback yet (call fallback.ensure_fallback first);
    Redis errors propagate and the caller keeps its last good table.
    """
    async with redis.pipeline(transaction=True) as pipe:
        pipe.get(keys.config_version())
        pipe.hgetall(keys.certificates())
        pipe.get(keys.fallback_certificate())
        raw_version, raw_certificates, raw_fallback = await pipe.execute()
    fallback = parse_fallback(raw_fallback)
    if fallback is None:
        raise FallbackMissing("no usable fallback certificate in Redis; call ensure_fallback() first")
    certificates: list[Certificate] = []
    for name, value in raw_certificates.items():
        try:
            certificates.append(Certificate.model_validate_json(value))
        except ValidationError as exc:
            log.warning("certificate %r in Redis is invalid and skipped: %s", name, exc.errors()[:3])
    if previous is not None and previous.fallback_pem == fallback.cert_pem:
        fallback_ctx = previous.fallback
    else:
        fallback_ctx = fallback_context(fallback, keyring)
    return build_table(
        int(raw_version or 0), certificates, keyring, fallback_ctx, previous, fallback_pem=fallback.cert_pem
    )


class FallbackMissing(Exception):
    """Redis has no usable fallback certificate yet (fallback.ensure_fallback creates it)."""


class CertificateStore:
    """The data plane's live certificate table: build once at start, swap atomically on every refresh.

    `refresh()` is what config sync calls when the config version moves (certificate writes bump it). A
    refresh that fails (Redis down, fallback unreadable) keeps the last good table and returns False.
    `server_context()` is the one SSLContext the HTTPS listener wraps with; its SNI callback always reads
    the current table, so new handshakes see new certificates while open connections keep theirs.
    """

    def __init__(self, redis: aioredis.Redis, keyring: Keyring, fallback_common_name: str) -> None:
        self._redis = redis
        self._keyring = keyring
        self._fallback_common_name = fallback_common_name
        self._table: CertificateTable | None = None
        self._fallback: FallbackCertificate | None = None

    @property
    def current(self) -> CertificateTable:
        if self._table is None:
            raise RuntimeError("CertificateStore.start() has not completed")
        return self._table

    async def start(self) -> None:
        """Create or fetch the shared fallback and load the first table (errors propagate: no TLS yet)."""
        self._fallback = await ensure_fallback(self._redis, self._keyring, self._fallback_common_name)
        self._table = await load_certificate_table(self._redis, self._keyring)

    async def refresh(self) -> bool:
        try:
            table = await load_certificate_table(self._redis, self._keyring, self._table)
        except Exception:
            log.exception("certificate reload failed; keeping the previous table")
            return False
        self._table = table
        return True

    def server_context(self) -> ssl.SSLContext:
        if self._fallback is None:
            raise RuntimeError("CertificateStore.start() has not completed")
        return dispatching_context(lambda: self.current, self._fallback, self._keyring)
