"""IPv6 (RFC 8200): from the fixed header over the extension-header chain to the TCP segment.

`parse_packet` (stack/wire/parse.py) dispatches here on the version nibble. The checks, in order,
each raising `MalformedPacket` with its own reason:

1. ``truncated``            buffer shorter than the 40-octet fixed header (RFC 8200 §3)
2. ``bad_payload_length``   40 + Payload Length is more than the buffer holds
3. the extension-header chain, header by header (RFC 8200 §4):
   ``hop_by_hop_not_first`` Hop-by-Hop Options anywhere but right after the fixed header (§4.3)
   ``ext_header_loop``      a header repeated beyond what §4.1 allows (Destination Options twice,
                            the others once): a chain that circles
   ``ext_header_overrun``   a header, by its own length, running past the payload
   ``fragment``             a Fragment header with M set or a non-zero offset (§4.5): dropped and
                            counted as IPv4 fragments are. An atomic fragment (offset 0, M clear)
                            is no fragment: RFC 6946 §4 says to process it on its own, so it is
                            skipped like any other extension header.
4. ``not_tcp``              the chain ends in anything but TCP (ICMPv6, UDP, No Next Header, AH, ...)
5. then as for IPv4: ``tcp_truncated``, ``bad_data_offset``, ``bad_tcp_checksum`` (over the
   RFC 8200 §8.1 pseudo-header), ``bad_option_length``.

IPv6 has no header checksum; the TCP checksum is the only integrity check. Octets past the Payload
Length are ignored, like padding past an IPv4 Total Length.
"""

from __future__ import annotations

from stack.wire.headers import (
    IPV6_DEST_OPTIONS,
    IPV6_EXT_CODEC,
    IPV6_EXT_MAX_COUNT,
    IPV6_EXT_UNIT,
    IPV6_FRAG_M,
    IPV6_FRAG_OFFSET_MASK,
    IPV6_FRAGMENT,
    IPV6_FRAGMENT_CODEC,
    IPV6_FRAGMENT_SIZE,
    IPV6_HEADER_SIZE,
    IPV6_HOP_BY_HOP,
    IPV6_ROUTING,
)
from stack.wire.reasons import MalformedPacket, Reason

_parse_ext = IPV6_EXT_CODEC.parse
_parse_fragment = IPV6_FRAGMENT_CODEC.parse

# The headers skipped by their own length field; the fragment header is handled on its own.
_SKIPPED_BY_LENGTH = frozenset((IPV6_HOP_BY_HOP, IPV6_ROUTING, IPV6_DEST_OPTIONS))


def walk_extension_headers(data: bytes, next_header: int, end: int) -> tuple[int, int]:
    """Skip the extension headers that start at octet 40 and end by `end` (40 + Payload Length).

    Returns (upper-layer protocol, its offset). Raises `MalformedPacket` (hop_by_hop_not_first,
    ext_header_loop, ext_header_overrun, fragment). The walk always ends: every header moves at
    least 8 octets on, and the counts bound the chain to five headers anyway.
    """
    pos = IPV6_HEADER_SIZE
    seen: dict[int, int] = {}
    while next_header in _SKIPPED_BY_LENGTH or next_header == IPV6_FRAGMENT:
        if next_header == IPV6_HOP_BY_HOP and pos != IPV6_HEADER_SIZE:
            raise MalformedPacket(Reason.HOP_BY_HOP_NOT_FIRST, f"Hop-by-Hop Options header at octet {pos}")
        count = seen[next_header] = seen.get(next_header, 0) + 1
        if count > IPV6_EXT_MAX_COUNT[next_header]:
            raise MalformedPacket(Reason.EXT_HEADER_LOOP, f"extension header {next_header} seen {count} times")
        if next_header == IPV6_FRAGMENT:
            if pos + IPV6_FRAGMENT_SIZE > end:
                raise MalformedPacket(
                    Reason.EXT_HEADER_OVERRUN, f"Fragment header at octet {pos} overruns the payload end {end}"
                )
            following, _reserved, offset_flags, ident = _parse_fragment(data, pos)
            if offset_flags & (IPV6_FRAG_OFFSET_MASK | IPV6_FRAG_M):
                raise MalformedPacket(
                    Reason.FRAGMENT,
                    f"M={offset_flags & IPV6_FRAG_M} offset={offset_flags & IPV6_FRAG_OFFSET_MASK}"
                    f" id={ident:#x}",
                )
            next_header = following
            pos += IPV6_FRAGMENT_SIZE
            continue
        if pos + 2 > end:
            raise MalformedPacket(
                Reason.EXT_HEADER_OVERRUN, f"extension header {next_header} at octet {pos}: no length octet"
            )
        following, hdr_ext_len = _parse_ext(data, pos)
        size = (hdr_ext_len + 1) * IPV6_EXT_UNIT
        if pos + size > end:
            raise MalformedPacket(
                Reason.EXT_HEADER_OVERRUN,
                f"extension header {next_header} at octet {pos} of {size} octets overruns the payload end {end}",
            )
        next_header = following
        pos += size
    return next_header, pos
