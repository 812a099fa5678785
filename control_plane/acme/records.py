"""How certificates are stored and when one needs (re-)issuing: the certificates collection, the
domain -> certificate index, and the pure due/backoff rules every replica applies the same way.
"""

from __future__ import annotations

from shared import keys
from shared.models import Certificate

from ..store import Collection, ConfigWrite, HashDelete, HashPut, Reader


def certificates() -> Collection[Certificate]:
    return Collection(keys.certificates(), Certificate)


async def certificate_for_domain(reader: Reader, domain: str) -> str | None:
    """The certificate name holding `domain`, read under the plan's WATCH like every other plan read."""
    # Reader has no accessor for plain (non-model) hash values; its connection is the pool or the WATCHing
    # pipeline, exactly what Reader's own methods use.
    name = await reader._conn.hget(keys.certificate_domains(), domain)
    return None if name is None else str(name)


def put_certificate(write: ConfigWrite, cert: Certificate, *, previous: Certificate | None) -> None:
    """Write `cert` and keep the domain index in step with its domain list."""
    write.put(certificates(), cert.cert_name, cert)
    old = set(previous.domains) if previous is not None else set()
    for domain in sorted(old - set(cert.domains)):
        write.ops.append(HashDelete(keys.certificate_domains(), domain))
    for domain in sorted(set(cert.domains) - old):
        write.ops.append(HashPut(keys.certificate_domains(), domain, cert.cert_name))


def delete_certificate(write: ConfigWrite, cert: Certificate) -> None:
    write.delete(certificates(), cert.cert_name)
    for domain in cert.domains:
        write.ops.append(HashDelete(keys.certificate_domains(), domain))


def issuance_due(cert: Certificate, now: float, renew_before_seconds: float) -> str | None:
    """Why `cert` needs a new chain now, or None when the stored one is good."""
    if not cert.has_chain or cert.issued_at is None or cert.not_after is None:
        return "no certificate issued yet"
    if sorted(cert.issued_domains) != sorted(cert.domains):
        return "domains changed"
    if cert.issued_directory_url != cert.directory_url:
        return "ACME directory changed"
    if cert.renew_requested_at is not None and cert.renew_requested_at > cert.issued_at:
        return "renewal requested"
    if cert.not_after - now <= renew_before_seconds:
        return "expires soon"
    return None


def retry_due(cert: Certificate, now: float) -> bool:
    return cert.next_retry_at is None or now >= cert.next_retry_at


def retry_delay_seconds(attempts: int, *, base_seconds: float, max_seconds: float) -> float:
    """Exponential backoff after `attempts` consecutive failures (1 -> base, 2 -> 2*base, ...)."""
    exponent = max(0, min(attempts - 1, 30))
    return float(min(max_seconds, base_seconds * (2**exponent)))
