"""IP packet from TUN -> `Segment`, with every malformation reported as one `Reason`.

The Version nibble picks the family: 6 goes to `_parse_ipv6` (the extension-header chain and its
checks are in stack/wire/ipv6.py), 4 stays here. Whatever the family, a datagram that does not
carry TCP leaves through `not_tcp`, the one place an upper-layer protocol other than TCP is met.
For IPv4, checks run in this order, each raising `MalformedPacket` with its own reason:

1. ``truncated``         buffer shorter than 20 octets, or than IHL*4 (RFC 791 §3.1)
2. ``not_ipv4``          Version is neither 4 nor 6
3. ``bad_ihl``           IHL < 5
4. ``bad_ip_checksum``   header checksum does not verify (only with verify_checksums)
5. ``fragment``          MF set or fragment offset != 0 -- dropped, no reassembly (RFC 791 §3.2)
6. ``not_tcp``           Protocol != 6
7. ``bad_total_length``  Total Length larger than the buffer or smaller than the IP header
8. ``tcp_truncated``     Total Length leaves less than the 20-octet TCP header (RFC 9293 §3.1)
9. ``bad_data_offset``   Data Offset < 5 words or past the end of the segment
10. ``bad_tcp_checksum`` pseudo-header checksum does not verify (only with verify_checksums)
11. ``bad_option_length`` option length 0 or 1, or an option overrunning the option area

The IP checksum is verified before any other header field is trusted, as ip_rcv() does. The TCP
checksum is verified before options are decoded, so random corruption is reported as a checksum
failure rather than as whatever garbage the options turned into. Octets past Total Length
(Ethernet-style padding) are ignored.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from io import BytesIO
from operator import itemgetter
from typing import Any

from stack.native import internet_checksum, tcp_checksum_ipv4, tcp_checksum_ipv6
from stack.wire.headers import (
    IP_MF,
    IP_OFFSET_MASK,
    IPPROTO_TCP,
    IPV4_CODEC,
    IPV4_FIELDS,
    IPV4_MIN_HEADER,
    IPV4_VERSION,
    IPV6_CODEC,
    IPV6_FIELDS,
    IPV6_HEADER_SIZE,
    IPV6_VERSION,
    OPT_EOL,
    OPT_MSS,
    OPT_NOP,
    OPT_SACK,
    OPT_SACK_PERMITTED,
    OPT_TIMESTAMP,
    OPT_WSCALE,
    OPTION_CODEC,
    OPTION_CODECS,
    PARSE_CONTEXT,
    PLAIN6_CODEC,
    PLAIN6_LAYOUT_SIZE,
    PLAIN_LAYOUT,
    PLAIN_LAYOUT_SIZE,
    SYN_LAYOUT,
    SYN_LAYOUT_SIZE,
    SYN_SHAPE,
    SYN_SHAPE_AT,
    SYN_VALUES_AT,
    TCP_CODEC,
    TCP_FIELDS,
    TCP_MIN_HEADER,
    TS6_CODEC,
    TS6_LAYOUT_SIZE,
    TS_LAYOUT,
    TS_LAYOUT_SIZE,
    TS_OPTION_PREFIX,
)
from stack.wire.ipv6 import walk_extension_headers
from stack.wire.reasons import MalformedPacket, Reason
from stack.wire.segment import Segment, TcpOptions

# The hot layouts are read with their FlatSequence's own struct (derived from the construct
# fields, proven equal to them in tests/wire): one C call, no stream, no generated function.
_unpack_plain = PLAIN_LAYOUT.packer.unpack_from
_unpack_ts = TS_LAYOUT.packer.unpack_from
_unpack_syn = SYN_LAYOUT.packer.unpack_from
_syn_shape = itemgetter(*SYN_SHAPE_AT)
_syn_values = itemgetter(*SYN_VALUES_AT)
_parse_option = OPTION_CODEC.parse_stream
_parse_plain6 = PLAIN6_CODEC.parse_stream
_parse_ts6 = TS6_CODEC.parse_stream
_OPTION_PARSERS = {key: codec.parse_stream for key, codec in OPTION_CODECS.items()}

# Offsets inside the 40-octet IPv4 (no options) + TCP header block.
_DOFF_AT = IPV4_MIN_HEADER + 12  # TCP Data Offset octet
_TS_PREFIX_END = PLAIN_LAYOUT_SIZE + len(TS_OPTION_PREFIX)
# The same behind a 40-octet IPv6 header.
_DOFF6_AT = IPV6_HEADER_SIZE + 12
_TS6_PREFIX_END = PLAIN6_LAYOUT_SIZE + len(TS_OPTION_PREFIX)
_NEXT_HEADER_AT = 6
# Where TCP_HEADER's fields start and end in a list of IPv4 (IPv6) fields followed by them.
_TCP_AT = len(IPV4_FIELDS)
_TCP_END = _TCP_AT + len(TCP_FIELDS)
_TCP6_AT = len(IPV6_FIELDS)
_TCP6_END = _TCP6_AT + len(TCP_FIELDS)

# Placeholder TCP fields for a buffer that ends inside the TCP header. Never read: such a datagram
# always fails the Total Length checks (7, 8) before any TCP field is used.
_NO_TCP_HEADER = [0] * 9

# A TUN device sees a handful of addresses; caching inet_ntoa saves ~0.3 µs per packet. Bounded so
# that a flood of spoofed sources cannot grow it without limit.
_ADDR_CACHE: dict[bytes, str] = {}
_ADDR_CACHE_MAX = 1024


def _addr(raw: bytes) -> str:
    text = _ADDR_CACHE.get(raw)
    if text is None:
        if len(_ADDR_CACHE) >= _ADDR_CACHE_MAX:
            _ADDR_CACHE.clear()
        # Canonical text for either family: dotted quad, or RFC 5952's compressed IPv6 form. The
        # raw lengths (4, 16) differ, so both families share the cache without colliding.
        text = _ADDR_CACHE[raw] = socket.inet_ntoa(raw) if len(raw) == 4 else socket.inet_ntop(socket.AF_INET6, raw)
    return text


def not_tcp(version: int, protocol: int, data: bytes, header_end: int) -> Segment:
    """A datagram of either family whose upper layer is not TCP: `protocol` (IPv4 Protocol, or the
    last Next Header of the IPv6 chain) starts at `header_end`. The one place for other protocols
    (ICMP, ICMPv6) to be handed on; until then it is dropped and counted as not_tcp.
    For IPv4 this runs before Total Length is checked (the order above)."""
    raise MalformedPacket(Reason.NOT_TCP, f"IPv{version} protocol {protocol}")


def parse_packet(buf: bytes | bytearray | memoryview, *, verify_checksums: bool = True) -> Segment:
    """Parse one IPv4 or IPv6 datagram carrying TCP. Raises only `MalformedPacket`."""
    data = buf if type(buf) is bytes else bytes(buf)
    n = len(data)
    if n < IPV4_MIN_HEADER:
        if n and data[0] >> 4 == IPV6_VERSION:
            return _parse_ipv6(data, n, verify_checksums)  # reports it truncated, as an IPv6 header
        raise MalformedPacket(Reason.TRUNCATED, f"{n} octets, an IPv4 header needs {IPV4_MIN_HEADER}")
    version_ihl = data[0]
    if version_ihl >> 4 != IPV4_VERSION:
        if version_ihl >> 4 == IPV6_VERSION:
            return _parse_ipv6(data, n, verify_checksums)
        raise MalformedPacket(Reason.NOT_IPV4, f"IP version {version_ihl >> 4}")
    ihl = (version_ihl & 0x0F) << 2  # RFC 791: IHL counts 32-bit words
    if ihl < IPV4_MIN_HEADER:
        raise MalformedPacket(Reason.BAD_IHL, f"IHL {ihl >> 2} words, minimum is 5")
    if n < ihl:
        raise MalformedPacket(Reason.TRUNCATED, f"{n} octets, IHL says the IP header is {ihl}")

    # One struct call for both fixed headers (and the option area when it is the timestamp option
    # alone, or the SYN options in Linux's order); IP options or other TCP options take the
    # general path.
    options: TcpOptions | None = None
    fields: Any
    if ihl == IPV4_MIN_HEADER and n >= PLAIN_LAYOUT_SIZE:
        doff_words = data[_DOFF_AT] >> 4
        if doff_words == 8 and n >= TS_LAYOUT_SIZE and data[PLAIN_LAYOUT_SIZE:_TS_PREFIX_END] == TS_OPTION_PREFIX:
            fields = _unpack_ts(data)
            options = TcpOptions(None, None, False, (), (fields[20], fields[21]))
        elif doff_words == 10 and n >= SYN_LAYOUT_SIZE:
            fields = _unpack_syn(data)
            if _syn_shape(fields) == SYN_SHAPE:
                mss, tsval, tsecr, wscale = _syn_values(fields)
                options = TcpOptions(mss, wscale, True, (), (tsval, tsecr))
        else:
            fields = _unpack_plain(data)
    else:
        fields = IPV4_CODEC.parse(data)
        fields += TCP_CODEC.parse(data, ihl) if n >= ihl + TCP_MIN_HEADER else _NO_TCP_HEADER

    # Positions are IPV4_HEADER's fields then TCP_HEADER's (tests/wire checks the order).
    (
        _version_ihl,
        _tos,
        total_length,
        _identification,
        flags_fragment,
        _ttl,
        protocol,
        ip_checksum,
        src4,
        dst4,
    ) = fields[:_TCP_AT]
    if verify_checksums and internet_checksum(data[:ihl]) != 0:
        raise MalformedPacket(Reason.BAD_IP_CHECKSUM, f"IP header checksum {ip_checksum:#06x} does not verify")
    if flags_fragment & (IP_MF | IP_OFFSET_MASK):
        raise MalformedPacket(
            Reason.FRAGMENT, f"MF={flags_fragment >> 13 & 1} offset={(flags_fragment & IP_OFFSET_MASK) * 8}"
        )
    if protocol != IPPROTO_TCP:
        return not_tcp(IPV4_VERSION, protocol, data, ihl)
    if total_length > n or total_length < ihl:
        raise MalformedPacket(Reason.BAD_TOTAL_LENGTH, f"total length {total_length}, buffer {n}, IP header {ihl}")
    return _tcp_segment(data, ihl, total_length, fields[_TCP_AT:_TCP_END], src4, dst4, tcp_checksum_ipv4,
                        verify_checksums, options)


def _parse_ipv6(data: bytes, n: int, verify_checksums: bool) -> Segment:
    """The IPv6 half of `parse_packet` (RFC 8200; the order of checks is in stack/wire/ipv6.py).

    Like IPv4, one compiled construct call reads the fixed IPv6 and TCP headers (and a lone
    timestamp option) when no extension header sits between them -- what every IPv6 TCP segment
    of a plain connection looks like."""
    if n < IPV6_HEADER_SIZE:
        raise MalformedPacket(Reason.TRUNCATED, f"{n} octets, an IPv6 header needs {IPV6_HEADER_SIZE}")
    options: TcpOptions | None = None
    fields: list[Any]
    hot = data[_NEXT_HEADER_AT] == IPPROTO_TCP and n >= PLAIN6_LAYOUT_SIZE
    if not hot:
        fields = IPV6_CODEC.parse(data)
    elif (
        data[_DOFF6_AT] >> 4 == 8
        and n >= TS6_LAYOUT_SIZE
        and data[PLAIN6_LAYOUT_SIZE:_TS6_PREFIX_END] == TS_OPTION_PREFIX
    ):
        fields = _parse_ts6(BytesIO(data), PARSE_CONTEXT)
        options = TcpOptions(timestamp=(fields[16], fields[17]))
    else:
        fields = _parse_plain6(BytesIO(data), PARSE_CONTEXT)
    payload_length = fields[1]
    end = IPV6_HEADER_SIZE + payload_length
    if end > n:
        raise MalformedPacket(
            Reason.BAD_PAYLOAD_LENGTH, f"payload length {payload_length}, buffer {n} with the 40-octet header"
        )
    if hot:
        start = IPV6_HEADER_SIZE
    else:
        protocol, start = walk_extension_headers(data, fields[2], end)
        if protocol != IPPROTO_TCP:
            return not_tcp(IPV6_VERSION, protocol, data, start)
        fields += TCP_CODEC.parse(data, start) if end >= start + TCP_MIN_HEADER else _NO_TCP_HEADER

    # Positions are IPV6_HEADER's fields then TCP_HEADER's (tests/wire checks the order).
    _version_class_flow, _payload_length, _next_header, _hop_limit, src6, dst6 = fields[:_TCP6_AT]
    return _tcp_segment(data, start, end, fields[_TCP6_AT:_TCP6_END], src6, dst6, tcp_checksum_ipv6,
                        verify_checksums, options)


def _tcp_segment(data: bytes, start: int, end: int, tcp: list[Any], src: bytes, dst: bytes,
                 checksum: Callable[[bytes, bytes, bytes], int], verify_checksums: bool,
                 options: TcpOptions | None) -> Segment:
    """The TCP checks (8-11 of the order above) and the Segment, the same for both families.

    The TCP header starts at `start` (past the IP header and any extension headers) and the segment
    ends at `end` (Total Length, or past IPv6's Payload Length); `tcp` is TCP_HEADER's fields;
    `checksum` is the family's pseudo-header sum over the raw addresses `src` and `dst`; `options`
    are those a hot layout has already read, or None to decode the option area here."""
    src_port, dst_port, seq, ack, data_offset, flags, window, tcp_checksum, urgent = tcp
    tcp_length = end - start
    if tcp_length < TCP_MIN_HEADER:
        raise MalformedPacket(Reason.TCP_TRUNCATED, f"{tcp_length} octets left for the TCP header")
    doff = (data_offset >> 4) << 2  # RFC 9293 §3.1: Data Offset counts 32-bit words
    if doff < TCP_MIN_HEADER or doff > tcp_length:
        raise MalformedPacket(Reason.BAD_DATA_OFFSET, f"data offset {doff} octets, segment {tcp_length}")
    if verify_checksums and checksum(src, dst, data[start:end]) != 0:
        raise MalformedPacket(Reason.BAD_TCP_CHECKSUM, f"TCP checksum {tcp_checksum:#06x} does not verify")

    if options is not None:
        pass
    elif doff > TCP_MIN_HEADER:
        options = parse_tcp_options(data[start + TCP_MIN_HEADER : start + doff])
    else:
        options = TcpOptions()
    return Segment(
        _ADDR_CACHE.get(src) or _addr(src),
        _ADDR_CACHE.get(dst) or _addr(dst),
        src_port,
        dst_port,
        seq,
        ack,
        flags,
        window,
        urgent,
        options,
        data[start + doff : end],
    )


def parse_tcp_options(raw: bytes) -> TcpOptions:
    """Decode a TCP option area (RFC 9293 §3.2). Raises `MalformedPacket(BAD_OPTION_LENGTH)`.

    The loop frames options (kind, length) and rejects bad lengths; every option is then decoded
    by construct: an interpreted (kind, length) by its compiled `OPTION_LAYOUTS` entry, anything
    else by the compiled `TCP_OPTION` (kept verbatim as unknown). A later duplicate of an option
    replaces the earlier one, as in Linux's tcp_parse_options().
    """
    opts = TcpOptions()
    end = len(raw)
    stream = BytesIO(raw)
    unknown: list[tuple[int, bytes]] = []
    pos = 0
    while pos < end:
        kind = raw[pos]
        if kind == OPT_EOL:
            break  # RFC 9293 §3.2: what follows End of Option List is padding
        if kind == OPT_NOP:
            pos += 1
            continue
        if pos + 1 >= end:
            raise MalformedPacket(Reason.BAD_OPTION_LENGTH, f"option kind {kind} at {pos} has no length octet")
        length = raw[pos + 1]
        if length < 2:
            raise MalformedPacket(Reason.BAD_OPTION_LENGTH, f"option kind {kind} at {pos} has length {length}")
        if pos + length > end:
            raise MalformedPacket(
                Reason.BAD_OPTION_LENGTH, f"option kind {kind} at {pos} length {length} overruns {end}"
            )
        stream.seek(pos)
        parse = _OPTION_PARSERS.get(kind << 8 | length)
        pos += length
        if parse is None:
            # Unknown kind, or a known kind at a length its RFC does not define: kept verbatim.
            unknown.append((kind, _parse_option(stream, PARSE_CONTEXT)["value"]))
            continue
        fields = parse(stream, PARSE_CONTEXT)  # [kind, length, value leaves...]
        if kind == OPT_TIMESTAMP:
            opts.timestamp = (fields[2], fields[3])
        elif kind == OPT_SACK:
            opts.sack_blocks = tuple(zip(fields[2::2], fields[3::2], strict=True))
        elif kind == OPT_MSS:
            opts.mss = fields[2]
        elif kind == OPT_WSCALE:
            opts.wscale = fields[2]
        elif kind == OPT_SACK_PERMITTED:
            opts.sack_permitted = True
    if unknown:
        opts.unknown = tuple(unknown)
    return opts
