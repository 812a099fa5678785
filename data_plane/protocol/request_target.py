"""The request target as routing, auth and the upstream all see it (RFC 3986 section 6.2.2, RFC 9112 section
3.2), sans-IO.

`parse_request_target` runs once per request, before the ACME check, routing and the auth gate, and its
normalised target is also what goes upstream: a path is never judged in one spelling and served in another.
- Forms: origin-form `/path?query`; absolute-form `http(s)://authority/path?query` when the authority is the
  Host header's (RFC 9112 3.2.2; it is forwarded in origin-form); `*` for OPTIONS only. Anything else: 400.
- Percent-escapes: hex digits upper-cased, escapes of unreserved characters decoded (`%6D` is `m`, `%2e` is
  `.`). Each escape is read once: `%252e` stays `%252E`, it never becomes a new escape.
- Bytes a path may not carry (`"<>\\^`{|}`, non-ASCII) are percent-encoded, so each path has one spelling.
- Runs of `/` are merged (nginx's merge_slashes): an upstream that merges them would serve `//admin` as
  `/admin` while the rules saw a path outside `/admin`.
- Dot segments are removed after decoding (RFC 3986 5.2.4), so `/health/%2e%2e/mcp` is `/mcp`.
- Refused with 400: a malformed escape, `%00`, a fragment (`#`), a dot segment with parameters (`..;x`,
  which servlet containers read as `..`).
- `%2F`, `%5C` and a raw backslash are encoded separators: kept as `%2F` / `%5C` (one segment, never split)
  and flagged; the caller refuses them with 400 unless the proxy allows encoded slashes.
The query is kept byte for byte.

`under_prefix` is the one prefix rule for routes, public paths and scope rules, and `normalise_prefix` puts a
configured prefix into the same form as the paths it is matched against.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

# RFC 3986 2.3 unreserved characters: their escapes mean the character itself.
_UNRESERVED: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_SEPARATORS: Final = frozenset(b"/\\")
# A path already in normal form: segments of pchar (no escapes), none of them a dot segment (bare or with
# parameters), no empty segment except a trailing slash. Most requests match and skip the slow path.
_NORMAL_PATH: Final = re.compile(rb"(?:/(?!\.\.?(?:[/;]|$))[A-Za-z0-9._~!$&'()*+,;=:@-]+)*/?")
# An escape, or one byte that is not a pchar or `/` (it gets encoded, or refused).
_ESCAPE_OR_OTHER: Final = re.compile(rb"%([0-9A-Fa-f]{2})|[^A-Za-z0-9._~!$&'()*+,;=:@/-]")
_SLASHES: Final = re.compile(rb"//+")
_ABSOLUTE: Final = re.compile(rb"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)(.*)", re.DOTALL)
_DEFAULT_PORTS: Final = {b"http": b":80", b"https": b":443"}


@dataclass(frozen=True, slots=True)
class RequestTarget:
    target: bytes  # origin-form (or b"*"), normalised, with the client's query: what the upstream gets
    path: str  # `target` without the query: what routes, public paths and scope rules match
    host: bytes  # the authority that routes the request: absolute-form's, else the Host header
    encoded_separator: bool  # the path has %2F / %5C: 400 unless the proxy allows encoded slashes


@dataclass(frozen=True, slots=True)
class TargetRejected:
    reason: str  # always a 400


class _Refused(Exception):
    pass


def parse_request_target(method: bytes, target: bytes, host_header: bytes) -> RequestTarget | TargetRejected:
    """The normal form of a request's target, or why it is refused."""
    host = host_header
    if b"#" in target:
        return TargetRejected("a request target has no fragment ('#')")
    if target[:1] != b"/":
        if target == b"*":
            if method == b"OPTIONS":
                return RequestTarget(b"*", "*", host, False)
            return TargetRejected("the request target '*' is only valid for OPTIONS")
        absolute = _ABSOLUTE.fullmatch(target)
        if absolute is None:
            return TargetRejected(
                "the request target must be a path (origin-form) or an absolute http(s) URL"
            )
        scheme, authority, rest = absolute.group(1).lower(), absolute.group(2), absolute.group(3)
        if scheme not in _DEFAULT_PORTS or not authority or b"@" in authority:
            return TargetRejected(
                "an absolute request target must be an http(s) URL with a host and no userinfo"
            )
        if host_header and not _same_authority(authority, host_header, _DEFAULT_PORTS[scheme]):
            return TargetRejected("the request target's host does not match the Host header")
        host = authority
        target = rest if rest[:1] == b"/" else b"/" + rest
    query_at = target.find(b"?")
    raw_path, query = (target, b"") if query_at < 0 else (target[:query_at], target[query_at:])
    try:
        path, encoded_separator = _normal_path(raw_path)
    except _Refused as refused:
        return TargetRejected(str(refused))
    text = path.decode("ascii")
    return RequestTarget(path + query if path is not raw_path else target, text, host, encoded_separator)


def under_prefix(path: str, prefix: str) -> bool:
    """Whether `path` is at or below `prefix`, on segment boundaries: `/health` covers `/health`,
    `/health/x` and `/health;v=1` (path parameters belong to their segment), never `/healthz`; a prefix
    ending in `/` covers everything below it."""
    if not path.startswith(prefix):
        return False
    if len(path) == len(prefix) or prefix.endswith("/"):
        return True
    return path[len(prefix)] in "/;"


def normalise_prefix(prefix: str) -> str:
    """A configured path prefix in the normal form of request paths, so a rule written `/%6Dcp` or
    `/a/./b` covers what it says. A prefix no request path can have (a bad escape) is kept as written: it
    matches nothing, as before."""
    try:
        path, _separator = _normal_path(prefix.encode("utf-8"))
    except _Refused:
        return prefix
    return path.decode("ascii")


def _normal_path(raw: bytes) -> tuple[bytes, bool]:
    if _NORMAL_PATH.fullmatch(raw) is not None:
        return raw, False
    separator = False

    def rewrite(match: re.Match[bytes]) -> bytes:
        nonlocal separator
        escape = match.group(1)
        byte = int(escape, 16) if escape is not None else match.group(0)[0]
        if escape is not None and byte in _UNRESERVED:
            return bytes((byte,))
        if escape is None and byte == 0x25:
            raise _Refused("malformed percent-escape in the request path")
        if byte == 0:
            raise _Refused("NUL in the request path")
        if byte in _SEPARATORS and (escape is not None or byte == 0x5C):
            separator = True
        return b"%%%02X" % byte

    path = _SLASHES.sub(b"/", _ESCAPE_OR_OTHER.sub(rewrite, raw))
    return _remove_dot_segments(path), separator


def _remove_dot_segments(path: bytes) -> bytes:
    """RFC 3986 5.2.4 for an absolute path with no empty segments but a trailing one."""
    segments = path.split(b"/")[1:]
    out: list[bytes] = []
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        if segment == b".":
            if index == last:
                out.append(b"")
        elif segment == b"..":
            if out:
                out.pop()
            if index == last:
                out.append(b"")
        else:
            if segment.split(b";", 1)[0] in (b".", b".."):
                raise _Refused("a dot segment with parameters ('..;') in the request path")
            out.append(segment)
    return b"/" + b"/".join(out)


def _same_authority(a: bytes, b: bytes, default_port: bytes) -> bool:
    return _canonical_authority(a, default_port) == _canonical_authority(b, default_port)


def _canonical_authority(authority: bytes, default_port: bytes) -> bytes:
    value = authority.strip().lower()
    if value.endswith(default_port):
        value = value[: -len(default_port)]
    return value.removesuffix(b":")
