"""The SSRF rule for targets of ordinary tokens (shared.target_policy): pure checks over addresses and URLs.
The planes' enforcement (422 at write time, refusal at connect time) is tested end to end elsewhere."""

from __future__ import annotations

import ipaddress

import pytest

from shared.config import load_settings
from shared.target_policy import TargetPolicy


def policy(**overrides: object) -> TargetPolicy:
    settings = load_settings(
        REDIS_URL="redis://127.0.0.1:6390/0", API_PORT=9000, INTERNAL_PORT=9100, **overrides
    )
    return TargetPolicy.from_settings(settings)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "::1",
        "fe80::1",
        "fd00::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "224.0.0.1",
    ],
)
def test_non_public_addresses_are_refused_by_default(address: str) -> None:
    assert policy().refusal(ipaddress.ip_address(address), 8080) is not None


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:4700:4700::1111", "::ffff:93.184.216.34"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert policy().refusal(ipaddress.ip_address(address), 8080) is None


def test_allowed_cidrs_open_a_private_range_but_not_the_system_ports() -> None:
    p = policy(ALLOWED_TARGET_CIDRS="127.0.0.0/8, 10.0.0.0/8")
    loopback = ipaddress.ip_address("127.0.0.1")
    assert p.refusal(loopback, 8080) is None
    assert p.refusal(ipaddress.ip_address("10.9.9.9"), 3000) is None
    for port in (9000, 9100, 9101, 9163, 6390, 80, 443, 10001):
        assert p.refusal(loopback, port) is not None, port
    assert p.refusal(loopback, 9100 + 64) is None
    assert p.refusal(ipaddress.ip_address("192.168.0.1"), 8080) is not None


def test_url_text_checks_ip_literals_and_localhost_names() -> None:
    p = policy()
    for url in (
        "http://127.0.0.1:3000",
        "http://localhost:3000",
        "http://app.localhost/",
        "http://[::1]:80",
        "http://169.254.169.254/latest",
        "https://10.0.0.1",
    ):
        assert p.url_refusal(url) is not None, url
    assert p.url_refusal("http://backend.example.com:3000") is None  # checked at connect time
    assert p.url_refusal("https://93.184.216.34") is None
    opened = policy(ALLOWED_TARGET_CIDRS="127.0.0.0/8")
    assert opened.url_refusal("http://localhost:3000") is None
    assert opened.url_refusal("http://127.0.0.1:9000") is not None  # the API port


def test_managed_services_host_ports_are_never_a_url_target_of_ordinary_tokens() -> None:
    """Even where the admin opens loopback, the host ports of PORT_RANGES stay closed to tenants' URLs: a
    tenant reaches its own service as service://NAME and never another tenant's container by its port."""
    p = policy(ALLOWED_TARGET_CIDRS="127.0.0.0/8", PORT_RANGES="21000-21999,23000")
    loopback = ipaddress.ip_address("127.0.0.1")
    for port in (21000, 21500, 21999, 23000):
        refusal = p.refusal(loopback, port)
        assert refusal is not None and "service://NAME" in refusal, port
    assert p.refusal(loopback, 22000) is None
    assert p.refusal(ipaddress.ip_address("93.184.216.34"), 21500) is None  # public: not ours
    assert p.url_refusal("http://localhost:21001/") is not None
