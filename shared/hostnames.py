"""Hostname validation shared by the API (input) and the data plane (Host header matching).

Names are normalised to lower-case ASCII (IDNA 2008 via Python's idna codec, punycode for non-ASCII labels).
A wildcard is allowed only as the whole left-most label (`*.example.com`) and never directly on a TLD.
"""

from __future__ import annotations

import ipaddress
import re

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
MAX_HOSTNAME_LENGTH = 253


class InvalidHostname(ValueError):
    pass


def normalise_hostname(value: str, *, allow_wildcard: bool) -> str:
    name = value.strip().rstrip(".").lower()
    if not name:
        raise InvalidHostname("hostname is empty")
    wildcard = name.startswith("*.")
    if wildcard:
        if not allow_wildcard:
            raise InvalidHostname("wildcard hostnames are not allowed here")
        name = name[2:]
    if "*" in name:
        raise InvalidHostname("a wildcard may only be the whole left-most label, as in *.example.com")
    try:
        ascii_name = name.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise InvalidHostname(f"hostname {value!r} is not a valid IDNA name: {exc}") from exc
    labels = ascii_name.split(".")
    for label in labels:
        if not _LABEL.match(label):
            raise InvalidHostname(f"hostname {value!r} has an invalid label {label!r}")
    if wildcard and len(labels) < 2:
        raise InvalidHostname("a wildcard needs at least two labels after '*.' (no *.com)")
    full = f"*.{ascii_name}" if wildcard else ascii_name
    if len(full) > MAX_HOSTNAME_LENGTH:
        raise InvalidHostname("hostname is longer than 253 characters")
    return full


# Special-use names (RFC 6761, 6762, 7686, 8375, ICANN's .internal): no public CA can validate them.
_SPECIAL_USE_SUFFIXES = (
    "localhost",
    "test",
    "invalid",
    "example",
    "local",
    "internal",
    "onion",
    "home.arpa",
    "lan",
)


def public_ca_refusal(hostname: str) -> str | None:
    """Why a public ACME CA cannot issue for `hostname`, or None when it can.

    Automatic certificates skip such names instead of spending the CA's failed-validation budget; an
    explicit request is still allowed (a private ACME server may serve them)."""
    if hostname.startswith("*."):
        return "wildcards need DNS-01, which is not supported"
    try:
        ipaddress.ip_address(hostname)
        return "IP addresses cannot get HTTP-01 certificates here"
    except ValueError:
        pass
    if "." not in hostname:
        return "single-label names are not public"
    for suffix in _SPECIAL_USE_SUFFIXES:
        if hostname == suffix or hostname.endswith("." + suffix):
            return f".{suffix} is a special-use name no public CA validates"
    return None
