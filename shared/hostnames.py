"""Hostname validation shared by the API (input) and the data plane (Host header matching).

Names are normalised to lower-case ASCII (IDNA 2008 via Python's idna codec, punycode for non-ASCII labels).
A wildcard is allowed only as the whole left-most label (`*.example.com`) and never directly on a TLD.
"""

from __future__ import annotations

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
