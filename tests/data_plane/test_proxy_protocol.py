"""PROXY protocol v1/v2 parser: a conversation table of valid and malformed headers, fed byte by byte.

The header builders live here (tests only): v2 headers are packed by hand from the spec's layout, so the
parser is checked against an independent encoding, not against itself.
"""

from __future__ import annotations

import ipaddress
import struct

import pytest

from data_plane.protocol.proxy_protocol import (
    V1_MAX_LENGTH,
    V2_SIGNATURE,
    ProxyHeader,
    ProxyProtocolError,
    TrustedPeers,
    crc32c,
    is_trusted,
    parse_proxy_header,
)

PAYLOAD = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"

LOCAL, PROXY = 0x0, 0x1
UNSPEC, INET, INET6, UNIX = 0x0, 0x1, 0x2, 0x3
STREAM, DGRAM = 0x1, 0x2


def build_v2(
    *,
    command: int = PROXY,
    family: int = INET,
    transport: int = STREAM,
    addresses: bytes | None = None,
    tlvs: bytes = b"",
    version: int = 2,
    length: int | None = None,
) -> bytes:
    block = (addresses if addresses is not None else b"") + tlvs
    declared = len(block) if length is None else length
    return (
        V2_SIGNATURE
        + bytes([(version << 4) | command, (family << 4) | transport])
        + struct.pack("!H", declared)
        + block
    )


def inet(src: str, dst: str, sport: int, dport: int) -> bytes:
    addresses = ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed
    return addresses + struct.pack("!HH", sport, dport)


def inet6(src: str, dst: str, sport: int, dport: int) -> bytes:
    addresses = ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed
    return addresses + struct.pack("!HH", sport, dport)


def unix(src: bytes, dst: bytes) -> bytes:
    return src.ljust(108, b"\x00") + dst.ljust(108, b"\x00")


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


def with_crc32c(header_without_crc: bytes, *, corrupt: bool = False) -> bytes:
    """Append a CRC32C TLV and fix up the length, computing the checksum the way the spec describes."""
    body = header_without_crc[16:] + tlv(0x03, b"\x00\x00\x00\x00")
    zeroed = header_without_crc[:14] + struct.pack("!H", len(body)) + body
    checksum = crc32c(zeroed) ^ (1 if corrupt else 0)
    return zeroed[:-4] + struct.pack("!I", checksum)


MAX_V6 = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"

VALID: list[tuple[str, bytes, ProxyHeader]] = [
    (
        "v1 tcp4",
        b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 443\r\n",
        ProxyHeader(1, "PROXY", ("192.0.2.10", 56324), ("198.51.100.1", 443)),
    ),
    (
        "v1 tcp4 port bounds",
        b"PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n",
        ProxyHeader(1, "PROXY", ("0.0.0.0", 0), ("255.255.255.255", 65535)),
    ),
    (
        "v1 tcp6",
        b"PROXY TCP6 2001:db8::1 2001:DB8:0:0:0:0:0:2 1 2\r\n",
        ProxyHeader(1, "PROXY", ("2001:db8::1", 1), ("2001:db8::2", 2)),
    ),
    (
        "v1 tcp6 v4-mapped",
        b"PROXY TCP6 ::ffff:192.0.2.1 ::1 1000 80\r\n",
        ProxyHeader(1, "PROXY", ("::ffff:192.0.2.1", 1000), ("::1", 80)),
    ),
    (
        "v1 tcp6 longest",
        f"PROXY TCP6 {MAX_V6} {MAX_V6} 65535 65535\r\n".encode(),
        ProxyHeader(1, "PROXY", (MAX_V6, 65535), (MAX_V6, 65535)),
    ),
    ("v1 unknown bare", b"PROXY UNKNOWN\r\n", ProxyHeader(1, "PROXY", None, None)),
    (
        "v1 unknown with addresses",
        b"PROXY UNKNOWN 192.0.2.1 192.0.2.2 1 2\r\n",
        ProxyHeader(1, "PROXY", None, None),
    ),
    (
        "v1 unknown at the 107-byte limit",
        f"PROXY UNKNOWN {MAX_V6} {MAX_V6} 65535 65535\r\n".encode(),
        ProxyHeader(1, "PROXY", None, None),
    ),
    (
        "v2 inet",
        build_v2(addresses=inet("203.0.113.7", "192.0.2.1", 40000, 443)),
        ProxyHeader(2, "PROXY", ("203.0.113.7", 40000), ("192.0.2.1", 443)),
    ),
    (
        "v2 inet6",
        build_v2(family=INET6, addresses=inet6("2001:db8::7", "::1", 1, 65535)),
        ProxyHeader(2, "PROXY", ("2001:db8::7", 1), ("::1", 65535)),
    ),
    (
        "v2 inet with tlvs",
        build_v2(
            addresses=inet("10.0.0.1", "10.0.0.2", 5, 6),
            tlvs=tlv(0x02, b"mcp.example") + tlv(0x04, b"") + tlv(0x20, b"s" * 40),
        ),
        ProxyHeader(2, "PROXY", ("10.0.0.1", 5), ("10.0.0.2", 6)),
    ),
    (
        "v2 inet with crc32c",
        with_crc32c(build_v2(addresses=inet("10.0.0.1", "10.0.0.2", 5, 6))),
        ProxyHeader(2, "PROXY", ("10.0.0.1", 5), ("10.0.0.2", 6)),
    ),
    (
        "v2 unix",
        build_v2(family=UNIX, addresses=unix(b"/run/a.sock", b"/run/b.sock")),
        ProxyHeader(2, "PROXY", None, None),
    ),
    ("v2 unspec", build_v2(family=UNSPEC, transport=0), ProxyHeader(2, "PROXY", None, None)),
    (
        "v2 local ignores its block",
        build_v2(command=LOCAL, family=INET, addresses=b"\xff" * 5),
        ProxyHeader(2, "LOCAL", None, None),
    ),
    (
        "v2 local unspec",
        build_v2(command=LOCAL, family=UNSPEC, transport=0),
        ProxyHeader(2, "LOCAL", None, None),
    ),
]


@pytest.mark.parametrize(("header", "expected"), [(h, e) for _, h, e in VALID], ids=[n for n, _, _ in VALID])
def test_valid_header_parses_and_stops_at_its_end(header: bytes, expected: ProxyHeader) -> None:
    assert parse_proxy_header(header) == (expected, len(header))
    # The client's own bytes that follow are not consumed, whichever buffer type the shell uses.
    assert parse_proxy_header(bytearray(header + PAYLOAD)) == (expected, len(header))


@pytest.mark.parametrize("header", [h for _, h, _ in VALID], ids=[n for n, _, _ in VALID])
def test_every_truncation_of_a_valid_header_asks_for_more(header: bytes) -> None:
    for cut in range(len(header)):
        assert parse_proxy_header(header[:cut]) is None, f"prefix of {cut} bytes"


def test_107_byte_v1_limit_is_exact() -> None:
    at_limit = next(header for name, header, _ in VALID if name == "v1 unknown at the 107-byte limit")
    assert len(at_limit) == V1_MAX_LENGTH
    assert parse_proxy_header(at_limit) is not None
    one_over = at_limit.replace(b"UNKNOWN ", b"UNKNOWN  ")
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(one_over)


GOOD_V4 = inet("10.0.0.1", "10.0.0.2", 5, 6)

MALFORMED: list[tuple[str, bytes]] = [
    ("plain http", PAYLOAD),
    ("tls client hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
    ("lower-case signature", b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n"),
    ("no space after PROXY", b"PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n"),
    ("empty line", b"PROXY\r\n"),
    ("empty protocol", b"PROXY \r\n"),
    ("unknown protocol", b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n"),
    ("protocol without fields", b"PROXY TCP4\r\n"),
    ("bare LF", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"),
    ("CR without LF", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rGET"),
    ("stray CR before CRLF", b"PROXY UNKNOWN 1.2.3.4\r\r\n"),
    ("stray CR after protocol", b"PROXY UNKNOWN\r\r\n"),
    ("tab separator", b"PROXY TCP4\t1.2.3.4 5.6.7.8 1 2\r\n"),
    ("double space", b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n"),
    ("trailing space", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n"),
    ("missing port", b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"),
    ("extra field", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"),
    ("ipv6 under TCP4", b"PROXY TCP4 ::1 ::1 1 2\r\n"),
    ("ipv4 under TCP6", b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n"),
    ("ipv4 leading zero", b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n"),
    ("ipv4 octet out of range", b"PROXY TCP4 256.2.3.4 5.6.7.8 1 2\r\n"),
    ("ipv4 three octets", b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n"),
    ("hostname instead of address", b"PROXY TCP4 example.com 5.6.7.8 1 2\r\n"),
    ("ipv6 zone id", b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n"),
    ("port too large", b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n"),
    ("port leading zero", b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n"),
    ("negative port", b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n"),
    ("plus-signed port", b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n"),
    ("non-ascii byte", b"PROXY TCP4 1.2.3.4 5.6.7.\xb8 1 2\r\n"),
    ("nul byte", b"PROXY TCP4 1.2.3.4\x00 5.6.7.8 1 2\r\n"),
    ("no CRLF within 107 bytes", b"PROXY UNKNOWN " + b"a" * 200),
    ("v2 wrong signature", V2_SIGNATURE[:-1] + b"X" + bytes([0x21, 0x11, 0, 12]) + GOOD_V4),
    ("v2 version 1", build_v2(version=1, addresses=GOOD_V4)),
    ("v2 version 3", build_v2(version=3, addresses=GOOD_V4)),
    ("v2 command 2", build_v2(command=0x2, addresses=GOOD_V4)),
    ("v2 command 15", build_v2(command=0xF, addresses=GOOD_V4)),
    ("v2 family 4", build_v2(family=0x4, addresses=GOOD_V4)),
    ("v2 inet over dgram", build_v2(transport=DGRAM, addresses=GOOD_V4)),
    ("v2 inet over unspecified transport", build_v2(transport=0, addresses=GOOD_V4)),
    ("v2 unix over dgram", build_v2(family=UNIX, transport=DGRAM, addresses=unix(b"/a", b"/b"))),
    ("v2 transport 3", build_v2(transport=0x3, addresses=GOOD_V4)),
    ("v2 block too short for inet", build_v2(addresses=GOOD_V4[:11])),
    ("v2 block too short for inet6", build_v2(family=INET6, addresses=inet6("::1", "::2", 1, 2)[:35])),
    ("v2 block too short for unix", build_v2(family=UNIX, addresses=unix(b"/a", b"/b")[:215])),
    ("v2 truncated tlv header", build_v2(addresses=GOOD_V4, tlvs=b"\x02\x00")),
    ("v2 tlv value overruns block", build_v2(addresses=GOOD_V4, tlvs=b"\x02\x00\x09abc")),
    ("v2 second tlv overruns block", build_v2(addresses=GOOD_V4, tlvs=tlv(0x04, b"") + b"\x02\xff\xff")),
    ("v2 unspec with broken tlv", build_v2(family=UNSPEC, transport=0, tlvs=b"\x01")),
    ("v2 crc32c mismatch", with_crc32c(build_v2(addresses=GOOD_V4), corrupt=True)),
    ("v2 crc32c wrong size", build_v2(addresses=GOOD_V4, tlvs=tlv(0x03, b"\x00\x00\x00"))),
]


@pytest.mark.parametrize("data", [d for _, d in MALFORMED], ids=[n for n, _ in MALFORMED])
def test_malformed_header_raises(data: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(data)
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(bytearray(data + PAYLOAD))


@pytest.mark.parametrize("data", [d for _, d in MALFORMED], ids=[n for n, _ in MALFORMED])
def test_once_malformed_every_longer_prefix_stays_malformed(data: bytes) -> None:
    """Feeding bytes one at a time: None, None, ..., then errors only; never a parse of a bad header."""
    raised_at = None
    for cut in range(len(data) + 1):
        try:
            result = parse_proxy_header(data[:cut])
        except ProxyProtocolError:
            raised_at = cut if raised_at is None else raised_at
            continue
        assert raised_at is None, f"prefix of {cut} bytes parsed after prefix of {raised_at} was refused"
        assert result is None, f"prefix of {cut} bytes parsed as {result}"
    assert raised_at is not None


@pytest.mark.parametrize(
    ("data", "refused_by"),
    [
        (PAYLOAD, 1),  # not 'P' and not '\r': refused on the first byte, not after 107
        (b"PROXZ", 5),
        (b"PROXY FOO", 7),  # "F" cannot start TCP4 / TCP6 / UNKNOWN
        (b"PROXY TCP4 1.2\n", 15),
        (V2_SIGNATURE[:5] + b"X", 6),
        (V2_SIGNATURE + b"\x11", 13),  # bad version is refused before the length arrives
    ],
)
def test_garbage_is_refused_without_waiting_for_a_full_header(data: bytes, refused_by: int) -> None:
    assert parse_proxy_header(data[: refused_by - 1]) is None
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(data[:refused_by])


def test_v2_waits_for_the_declared_length_even_when_large() -> None:
    header = build_v2(addresses=GOOD_V4, tlvs=tlv(0xE0, b"x" * 60000))
    assert parse_proxy_header(header[:-1]) is None
    parsed = parse_proxy_header(header + PAYLOAD)
    assert parsed is not None
    assert parsed[1] == len(header)


def test_crc32c_matches_the_castagnoli_check_value() -> None:
    # The standard check value for CRC-32C over "123456789" (RFC 3720 appendix B.4).
    assert crc32c(b"123456789") == 0xE3069283


@pytest.mark.parametrize(
    ("address", "trusted"),
    [
        ("10.1.2.3", True),
        ("::ffff:10.1.2.3", True),  # IPv4-mapped IPv6 is judged as its IPv4
        ("10.0.0.0", True),
        ("11.0.0.1", False),
        ("fd00::1", True),
        ("fe80::1", False),
        ("not-an-address", False),
        ("", False),
    ],
)
def test_trusted_peers_answers_as_is_trusted_first_and_remembered(address: str, trusted: bool) -> None:
    networks = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")]
    peers = TrustedPeers(networks)
    assert is_trusted(address, networks) is trusted
    assert peers(address) is trusted
    assert peers(address) is trusted  # the remembered answer is the same


def test_trusted_peers_memory_is_bounded() -> None:
    peers = TrustedPeers([ipaddress.ip_network("10.0.0.0/8")])
    for n in range(TrustedPeers.MAX_REMEMBERED + 10):
        assert peers(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}")
    assert len(peers._known) <= TrustedPeers.MAX_REMEMBERED
    assert not peers("192.0.2.1")
