"""The shared contract: models validate what users send, keys stay in one hash tag."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared import keys
from shared.hostnames import InvalidHostname, normalise_hostname, public_ca_refusal
from shared.models import ChangeEvent, ProxyTarget, Route


def test_every_config_key_shares_one_hash_tag() -> None:
    names = [
        keys.tokens(),
        keys.token_hashes(),
        keys.proxies(),
        keys.routes(),
        keys.config_version(),
        keys.changes_stream(),
        keys.changes_channel(),
    ]
    assert all(name.startswith("{mhp}:") for name in names)
    assert len(set(names)) == len(names)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Example.COM.", "example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("*.apps.example.com", "*.apps.example.com"),
    ],
)
def test_hostnames_normalise(raw: str, expected: str) -> None:
    assert normalise_hostname(raw, allow_wildcard=True) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "*",
        "*.com",
        "a.*.example.com",
        "foo*.example.com",
        "-bad.example",
        "a_b.example",
        "x" * 64 + ".com",
    ],
)
def test_bad_hostnames_are_refused(raw: str) -> None:
    with pytest.raises(InvalidHostname):
        normalise_hostname(raw, allow_wildcard=True)


def test_wildcard_refused_where_not_allowed() -> None:
    with pytest.raises(InvalidHostname):
        normalise_hostname("*.example.com", allow_wildcard=False)


def test_proxy_target_rejects_bad_urls() -> None:
    for url in ["ftp://x", "http://", "http://u:p@host", "http://host/?q=1", "http://host:99999"]:
        with pytest.raises(ValidationError):
            ProxyTarget(hostname="a.example", target_url=url)


def test_route_regex_is_compiled_at_validation() -> None:
    with pytest.raises(ValidationError, match="regular expression"):
        Route(id="r1", path_pattern="/(unclosed", match="regex", target_url="http://127.0.0.1:1")
    route = Route(
        id="r1",
        path_pattern="^/api/(v1|v2)/",
        match="regex",
        target_url="http://127.0.0.1:1",
        methods=["get"],
    )
    assert route.methods == ["GET"]


def test_route_needs_exactly_one_target() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        Route(id="r1", path_pattern="/x")
    with pytest.raises(ValidationError, match="exactly one"):
        Route(id="r1", path_pattern="/x", target_url="http://a:1", target_proxy="b.example")


def test_change_event_round_trips_through_stream_fields() -> None:
    event = ChangeEvent(version=7, kind="proxy", action="created", name="a.example", owner="alice")
    back = ChangeEvent.from_stream_fields(event.to_stream_fields())
    assert back == event


@pytest.mark.parametrize(
    ("name", "refused"),
    [
        ("app.example.com", False),
        ("mcp.dev", False),
        ("auth.localhost", True),
        ("localhost", True),
        ("svc.internal", True),
        ("printer.local", True),
        ("x.test", True),
        ("router.home.arpa", True),
        ("10.0.0.1", True),
        ("intranet", True),
        ("*.example.com", True),
        ("latest.com", False),  # a suffix matches whole labels only
    ],
)
def test_public_ca_refusal(name: str, refused: bool) -> None:
    assert (public_ca_refusal(name) is not None) == refused
