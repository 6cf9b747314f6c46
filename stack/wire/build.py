"""`Segment` -> complete IPv4 or IPv6 packet with every checksum filled in.

The segment's addresses pick the family: two IPv6 addresses make an IPv6 packet (RFC 8200 §3, no
extension headers, the TCP checksum over the §8.1 pseudo-header), two IPv4 addresses an IPv4 one.

TCP options are written in one canonical order, the one Linux's tcp_options_write() uses, so
every option starts where a 32-bit load would want it (RFC 9293 §3.2 leaves the order free)::

    MSS                        02 04 mm mm                  RFC 9293 §3.2
    SACK-permitted + TS        04 02 08 0a TSval TSecr      RFC 2018 §2, RFC 7323 §3.2
      or NOP NOP + TS          01 01 08 0a TSval TSecr      (timestamps without SACK-permitted)
    NOP NOP SACK-permitted     01 01 04 02                  (SACK-permitted without timestamps)
    NOP + window scale         01 03 03 ss                  RFC 7323 §2.2
    NOP NOP + SACK             01 01 05 2+8n blocks...      RFC 2018 §3
    unknown options            kind len data                verbatim, in the order given
    EOL + zero padding         00 ...                       to a multiple of 4 (RFC 9293 §3.1)

The option area is at most 40 octets (Data Offset is 4 bits of words). SACK blocks that do not
fit are dropped from the end -- RFC 2018 §4 puts the most recent block first, so the newest
information survives: at most 3 blocks next to timestamps, 4 without. If the other options
alone do not fit, `build_packet` raises ValueError.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from io import BytesIO

from construct import ConstructError

from stack.native import (
    internet_checksum,
    ones_complement_sum,
    tcp_checksum_ipv4,
    tcp_checksum_ipv4_bytes,
    tcp_checksum_ipv6,
)
from stack.wire.headers import (
    BUILD_CONTEXT,
    IP_DF,
    IP_MAX_TOTAL_LENGTH,
    IPPROTO_TCP,
    IPV4_MIN_HEADER,
    IPV4_VERSION,
    IPV6_HEADER_SIZE,
    IPV6_VERSION,
    IPV6_VERSION_SHIFT,
    OPT_EOL,
    OPT_MSS,
    OPT_NOP,
    OPT_SACK,
    OPT_SACK_PERMITTED,
    OPT_TIMESTAMP,
    OPT_WSCALE,
    OPTION_CODEC,
    OPTION_CODECS,
    PLAIN6_CODEC,
    PLAIN_CODEC,
    PLAIN_LAYOUT,
    PLAIN_LAYOUT_SIZE,
    SACK_MAX_BLOCKS,
    SYN_LAYOUT,
    SYN_OPTION_SIZE,
    TCP_LAYOUT,
    TCP_MAX_OPTION_SPACE,
    TCP_MIN_HEADER,
    TCP_SYN_LAYOUT,
    TCP_TS_LAYOUT,
    TS6_CODEC,
    TS_LAYOUT,
    TS_OPTION_PREFIX,
    TS_OPTION_SIZE,
    option_key,
)
from stack.wire.segment import Segment, TcpOptions

_build_plain = PLAIN_CODEC.build_into
_build_option = OPTION_CODEC.build_into
_build_plain6 = PLAIN6_CODEC.build_into
_build_ts6 = TS6_CODEC.build_into

_VERSION_IHL = IPV4_VERSION << 4 | IPV4_MIN_HEADER >> 2  # 0x45: no IP options are ever sent
_IP_CHECKSUM_AT = 10
_PLAIN_DOFF = (PLAIN_LAYOUT_SIZE - IPV4_MIN_HEADER) >> 2 << 4  # 5 words, in the high nibble
_TS_DOFF = (PLAIN_LAYOUT_SIZE - IPV4_MIN_HEADER + TS_OPTION_SIZE) >> 2 << 4
_MAX_PAYLOAD = IP_MAX_TOTAL_LENGTH - PLAIN_LAYOUT_SIZE
_VERSION_CLASS_FLOW = IPV6_VERSION << IPV6_VERSION_SHIFT  # traffic class 0, flow label 0
_MAX_PAYLOAD_LENGTH = 0xFFFF  # RFC 8200 §3: 16 bits; no jumbograms (RFC 2675) are sent

# Interpreted options are written by their compiled `OPTION_LAYOUTS` FlatSequence (proven equal
# to `TCP_OPTION` in tests/wire); option-free constants are built by construct once, here.
_OPTION_BUILDERS = {key: codec.build_into for key, codec in OPTION_CODECS.items()}
_build_mss = _OPTION_BUILDERS[option_key(OPT_MSS, 4)]
_build_wscale = _OPTION_BUILDERS[option_key(OPT_WSCALE, 3)]
_build_timestamp = _OPTION_BUILDERS[option_key(OPT_TIMESTAMP, 10)]
_NOP = OPTION_CODECS[option_key(OPT_NOP, 1)].build((OPT_NOP,))
_NOP2 = _NOP * 2
_EOL = OPTION_CODECS[option_key(OPT_EOL, 1)].build((OPT_EOL,))
_SACK_PERMITTED = OPTION_CODECS[option_key(OPT_SACK_PERMITTED, 2)].build((OPT_SACK_PERMITTED, 2))

# The hot layouts (no options; timestamps alone; the SYN options in Linux's order) are packed with
# their FlatSequence's own struct, derived from the construct fields (tests/wire proves the bytes
# equal): the TCP part first, with a zero checksum, to checksum it with the payload, then the whole
# header block once with both checksums in place.
_pack_tcp_plain: Callable[..., bytes] = TCP_LAYOUT.packer.pack
_pack_tcp_ts: Callable[..., bytes] = TCP_TS_LAYOUT.packer.pack
_pack_tcp_syn: Callable[..., bytes] = TCP_SYN_LAYOUT.packer.pack
_pack_plain: Callable[..., bytes] = PLAIN_LAYOUT.packer.pack
_pack_ts: Callable[..., bytes] = TS_LAYOUT.packer.pack
_pack_syn: Callable[..., bytes] = SYN_LAYOUT.packer.pack
_SYN_DOFF = (PLAIN_LAYOUT_SIZE - IPV4_MIN_HEADER + SYN_OPTION_SIZE) >> 2 << 4

_ADDR_CACHE: dict[str, bytes] = {}
_ADDR_CACHE_MAX = 1024


def _addr(text: str) -> bytes:
    """4 octets for an IPv4 address, 16 for an IPv6 one (the length says the family)."""
    raw = _ADDR_CACHE.get(text)
    if raw is None:
        try:
            # inet_pton is strict (a dotted quad, unlike inet_aton); a ':' can only be IPv6.
            raw = socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)
        except (OSError, TypeError) as exc:
            raise ValueError(f"not an IP address: {text!r}") from exc
        if len(_ADDR_CACHE) >= _ADDR_CACHE_MAX:
            _ADDR_CACHE.clear()
        _ADDR_CACHE[text] = raw
    return raw


def _encode_options(opts: TcpOptions, stream: BytesIO) -> None:
    write = stream.write
    ctx = BUILD_CONTEXT
    if opts.mss is not None:
        _build_mss((OPT_MSS, 4, opts.mss), stream, ctx)
    timestamp = opts.timestamp
    if timestamp is not None:
        write(_SACK_PERMITTED if opts.sack_permitted else _NOP2)
        _build_timestamp((OPT_TIMESTAMP, 10, timestamp[0], timestamp[1]), stream, ctx)
    elif opts.sack_permitted:
        write(_NOP2 + _SACK_PERMITTED)
    if opts.wscale is not None:
        write(_NOP)
        _build_wscale((OPT_WSCALE, 3, opts.wscale), stream, ctx)
    if opts.sack_blocks:
        unknown = sum(2 + len(data) for _, data in opts.unknown)
        room = TCP_MAX_OPTION_SPACE - stream.tell() - (unknown + 3) // 4 * 4 - 4  # 4: NOP NOP kind len
        blocks = opts.sack_blocks[: max(0, min(SACK_MAX_BLOCKS, room // 8))]
        if blocks:
            length = 2 + 8 * len(blocks)
            write(_NOP2)
            _OPTION_BUILDERS[option_key(OPT_SACK, length)](
                (OPT_SACK, length, *(edge for block in blocks for edge in block)), stream, ctx
            )
    for kind, data in opts.unknown:
        _build_option({"kind": kind, "length": 2 + len(data), "value": data}, stream, ctx)
    write(_EOL * (-stream.tell() % 4))


def build_tcp_options(opts: TcpOptions) -> bytes:
    """Encode `opts` (canonical order, padded to a multiple of 4). Raises ValueError if > 40 octets."""
    stream = BytesIO()
    try:
        _encode_options(opts, stream)
    except (ConstructError, struct.error, TypeError, IndexError) as exc:
        raise ValueError(f"cannot encode TCP options {opts}: {exc}") from exc
    raw = stream.getvalue()
    if len(raw) > TCP_MAX_OPTION_SPACE:
        raise ValueError(f"TCP options need {len(raw)} octets, at most {TCP_MAX_OPTION_SPACE} fit")
    return raw


def build_packet(seg: Segment, *, ttl: int = 64, ident: int = 0, dont_fragment: bool = True) -> bytes:
    """A complete IPv4 + TCP packet for `seg` with both checksums correct; IPv6 + TCP when its
    addresses are IPv6 (`ttl` is then the Hop Limit; IPv6 has no ident or DF). Raises ValueError."""
    opts = seg.options
    payload = seg.payload
    src4 = _ADDR_CACHE.get(seg.src_addr) or _addr(seg.src_addr)
    dst4 = _ADDR_CACHE.get(seg.dst_addr) or _addr(seg.dst_addr)
    if len(src4) != 4 or len(dst4) != 4:
        return _build_ipv6(seg, src4, dst4, ttl)
    if len(payload) > _MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} octets does not fit in one IPv4 datagram")
    timestamp = opts.timestamp
    if opts.sack_blocks or opts.unknown:
        plain = False
    elif opts.mss is None and opts.wscale is None and not opts.sack_permitted:
        plain = True
    else:
        plain = False
        if opts.mss is not None and opts.wscale is not None and opts.sack_permitted and timestamp is not None:
            try:
                return _build_syn(seg, src4, dst4, ttl, ident, dont_fragment)
            except struct.error as exc:
                raise ValueError(f"cannot encode {seg.summary()}: {exc}") from exc
    if plain:
        try:
            return _build_hot(seg, src4, dst4, ttl, ident, dont_fragment)
        except struct.error as exc:
            raise ValueError(f"cannot encode {seg.summary()}: {exc}") from exc
    # Other options (or the SYN's in another order): construct writes them.
    stream = BytesIO()
    try:
        raw_options = build_tcp_options(opts)
        total_length = PLAIN_LAYOUT_SIZE + len(raw_options) + len(payload)
        if total_length > IP_MAX_TOTAL_LENGTH:
            raise ValueError(f"packet of {total_length} octets does not fit in one IPv4 datagram")
        _build_plain(
            (
                _VERSION_IHL,
                0,  # TOS
                total_length,
                ident,
                IP_DF if dont_fragment else 0,
                ttl,
                IPPROTO_TCP,
                0,  # header checksum, patched by _finish
                src4,
                dst4,
                seg.src_port,
                seg.dst_port,
                seg.seq,
                seg.ack,
                (TCP_MIN_HEADER + len(raw_options)) >> 2 << 4,
                seg.flags,
                seg.window,
                0,  # TCP checksum, patched by _finish
                seg.urgent,
            ),
            stream,
            BUILD_CONTEXT,
        )
    except (ConstructError, struct.error, TypeError, IndexError) as exc:
        raise ValueError(f"cannot encode {seg.summary()}: {exc}") from exc
    return _finish(stream, raw_options, payload, IPV4_MIN_HEADER, tcp_checksum_ipv4, src4, dst4)


def _finish(stream: BytesIO, raw_options: bytes, payload: bytes, ip_header: int,
            tcp_checksum: Callable[[bytes, bytes, memoryview], int], src: bytes, dst: bytes) -> bytes:
    """Append the options and the payload to the headers in `stream`, then patch the checksums
    into the finished packet: they were built as 0, as RFC 791 §3.1 and RFC 9293 §3.1 compute
    them with the field zeroed (IPv6 has no header checksum, RFC 8200 §3)."""
    if raw_options:
        stream.write(raw_options)
    stream.write(payload)
    packet = stream.getvalue()
    if ip_header == IPV4_MIN_HEADER:
        stream.seek(_IP_CHECKSUM_AT)
        stream.write(internet_checksum(packet[:IPV4_MIN_HEADER]).to_bytes(2, "big"))
    stream.seek(ip_header + 16)
    stream.write(tcp_checksum(src, dst, memoryview(packet)[ip_header:]).to_bytes(2, "big"))
    return stream.getvalue()


def _build_ipv6(seg: Segment, src6: bytes, dst6: bytes, hop_limit: int) -> bytes:
    """The IPv6 half of `build_packet`: the same TCP header and options behind a 40-octet IPv6
    header, built by the IPv6 twins of the two hot layouts."""
    if len(src6) != len(dst6):
        raise ValueError(f"addresses of two families: {seg.src_addr} > {seg.dst_addr}")
    opts = seg.options
    payload = seg.payload
    timestamp = opts.timestamp
    plain = (
        opts.mss is None
        and opts.wscale is None
        and not opts.sack_permitted
        and not opts.sack_blocks
        and not opts.unknown
    )
    stream = BytesIO()
    try:
        if plain:
            raw_options = b""
            tcp_header = TCP_MIN_HEADER + (TS_OPTION_SIZE if timestamp is not None else 0)
        else:
            raw_options = build_tcp_options(opts)
            tcp_header = TCP_MIN_HEADER + len(raw_options)
        payload_length = tcp_header + len(payload)
        if payload_length > _MAX_PAYLOAD_LENGTH:
            raise ValueError(f"TCP segment of {payload_length} octets does not fit in one IPv6 packet")
        head = (
            _VERSION_CLASS_FLOW,
            payload_length,
            IPPROTO_TCP,  # Next Header: no extension headers are ever sent
            hop_limit,
            src6,
            dst6,
            seg.src_port,
            seg.dst_port,
            seg.seq,
            seg.ack,
            tcp_header >> 2 << 4,
            seg.flags,
            seg.window,
            0,  # TCP checksum, patched by _finish
            seg.urgent,
        )
        if plain and timestamp is not None:
            _build_ts6((*head, None, timestamp[0], timestamp[1]), stream, BUILD_CONTEXT)
        else:
            _build_plain6(head, stream, BUILD_CONTEXT)
    except (ConstructError, struct.error, TypeError, IndexError) as exc:
        raise ValueError(f"cannot encode {seg.summary()}: {exc}") from exc
    return _finish(stream, raw_options, payload, IPV6_HEADER_SIZE, tcp_checksum_ipv6, src6, dst6)


def _build_hot(seg: Segment, src4: bytes, dst4: bytes, ttl: int, ident: int, dont_fragment: bool) -> bytes:
    """No options, or timestamps alone: two struct packs and one checksum call over the segment."""
    payload = seg.payload
    frag = IP_DF if dont_fragment else 0
    timestamp = seg.options.timestamp
    if timestamp is None:
        tcp = _pack_tcp_plain(seg.src_port, seg.dst_port, seg.seq, seg.ack, _PLAIN_DOFF, seg.flags, seg.window, 0,
                              seg.urgent)
    else:
        tcp = _pack_tcp_ts(seg.src_port, seg.dst_port, seg.seq, seg.ack, _TS_DOFF, seg.flags, seg.window, 0,
                           seg.urgent, TS_OPTION_PREFIX, timestamp[0], timestamp[1])
    segment = tcp + payload if payload else tcp  # bytes: a bytearray payload is copied here
    tcp_sum = tcp_checksum_ipv4_bytes(src4, dst4, segment)
    total = IPV4_MIN_HEADER + len(segment)
    ip_sum = _ip_checksum(total, ident, frag, ttl, src4, dst4)
    if timestamp is None:
        head = _pack_plain(_VERSION_IHL, 0, total, ident, frag, ttl, IPPROTO_TCP, ip_sum, src4, dst4, seg.src_port,
                           seg.dst_port, seg.seq, seg.ack, _PLAIN_DOFF, seg.flags, seg.window, tcp_sum, seg.urgent)
    else:
        head = _pack_ts(_VERSION_IHL, 0, total, ident, frag, ttl, IPPROTO_TCP, ip_sum, src4, dst4, seg.src_port,
                        seg.dst_port, seg.seq, seg.ack, _TS_DOFF, seg.flags, seg.window, tcp_sum, seg.urgent,
                        TS_OPTION_PREFIX, timestamp[0], timestamp[1])
    return head + payload if payload else head


def _build_syn(seg: Segment, src4: bytes, dst4: bytes, ttl: int, ident: int, dont_fragment: bool) -> bytes:
    """MSS, SACK-permitted, timestamps and window scale, in the canonical order (a SYN's options)."""
    payload = seg.payload
    frag = IP_DF if dont_fragment else 0
    opts = seg.options
    timestamp = opts.timestamp
    assert timestamp is not None
    options = (OPT_MSS, 4, opts.mss, OPT_SACK_PERMITTED, 2, OPT_TIMESTAMP, 10, timestamp[0], timestamp[1], OPT_NOP,
               OPT_WSCALE, 3, opts.wscale)
    tcp = _pack_tcp_syn(seg.src_port, seg.dst_port, seg.seq, seg.ack, _SYN_DOFF, seg.flags, seg.window, 0,
                        seg.urgent, *options)
    segment = tcp + payload if payload else tcp
    tcp_sum = tcp_checksum_ipv4_bytes(src4, dst4, segment)
    total = IPV4_MIN_HEADER + len(segment)
    head = _pack_syn(_VERSION_IHL, 0, total, ident, frag, ttl, IPPROTO_TCP,
                     _ip_checksum(total, ident, frag, ttl, src4, dst4), src4, dst4, seg.src_port, seg.dst_port,
                     seg.seq, seg.ack, _SYN_DOFF, seg.flags, seg.window, tcp_sum, seg.urgent, *options)
    return head + payload if payload else head


def build_head_partial(seg: Segment, *, ttl: int = 64, ident: int = 0, dont_fragment: bool = True) -> bytes:
    """The IP and TCP headers of `seg` without its payload, for a link that completes the segment
    itself (TSO through the virtio-net header, stack.link.vnet): the IPv4 header checksum is
    complete, the TCP checksum field holds only the pseudo-header sum over the whole segment
    (Linux's CHECKSUM_PARTIAL; the link adds the TCP header and the payload into it). Sent as
    head + payload, this is `build_packet(seg)` with its TCP checksum left to the link (tests/wire
    proves it). No payload copy, no checksum pass over it: what a 64 KB segment costs here."""
    payload_len = len(seg.payload)
    opts = seg.options
    src4 = _ADDR_CACHE.get(seg.src_addr) or _addr(seg.src_addr)
    dst4 = _ADDR_CACHE.get(seg.dst_addr) or _addr(seg.dst_addr)
    hot = (len(src4) == 4 and len(dst4) == 4 and opts.mss is None and opts.wscale is None
           and not opts.sack_permitted and not opts.sack_blocks and not opts.unknown)
    if not hot or payload_len > _MAX_PAYLOAD:
        # Any other shape (IPv6, other options): the whole packet, cut and patched.
        packet = build_packet(seg, ttl=ttl, ident=ident, dont_fragment=dont_fragment)
        family = 6 if len(src4) == 16 else 4
        head_len = len(packet) - payload_len
        at = (IPV6_HEADER_SIZE if family == 6 else IPV4_MIN_HEADER) + 16
        pseudo = pseudo_header_sum(src4, dst4, len(packet) - at + 16)
        return packet[:at] + pseudo.to_bytes(2, "big") + packet[at + 2 : head_len]
    frag = IP_DF if dont_fragment else 0
    timestamp = opts.timestamp
    tcp_len = (PLAIN_LAYOUT_SIZE - IPV4_MIN_HEADER) + (TS_OPTION_SIZE if timestamp is not None else 0) + payload_len
    total = IPV4_MIN_HEADER + tcp_len
    ip_sum = _ip_checksum(total, ident, frag, ttl, src4, dst4)
    pseudo = pseudo_header_sum(src4, dst4, tcp_len)
    if timestamp is None:
        return _pack_plain(_VERSION_IHL, 0, total, ident, frag, ttl, IPPROTO_TCP, ip_sum, src4, dst4, seg.src_port,
                           seg.dst_port, seg.seq, seg.ack, _PLAIN_DOFF, seg.flags, seg.window, pseudo, seg.urgent)
    return _pack_ts(_VERSION_IHL, 0, total, ident, frag, ttl, IPPROTO_TCP, ip_sum, src4, dst4, seg.src_port,
                    seg.dst_port, seg.seq, seg.ack, _TS_DOFF, seg.flags, seg.window, pseudo, seg.urgent,
                    TS_OPTION_PREFIX, timestamp[0], timestamp[1])


def pseudo_header_sum(src: bytes, dst: bytes, tcp_len: int) -> int:
    """The folded, not inverted, sum of the pseudo-header (RFC 9293 §3.1; RFC 8200 §8.1 for 16-octet
    addresses, whose 32-bit length and next header sum the same way for lengths below 2^16)."""
    return ones_complement_sum(src + dst, IPPROTO_TCP + tcp_len)


_IP_HEADER_SUMS: dict[tuple[bytes, bytes], int] = {}


def _ip_checksum(total: int, ident: int, frag: int, ttl: int, src4: bytes, dst4: bytes) -> int:
    """The header checksum of the IPv4 header the hot paths write (RFC 1071): the addresses' share
    of the sum is kept per pair, the rest is a few 16-bit words (RFC 1624's incremental view)."""
    pair = (src4, dst4)
    base = _IP_HEADER_SUMS.get(pair)
    if base is None:
        if len(_IP_HEADER_SUMS) >= _ADDR_CACHE_MAX:
            _IP_HEADER_SUMS.clear()
        base = _IP_HEADER_SUMS[pair] = ones_complement_sum(src4 + dst4, _VERSION_IHL << 8 | 0)
    total_sum = base + total + ident + frag + (ttl << 8 | IPPROTO_TCP)
    total_sum = (total_sum & 0xFFFF) + (total_sum >> 16)
    total_sum = (total_sum & 0xFFFF) + (total_sum >> 16)
    return ~total_sum & 0xFFFF
