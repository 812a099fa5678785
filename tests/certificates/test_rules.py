"""The pure decisions of the certificate worker: when a certificate is due, retry backoff, Retry-After
parsing, what the scheduler queues, and the metadata read back from a chain."""

from __future__ import annotations

import time
from email.utils import formatdate

import pytest

from control_plane.acme.certificate_info import InvalidChain, new_key_and_csr, read_chain
from control_plane.acme.order import MAX_RETRY_AFTER_SECONDS, retry_after_seconds
from control_plane.acme.records import issuance_due, retry_delay_seconds, retry_due
from control_plane.acme.scheduler import due_events
from shared.models import Certificate, ProxyTarget

pytestmark = pytest.mark.certificates

DAY = 86400.0
NOW = 1_800_000_000.0


def active(**changes: object) -> Certificate:
    base = Certificate(
        cert_name="c",
        domains=["a.example.com", "b.example.com"],
        directory_url="https://ca/dir",
        status="active",
        fullchain_pem="chain",
        private_key_encrypted="enc",
        not_after=NOW + 60 * DAY,
        issued_at=NOW - DAY,
        issued_domains=["b.example.com", "a.example.com"],
        issued_directory_url="https://ca/dir",
    )
    return base.model_copy(update=changes)


def test_issuance_due_rules() -> None:
    renew_before = 30 * DAY
    assert issuance_due(active(), NOW, renew_before) is None
    assert issuance_due(active(fullchain_pem=""), NOW, renew_before) == "no certificate issued yet"
    assert issuance_due(active(domains=["a.example.com"]), NOW, renew_before) == "domains changed"
    assert (
        issuance_due(active(directory_url="https://prod/dir"), NOW, renew_before) == "ACME directory changed"
    )
    assert issuance_due(active(renew_requested_at=NOW), NOW, renew_before) == "renewal requested"
    assert issuance_due(active(renew_requested_at=NOW - 2 * DAY), NOW, renew_before) is None  # already served
    assert issuance_due(active(not_after=NOW + 29 * DAY), NOW, renew_before) == "expires soon"


def test_retry_backoff_grows_and_is_capped() -> None:
    delays = [retry_delay_seconds(n, base_seconds=60, max_seconds=3600) for n in range(1, 9)]
    assert delays == [60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert retry_delay_seconds(10_000, base_seconds=60, max_seconds=3600) == 3600
    assert retry_due(active(next_retry_at=None), NOW)
    assert not retry_due(active(next_retry_at=NOW + 1), NOW)
    assert retry_due(active(next_retry_at=NOW), NOW)


def test_retry_after_header_forms() -> None:
    assert retry_after_seconds(None, 2.0) == 2.0
    assert retry_after_seconds("3", 2.0) == 3.0
    assert retry_after_seconds("100000", 2.0) == MAX_RETRY_AFTER_SECONDS
    now = time.time()
    assert retry_after_seconds(formatdate(now + 10, usegmt=True), 2.0, now=now) == pytest.approx(10, abs=1)
    assert retry_after_seconds(formatdate(now - 10, usegmt=True), 2.0, now=now) == 0.0
    assert retry_after_seconds("soon", 2.0) == 2.0


def test_scheduler_decisions() -> None:
    certs = {
        "fine": active(cert_name="fine", domains=["fine.example.com"], issued_domains=["fine.example.com"]),
        "expiring": active(
            cert_name="expiring",
            domains=["exp.example.com"],
            issued_domains=["exp.example.com"],
            not_after=NOW + DAY,
        ),
        "failed-due": Certificate(
            cert_name="failed-due",
            domains=["f.example.com"],
            directory_url="x",
            status="failed",
            attempts=2,
            next_retry_at=NOW - 1,
        ),
        "failed-wait": Certificate(
            cert_name="failed-wait",
            domains=["w.example.com"],
            directory_url="x",
            status="failed",
            attempts=1,
            next_retry_at=NOW + 100,
        ),
    }
    proxies = [
        ProxyTarget(hostname="fine.example.com", target_url="http://127.0.0.1:1"),
        ProxyTarget(hostname="new.example.com", target_url="http://127.0.0.1:1"),
        ProxyTarget(hostname="plain.example.com", target_url="http://127.0.0.1:1", enable_https=False),
        ProxyTarget(hostname="*.wild.example.com", target_url="http://127.0.0.1:1"),
        # No public CA validates special-use names: `just up`'s auth.localhost must not ask Let's Encrypt.
        ProxyTarget(hostname="auth.localhost", target_url="http://127.0.0.1:1"),
        ProxyTarget(hostname="127.0.0.1", target_url="http://127.0.0.1:1"),
    ]
    daily = due_events(certs, proxies, now=NOW, renew_before_seconds=30 * DAY, renewals=True)
    assert [(e.reason, e.cert_name or e.hostname) for e in daily] == [
        ("schedule", "expiring"),
        ("retry", "failed-due"),
        ("proxy", "new.example.com"),
    ]
    frequent = due_events(certs, proxies, now=NOW, renew_before_seconds=30 * DAY, renewals=False)
    assert [(e.reason, e.cert_name) for e in frequent] == [("retry", "failed-due")]


def test_a_pending_certificate_whose_event_was_lost_is_picked_up_by_the_retry_scan() -> None:
    def pending(updated_at: float) -> Certificate:
        return Certificate(
            cert_name="p",
            domains=["p.example.com"],
            directory_url="x",
            created_at=updated_at,
            updated_at=updated_at,
        )

    fresh = due_events({"p": pending(NOW - 5)}, [], now=NOW, renew_before_seconds=0, renewals=False)
    assert fresh == []  # its own event is probably being handled right now
    lost = due_events({"p": pending(NOW - 601)}, [], now=NOW, renew_before_seconds=0, renewals=False)
    assert [(e.reason, e.cert_name) for e in lost] == [("retry", "p")]


def test_chain_metadata_and_key_match() -> None:
    from tests.certificates.test_cert_store import LocalCA

    cert = LocalCA().issue("m", ["m.example.com", "n.example.com"])
    info = read_chain(cert.fullchain_pem)
    assert info.serial == cert.serial and info.fingerprint_sha256 == cert.fingerprint_sha256
    assert info.domains == ("m.example.com", "n.example.com")
    assert info.not_before < info.not_after
    other = new_key_and_csr(["m.example.com"])
    with pytest.raises(InvalidChain, match="public key"):
        read_chain(cert.fullchain_pem, other.private_key_pem)
    with pytest.raises(InvalidChain):
        read_chain("not a pem")
