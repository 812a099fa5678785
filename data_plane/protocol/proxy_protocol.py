"""PROXY protocol v1 (text) and v2 (binary) header parsing, sans-IO.

A load balancer in front of the data plane prepends one PROXY header to each TCP connection to tell us who
the real client is. `parse_proxy_header` is fed the bytes received so far and answers: None (need more bytes),
or the parsed header plus how many bytes it used (everything after them is the client's first protocol bytes),
or it raises ProxyProtocolError. Invariants the connection shell relies on:
- a prefix of a valid header is never an error (truncation at any byte returns None);
- malformed input raises as soon as it is provably malformed, and at the latest once 107 bytes (v1) or the
  declared v2 length have arrived, so a caller buffering until "not None" holds a bounded amount of memory;
- `source is None` means "use the real socket addresses" (v1 UNKNOWN, v2 LOCAL, v2 AF_UNSPEC, v2 AF_UNIX).

Spec: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt. This module never imports asyncio.
"""

from __future__ import annotations

import ipaddress
import re
import socket  # only inet_pton / inet_ntop: strict, canonical (RFC 5952) address text, no I/O
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, Literal


class ProxyProtocolError(Exception):
    """The bytes cannot be a PROXY protocol header; the connection must be closed without going further."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    version: int
    command: str  # "PROXY" or "LOCAL"
    source: tuple[str, int] | None
    destination: tuple[str, int] | None


V1_PREFIX: Final = b"PROXY "
# The spec's worst case: "PROXY TCP6 " + 2 * 39-char addresses + 2 * 5-digit ports + 3 spaces + CRLF.
V1_MAX_LENGTH: Final = 107
V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
V2_HEADER_LENGTH: Final = 16

_V1_PROTOCOLS: Final = (b"TCP4", b"TCP6", b"UNKNOWN")
_PORT_RE: Final = re.compile(r"0|[1-9][0-9]{0,4}")
_V1_PRINTABLE_RE: Final = re.compile(rb"[\x20-\x7e]*(?:\r\Z)?")

_V2_COMMAND_LOCAL: Final = 0x0
_V2_COMMAND_PROXY: Final = 0x1
_V2_FAMILY_UNSPEC: Final = 0x0
_V2_FAMILY_INET: Final = 0x1
_V2_FAMILY_INET6: Final = 0x2
_V2_FAMILY_UNIX: Final = 0x3
_V2_TRANSPORT_UNSPEC: Final = 0x0
_V2_TRANSPORT_STREAM: Final = 0x1
# Bytes of the address block each family needs (src + dst addresses, then ports where the family has them).
_V2_ADDRESS_LENGTH: Final = {_V2_FAMILY_INET: 12, _V2_FAMILY_INET6: 36, _V2_FAMILY_UNIX: 216}
_V2_TLV_CRC32C: Final = 0x03


# The longest header there can be: a v2 signature and fixed part (16 bytes) plus a 16-bit length.
MAX_PROXY_HEADER_BYTES = 16 + 65535


def is_trusted(ip: str, networks: Iterable[Any]) -> bool:
    """Whether `ip` (an IPv4-mapped IPv6 address counts as its IPv4) is in one of `networks`
    (TRUSTED_PROXY_CIDRS): such a peer may send PROXY headers and forwarding headers."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


class TrustedPeers:
    """`is_trusted` against fixed networks, remembered per address: every new connection asks, and parsing
    an address costs more than the rest of accepting it. Bounded: emptied when MAX_REMEMBERED is reached."""

    MAX_REMEMBERED = 4096
    __slots__ = ("_known", "networks")

    def __init__(self, networks: Iterable[Any]) -> None:
        self.networks = tuple(networks)
        self._known: dict[str, bool] = {}

    def __call__(self, ip: str) -> bool:
        known = self._known.get(ip)
        if known is None:
            if len(self._known) >= self.MAX_REMEMBERED:
                self._known.clear()
            known = self._known[ip] = is_trusted(ip, self.networks)
        return known


def parse_proxy_header(data: bytes | bytearray) -> tuple[ProxyHeader, int] | None:
    """Parse a PROXY v1 or v2 header from the start of `data`; see the module docstring for the contract."""
    if not data:
        return None
    first = data[0]
    if first == V1_PREFIX[0]:
        return _parse_v1(data)
    if first == V2_SIGNATURE[0]:
        return _parse_v2(data)
    raise ProxyProtocolError("connection did not start with a PROXY protocol header")


# --- v1 ----------------------------------------------------------------------------------------------------


def _parse_v1(data: bytes | bytearray) -> tuple[ProxyHeader, int] | None:
    end = data.find(b"\r\n", 0, V1_MAX_LENGTH)
    if end < 0:
        _check_v1_partial(bytes(data[:V1_MAX_LENGTH]))
        if len(data) >= V1_MAX_LENGTH:
            raise ProxyProtocolError(f"PROXY v1 line has no CRLF within {V1_MAX_LENGTH} bytes")
        return None
    line = bytes(data[:end])
    _check_v1_partial(line)
    if line.endswith(b"\r"):
        raise ProxyProtocolError("PROXY v1 line has a stray CR before its CRLF")
    return _parse_v1_line(line), end + 2


def _check_v1_partial(head: bytes) -> None:
    """Raise if `head` (a line without its CRLF, possibly incomplete) can no longer become a valid v1 line."""
    if not V1_PREFIX.startswith(head[: len(V1_PREFIX)]):
        raise ProxyProtocolError("bad PROXY v1 signature")
    # A CR may only be the last byte seen so far (its LF not yet arrived); a bare LF is never allowed.
    printable = _V1_PRINTABLE_RE.match(head)
    if printable is None or printable.end() < len(head):
        index = printable.end() if printable is not None else 0
        raise ProxyProtocolError(f"PROXY v1 line has a forbidden byte 0x{head[index]:02x} at offset {index}")
    rest = head[len(V1_PREFIX) :].rstrip(b"\r")
    token, space, _ = rest.partition(b" ")
    if space:
        if token not in _V1_PROTOCOLS:
            raise ProxyProtocolError(f"unknown PROXY v1 protocol {token!r}")
    elif not any(protocol.startswith(token) for protocol in _V1_PROTOCOLS):
        raise ProxyProtocolError(f"unknown PROXY v1 protocol {token!r}")


def _parse_v1_line(line: bytes) -> ProxyHeader:
    rest = line[len(V1_PREFIX) :].decode("ascii")
    # UNKNOWN: the sender could not tell (e.g. a health check); the spec says ignore the rest of the line.
    if rest == "UNKNOWN" or rest.startswith("UNKNOWN "):
        return ProxyHeader(version=1, command="PROXY", source=None, destination=None)
    parts = rest.split(" ")
    if len(parts) != 5:
        raise ProxyProtocolError(f"PROXY v1 line needs 5 fields separated by single spaces, got {rest!r}")
    protocol, source_ip, destination_ip, source_port, destination_port = parts
    version: Literal[4, 6] = 4 if protocol == "TCP4" else 6
    return ProxyHeader(
        version=1,
        command="PROXY",
        source=(_v1_address(source_ip, version), _v1_port(source_port)),
        destination=(_v1_address(destination_ip, version), _v1_port(destination_port)),
    )


def _v1_address(text: str, version: Literal[4, 6]) -> str:
    # Zone ids ("fe80::1%eth0") are meaningless across hosts; the spec does not allow them.
    if "%" in text:
        raise ProxyProtocolError(f"PROXY v1 address {text!r} carries a zone id")
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    try:
        packed = socket.inet_pton(family, text)
    except OSError as error:
        raise ProxyProtocolError(f"PROXY v1 address {text!r} is not a valid IPv{version} address") from error
    return socket.inet_ntop(family, packed)


def _v1_port(text: str) -> int:
    if not _PORT_RE.fullmatch(text) or int(text) > 65535:
        raise ProxyProtocolError(f"PROXY v1 port {text!r} is not a decimal in 0..65535 without leading zeros")
    return int(text)


# --- v2 ----------------------------------------------------------------------------------------------------


def _parse_v2(data: bytes | bytearray) -> tuple[ProxyHeader, int] | None:
    signature = bytes(data[: len(V2_SIGNATURE)])
    if not V2_SIGNATURE.startswith(signature):
        raise ProxyProtocolError("bad PROXY v2 signature")
    if len(data) < V2_HEADER_LENGTH:
        # Check the version/command byte as soon as it is here, so junk is refused without waiting.
        if len(data) > len(V2_SIGNATURE):
            _v2_command(data[12])
        return None
    command = _v2_command(data[12])
    family, transport = data[13] >> 4, data[13] & 0x0F
    (length,) = struct.unpack_from("!H", data, 14)
    total = V2_HEADER_LENGTH + length
    if len(data) < total:
        return None
    block = bytes(data[V2_HEADER_LENGTH:total])
    if command == _V2_COMMAND_LOCAL:
        # Health checks from the balancer itself: the spec says discard the block, use the real endpoints.
        return ProxyHeader(version=2, command="LOCAL", source=None, destination=None), total
    if family == _V2_FAMILY_UNSPEC:
        _check_tlvs(data, total, block)
        return ProxyHeader(version=2, command="PROXY", source=None, destination=None), total
    if family not in _V2_ADDRESS_LENGTH:
        raise ProxyProtocolError(f"PROXY v2 address family {family} is unknown")
    if transport != _V2_TRANSPORT_STREAM:
        # We only ever sit behind TCP listeners: a datagram (or unspecified) transport is a confused sender.
        kind = "unspecified" if transport == _V2_TRANSPORT_UNSPEC else f"{transport}"
        raise ProxyProtocolError(f"PROXY v2 transport {kind} is not STREAM")
    address_length = _V2_ADDRESS_LENGTH[family]
    if length < address_length:
        raise ProxyProtocolError(f"PROXY v2 block of {length} bytes is too short for its address family")
    _check_tlvs(data, total, block[address_length:])
    if family == _V2_FAMILY_UNIX:
        return ProxyHeader(version=2, command="PROXY", source=None, destination=None), total
    if family == _V2_FAMILY_INET:
        src = socket.inet_ntop(socket.AF_INET, block[0:4])
        dst = socket.inet_ntop(socket.AF_INET, block[4:8])
        src_port, dst_port = struct.unpack_from("!HH", block, 8)
    else:
        src = socket.inet_ntop(socket.AF_INET6, block[0:16])
        dst = socket.inet_ntop(socket.AF_INET6, block[16:32])
        src_port, dst_port = struct.unpack_from("!HH", block, 32)
    return ProxyHeader(version=2, command="PROXY", source=(src, src_port), destination=(dst, dst_port)), total


def _v2_command(byte: int) -> int:
    if byte >> 4 != 2:
        raise ProxyProtocolError(f"PROXY v2 version nibble is {byte >> 4}, expected 2")
    command = byte & 0x0F
    if command not in (_V2_COMMAND_LOCAL, _V2_COMMAND_PROXY):
        raise ProxyProtocolError(f"PROXY v2 command {command} is unknown")
    return command


def _check_tlvs(data: bytes | bytearray, total: int, tlvs: bytes) -> None:
    """Walk the TLVs: each must fit exactly in the block; a CRC32C TLV, when present, must match."""
    offset = 0
    while offset < len(tlvs):
        if len(tlvs) - offset < 3:
            raise ProxyProtocolError("PROXY v2 TLV header runs past the end of the block")
        kind = tlvs[offset]
        (value_length,) = struct.unpack_from("!H", tlvs, offset + 1)
        value_start = offset + 3
        if value_start + value_length > len(tlvs):
            raise ProxyProtocolError(f"PROXY v2 TLV type 0x{kind:02x} runs past the end of the block")
        if kind == _V2_TLV_CRC32C:
            _check_crc32c(data, total, tlvs, value_start, value_length)
        offset = value_start + value_length


def _check_crc32c(
    data: bytes | bytearray, total: int, tlvs: bytes, value_start: int, value_length: int
) -> None:
    if value_length != 4:
        raise ProxyProtocolError("PROXY v2 CRC32C TLV must be 4 bytes")
    # The checksum covers the whole header with the checksum field itself zeroed.
    field_offset = total - len(tlvs) + value_start
    header = bytearray(data[:total])
    header[field_offset : field_offset + 4] = b"\x00\x00\x00\x00"
    (expected,) = struct.unpack_from("!I", tlvs, value_start)
    if crc32c(bytes(header)) != expected:
        raise ProxyProtocolError("PROXY v2 CRC32C checksum mismatch")


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for index in range(256):
        crc = index
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE: Final = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as PROXY v2 uses; headers are tiny, so a table-driven loop is fast enough."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF
