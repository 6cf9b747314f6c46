"""ICMP (RFC 792) and ICMPv6 (RFC 4443) messages: construct definitions, parsing, building.

The TCP fast path never comes here: `parse_packet` refuses a datagram that does not carry TCP
with ``not_tcp`` and a driver then hands that datagram to `parse_icmp` (or calls
`parse_datagram`, which does both). So the checks of the IP header itself (length, version,
IHL, header checksum, fragments) have already passed; this module checks the rest, each with
its own reason, in this order:

1. ``not_tcp``               the protocol is not ICMP either (still an unknown protocol)
2. ``bad_total_length``      Total Length larger than the buffer or smaller than the IP header
                             (IPv6: ``bad_payload_length`` and the extension-header reasons of
                             stack/wire/ipv6.py, whose walk finds the ICMPv6 header)
3. ``icmp_truncated``        fewer than the 8 octets every ICMP message starts with (RFC 792)
4. ``bad_icmp_checksum``     ICMP: the internet checksum over the message; ICMPv6: over the
                             IPv6 pseudo-header and the message (RFC 4443 §2.3)
5. ``icmp_quote_truncated``  an error message whose quote is shorter than an IP header and the
                             8 octets RFC 1122 §3.2.2 (and RFC 4443 §2.4 (c)) require
6. ``icmp_bad_quote``        the quote does not start with an IP header of the message's own
                             version (bad version or IHL), or its IPv6 extension headers do not walk

A quote of another protocol than TCP is not malformed (a host may get errors about anything it
sent); the core counts it as an error about nothing it knows.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Any

from construct import Bytes, ConstructError, GreedyBytes, Int8ub, Int16ub, Int32ub, Struct, Switch, this

from stack.native import internet_checksum
from stack.wire.headers import (
    IPPROTO_TCP,
    IPV4_CODEC,
    IPV4_MIN_HEADER,
    IPV4_VERSION,
    IPV6_CODEC,
    IPV6_HEADER,
    IPV6_HEADER_SIZE,
    IPV6_VERSION,
    IPV6_VERSION_SHIFT,
)
from stack.wire.ipv6 import walk_extension_headers
from stack.wire.parse import parse_packet
from stack.wire.reasons import MalformedPacket, Reason
from stack.wire.segment import Segment

IPPROTO_ICMP = 1
IPPROTO_ICMPV6 = 58

# ICMP types (RFC 792) and the codes of Destination Unreachable this stack tells apart (RFC 1122
# §3.2.2.1, RFC 1812 §5.2.7.1 for 9..15).
ICMP_ECHO_REPLY = 0
ICMP_DEST_UNREACH = 3
ICMP_SOURCE_QUENCH = 4
ICMP_REDIRECT = 5
ICMP_ECHO_REQUEST = 8
ICMP_TIME_EXCEEDED = 11
ICMP_PARAMETER_PROBLEM = 12
ICMP_NET_UNREACH = 0
ICMP_HOST_UNREACH = 1
ICMP_PROT_UNREACH = 2
ICMP_PORT_UNREACH = 3
ICMP_FRAG_NEEDED = 4  # "fragmentation needed and DF set", with the next-hop MTU of RFC 1191 §4
ICMP_ERROR_TYPES = frozenset(
    {ICMP_DEST_UNREACH, ICMP_SOURCE_QUENCH, ICMP_REDIRECT, ICMP_TIME_EXCEEDED, ICMP_PARAMETER_PROBLEM}
)

# ICMPv6 types (RFC 4443 §2.1: errors are 0..127, informational messages 128..255).
ICMPV6_DEST_UNREACH = 1
ICMPV6_PACKET_TOO_BIG = 2
ICMPV6_TIME_EXCEEDED = 3
ICMPV6_PARAMETER_PROBLEM = 4
ICMPV6_ECHO_REQUEST = 128
ICMPV6_ECHO_REPLY = 129
# Destination Unreachable codes (RFC 4443 §3.1).
ICMPV6_NO_ROUTE = 0
ICMPV6_ADMIN_PROHIBITED = 1
ICMPV6_BEYOND_SCOPE = 2
ICMPV6_ADDR_UNREACH = 3
ICMPV6_PORT_UNREACH = 4
ICMPV6_POLICY_FAIL = 5
ICMPV6_REJECT_ROUTE = 6

ICMP_HEADER_LEN = 8  # type, code, checksum and the 32-bit "rest of header"
QUOTED_TRANSPORT = 8  # octets of the transport header an error must quote (RFC 1122 §3.2.2)

# The 32-bit field after the checksum means something different per type; construct names each.
_ECHO_REST = Struct("identifier" / Int16ub, "sequence" / Int16ub)
ICMPV4_MESSAGE = Struct(
    "type" / Int8ub,
    "code" / Int8ub,
    "checksum" / Int16ub,
    "rest" / Switch(this.type, {
        ICMP_ECHO_REQUEST: _ECHO_REST,
        ICMP_ECHO_REPLY: _ECHO_REST,
        # RFC 1191 §4: the low 16 bits carry the next-hop MTU (zero from pre-1191 routers).
        ICMP_DEST_UNREACH: Struct("unused" / Int16ub, "mtu" / Int16ub),
        # RFC 792: the pointer names the octet of the quoted header that was wrong.
        ICMP_PARAMETER_PROBLEM: Struct("pointer" / Int8ub, "unused" / Bytes(3)),
    }, default=Struct("unused" / Int32ub)),
    "body" / GreedyBytes,  # echo data, or the quoted datagram of an error
)
ICMPV6_MESSAGE = Struct(
    "type" / Int8ub,
    "code" / Int8ub,
    "checksum" / Int16ub,
    "rest" / Switch(this.type, {
        ICMPV6_ECHO_REQUEST: _ECHO_REST,
        ICMPV6_ECHO_REPLY: _ECHO_REST,
        ICMPV6_PACKET_TOO_BIG: Struct("mtu" / Int32ub),  # RFC 4443 §3.2
        ICMPV6_PARAMETER_PROBLEM: Struct("pointer" / Int32ub),  # RFC 4443 §3.4
    }, default=Struct("unused" / Int32ub)),
    "body" / GreedyBytes,
)
# The first 8 octets of a quoted TCP header: ports and SEQ are all an error needs (RFC 5927 §5.1).
QUOTED_TCP = Struct("src_port" / Int16ub, "dst_port" / Int16ub, "seq" / Int32ub)

# Compiled once: construct's generated code parses and builds these ~4x faster than the Structs.
_ICMPV4 = ICMPV4_MESSAGE.compile()
_ICMPV6 = ICMPV6_MESSAGE.compile()
_QUOTED_TCP = QUOTED_TCP.compile()

# Compiled once: construct's generated code parses and builds these ~4x faster than the Structs.
_ICMPV4 = ICMPV4_MESSAGE.compile()
_ICMPV6 = ICMPV6_MESSAGE.compile()
_QUOTED_TCP = QUOTED_TCP.compile()

# The rest-of-header fields each type carries, for `build_icmp` (everything else is "unused").
_REST_FIELDS = ("identifier", "sequence", "mtu", "pointer")


@dataclass(frozen=True, slots=True)
class Quote:
    """What an ICMP error quotes of the datagram it is about (one we sent): its addresses, its
    protocol, and for TCP the ports and SEQ of the first 8 octets of the header."""

    src_addr: str
    dst_addr: str
    protocol: int
    src_port: int = 0
    dst_port: int = 0
    seq: int = 0


@dataclass(frozen=True, slots=True)
class IcmpMessage:
    """One ICMP (version 4) or ICMPv6 (version 6) message with the addresses it travelled between.

    `identifier`/`sequence` are an echo's; `mtu` is the next-hop MTU of a frag-needed or the MTU
    of a Packet Too Big; `pointer` a Parameter Problem's. `body` is the echo data or the quoted
    datagram; `quote` its decoded start (errors only)."""

    version: int
    src_addr: str
    dst_addr: str
    type: int
    code: int = 0
    identifier: int = 0
    sequence: int = 0
    mtu: int = 0
    pointer: int = 0
    body: bytes = b""
    quote: Quote | None = None

    @property
    def is_error(self) -> bool:
        if self.version == IPV6_VERSION:
            return self.type < 128  # RFC 4443 §2.1
        return self.type in ICMP_ERROR_TYPES

    def summary(self) -> str:
        """A one-line tcpdump-like description."""
        name = "ICMP6" if self.version == IPV6_VERSION else "ICMP"
        text = f"{self.src_addr} > {self.dst_addr}: {name} type {self.type} code {self.code}"
        if self.type in (ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY, ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY):
            text += f" id {self.identifier} seq {self.sequence} len {len(self.body)}"
        if self.mtu:
            text += f" mtu {self.mtu}"
        if self.quote is not None:
            q = self.quote
            text += f" about {q.src_addr}:{q.src_port} > {q.dst_addr}:{q.dst_port} proto {q.protocol} seq {q.seq}"
        return text


def icmpv6_checksum(src16: bytes, dst16: bytes, message: bytes | bytearray | memoryview) -> int:
    """RFC 4443 §2.3: the checksum over the IPv6 pseudo-header (RFC 8200 §8.1, next header 58)."""
    pseudo = src16 + dst16 + struct.pack("!IxxxB", len(message), IPPROTO_ICMPV6)
    return internet_checksum(pseudo + bytes(message))


# ------------------------------------------------------------------------------------------- parse
def parse_datagram(buf: bytes | bytearray | memoryview, *, verify_checksums: bool = True) -> Segment | IcmpMessage:
    """A TCP segment, or an ICMP message when the datagram carries one. Raises `MalformedPacket`."""
    try:
        return parse_packet(buf, verify_checksums=verify_checksums)
    except MalformedPacket as bad:
        if bad.reason is not Reason.NOT_TCP:
            raise
    return parse_icmp(buf, verify_checksums=verify_checksums)


def parse_icmp(buf: bytes | bytearray | memoryview, *, verify_checksums: bool = True) -> IcmpMessage:
    """The ICMP message of a datagram `parse_packet` refused as ``not_tcp`` (its IP header is
    valid). Raises `MalformedPacket` only."""
    data = bytes(buf)
    if len(data) < IPV4_MIN_HEADER or data[0] >> 4 != IPV4_VERSION:
        # parse_packet passed it: only an IPv6 datagram gets here without an IPv4 header.
        return _parse_icmpv6(data, verify_checksums)
    ihl = (data[0] & 0x0F) << 2
    fields = IPV4_CODEC.parse(data)
    total_length, protocol, src4, dst4 = fields[2], fields[6], fields[8], fields[9]
    if protocol != IPPROTO_ICMP:
        raise MalformedPacket(Reason.NOT_TCP, f"IP protocol {protocol}")
    if total_length > len(data) or total_length < ihl:
        raise MalformedPacket(Reason.BAD_TOTAL_LENGTH,
                              f"total length {total_length}, buffer {len(data)}, IP header {ihl}")
    message = data[ihl:total_length]
    _check_length(message)
    if verify_checksums and internet_checksum(message) != 0:
        raise MalformedPacket(Reason.BAD_ICMP_CHECKSUM, f"ICMP checksum {_field(message):#06x} does not verify")
    return _message(IPV4_VERSION, socket.inet_ntoa(src4), socket.inet_ntoa(dst4), _ICMPV4.parse(message))


def _parse_icmpv6(data: bytes, verify_checksums: bool) -> IcmpMessage:
    """ICMPv6 at the end of the extension-header chain that `parse_packet` already walked."""
    if len(data) < IPV6_HEADER_SIZE or data[0] >> 4 != IPV6_VERSION:
        raise MalformedPacket(Reason.NOT_IPV4, f"IP version {data[0] >> 4 if data else None}")
    _vcf, payload_length, next_header, _hops, src16, dst16 = IPV6_CODEC.parse(data)
    end = IPV6_HEADER_SIZE + payload_length
    if end > len(data):
        raise MalformedPacket(Reason.BAD_PAYLOAD_LENGTH, f"payload length {payload_length}, buffer {len(data)}")
    protocol, start = walk_extension_headers(data, next_header, end)
    if protocol != IPPROTO_ICMPV6:
        raise MalformedPacket(Reason.NOT_TCP, f"IPv6 next header {protocol}")
    message = data[start:end]
    _check_length(message)
    if verify_checksums and icmpv6_checksum(src16, dst16, message) != 0:
        raise MalformedPacket(Reason.BAD_ICMP_CHECKSUM, f"ICMPv6 checksum {_field(message):#06x} does not verify")
    return _message(IPV6_VERSION, socket.inet_ntop(socket.AF_INET6, src16),
                    socket.inet_ntop(socket.AF_INET6, dst16), _ICMPV6.parse(message))


def _field(message: bytes) -> int:
    return message[2] << 8 | message[3]  # the checksum as sent


def _check_length(message: bytes) -> None:
    if len(message) < ICMP_HEADER_LEN:
        raise MalformedPacket(Reason.ICMP_TRUNCATED, f"{len(message)} octets, an ICMP header needs {ICMP_HEADER_LEN}")


def _message(version: int, src: str, dst: str, parsed: Any) -> IcmpMessage:
    rest = parsed.rest
    msg = IcmpMessage(version, src, dst, parsed.type, parsed.code,
                      **{name: rest[name] for name in _REST_FIELDS if name in rest}, body=parsed.body)
    if not msg.is_error:
        return msg
    quote = _parse_quote(parsed.body, version)
    return IcmpMessage(msg.version, msg.src_addr, msg.dst_addr, msg.type, msg.code, msg.identifier, msg.sequence,
                       msg.mtu, msg.pointer, msg.body, quote)


def _parse_quote(body: bytes, version: int) -> Quote:
    """The quoted datagram's IP header and the first 8 octets of what it carried."""
    if version == IPV6_VERSION:
        if len(body) < IPV6_HEADER_SIZE + QUOTED_TRANSPORT:
            raise MalformedPacket(Reason.ICMP_QUOTE_TRUNCATED, f"quote of {len(body)} octets")
        if body[0] >> 4 != IPV6_VERSION:
            raise MalformedPacket(Reason.ICMP_BAD_QUOTE, f"quoted IP version {body[0] >> 4}")
        _vcf, _length, next_header, _hops, src16, dst16 = IPV6_CODEC.parse(body)
        src = socket.inet_ntop(socket.AF_INET6, src16)
        dst = socket.inet_ntop(socket.AF_INET6, dst16)
        try:  # the quoted datagram's own extension headers, as far as the quote holds them
            protocol, start = walk_extension_headers(body, next_header, len(body))
        except MalformedPacket as bad:
            raise MalformedPacket(Reason.ICMP_BAD_QUOTE, f"quoted extension headers: {bad.detail}") from None
        if protocol == IPPROTO_TCP and len(body) < start + QUOTED_TRANSPORT:
            raise MalformedPacket(Reason.ICMP_QUOTE_TRUNCATED, f"quote of {len(body)} octets, TCP at {start}")
    else:
        if len(body) < IPV4_MIN_HEADER:
            raise MalformedPacket(Reason.ICMP_QUOTE_TRUNCATED, f"quote of {len(body)} octets")
        ihl = (body[0] & 0x0F) << 2
        if body[0] >> 4 != IPV4_VERSION or ihl < IPV4_MIN_HEADER:
            raise MalformedPacket(Reason.ICMP_BAD_QUOTE, f"quoted IP version {body[0] >> 4}, IHL {ihl >> 2}")
        if len(body) < ihl + QUOTED_TRANSPORT:
            raise MalformedPacket(Reason.ICMP_QUOTE_TRUNCATED, f"quote of {len(body)} octets, IP header {ihl}")
        fields = IPV4_CODEC.parse(body)
        src, dst, protocol, start = socket.inet_ntoa(fields[8]), socket.inet_ntoa(fields[9]), fields[6], ihl
    if protocol != IPPROTO_TCP:
        return Quote(src, dst, protocol)
    tcp = _QUOTED_TCP.parse(body[start : start + QUOTED_TRANSPORT])
    return Quote(src, dst, protocol, tcp.src_port, tcp.dst_port, tcp.seq)


# ------------------------------------------------------------------------------------------- build
def build_icmp(msg: IcmpMessage, *, ttl: int = 64, ident: int = 0) -> bytes:
    """A complete IPv4 + ICMP (or IPv6 + ICMPv6) datagram for `msg`, checksums filled in.
    Raises ValueError."""
    v6 = msg.version == IPV6_VERSION
    codec = _ICMPV6 if v6 else _ICMPV4
    rest = {"identifier": msg.identifier, "sequence": msg.sequence, "mtu": msg.mtu, "pointer": msg.pointer,
            "unused": bytes(3) if not v6 and msg.type == ICMP_PARAMETER_PROBLEM else 0}
    try:
        message = bytearray(codec.build({"type": msg.type, "code": msg.code, "checksum": 0, "rest": rest,
                                         "body": msg.body}))
        if v6:
            src = socket.inet_pton(socket.AF_INET6, msg.src_addr)
            dst = socket.inet_pton(socket.AF_INET6, msg.dst_addr)
            message[2:4] = icmpv6_checksum(src, dst, message).to_bytes(2, "big")
            header = IPV6_HEADER.build({"version_class_flow": IPV6_VERSION << IPV6_VERSION_SHIFT,
                                        "payload_length": len(message), "next_header": IPPROTO_ICMPV6,
                                        "hop_limit": ttl, "src": src, "dst": dst})
            return bytes(header) + bytes(message)
        message[2:4] = internet_checksum(message).to_bytes(2, "big")
        header = bytearray(IPV4_CODEC.build((IPV4_VERSION << 4 | IPV4_MIN_HEADER >> 2, 0,
                                             IPV4_MIN_HEADER + len(message), ident, 0, ttl, IPPROTO_ICMP, 0,
                                             socket.inet_aton(msg.src_addr), socket.inet_aton(msg.dst_addr))))
    except (ConstructError, OSError, ValueError, TypeError, struct.error) as exc:
        raise ValueError(f"cannot encode {msg.summary()}: {exc}") from exc
    header[10:12] = internet_checksum(header).to_bytes(2, "big")
    return bytes(header) + bytes(message)
