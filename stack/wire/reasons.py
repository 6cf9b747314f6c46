"""Why a packet read from TUN was dropped by the wire parser.

Every way a buffer can fail to be one well-formed IPv4 or IPv6 datagram carrying one TCP segment
maps to exactly one `Reason`. The values are stable snake_case strings so they can be used directly as
counter names (``wire_drop_<reason>``) and grepped in traces; never rename one, add a new one.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """One distinct drop reason per check: IPv4's in the order `parse_packet` applies them, then the
    ones only IPv6 has (stack/wire/ipv6.py lists the IPv6 order)."""

    # RFC 791 §3.1: the fixed IPv4 header is 20 octets, IHL more if IP options are present;
    # RFC 8200 §3: the fixed IPv6 header is 40 octets.
    TRUNCATED = "truncated"
    # The Version nibble is neither 4 (RFC 791 §3.1) nor 6 (RFC 8200 §3). The name is older than
    # IPv6 support and stays, as every counter name does.
    NOT_IPV4 = "not_ipv4"
    # RFC 791 §3.1: IHL counts 32-bit words and "the minimum value for a correct header is 5".
    BAD_IHL = "bad_ihl"
    # RFC 791 §3.1 Header Checksum covers the IP header only; checked before trusting its fields.
    BAD_IP_CHECKSUM = "bad_ip_checksum"
    # RFC 791 §3.2: MF set or a non-zero fragment offset; or an IPv6 Fragment header with M set or
    # a non-zero offset (RFC 8200 §4.5). This stack does not reassemble.
    FRAGMENT = "fragment"
    # RFC 791 §3.1 Protocol field, or the IPv6 header chain's last Next Header (RFC 8200 §4), is
    # not 6 (TCP, RFC 9293 §3.1).
    NOT_TCP = "not_tcp"
    # RFC 791 §3.1 Total Length: larger than what was read, or smaller than the IP header itself.
    BAD_TOTAL_LENGTH = "bad_total_length"
    # The datagram ends before the 20-octet fixed TCP header does (RFC 9293 §3.1).
    TCP_TRUNCATED = "tcp_truncated"
    # RFC 9293 §3.1 Data Offset: below 5 words, or pointing past the end of the segment.
    BAD_DATA_OFFSET = "bad_data_offset"
    # RFC 9293 §3.1 Checksum over the pseudo-header, header and payload does not verify.
    BAD_TCP_CHECKSUM = "bad_tcp_checksum"
    # RFC 9293 §3.2: an option length octet of 0 or 1 (it counts kind and length, so >= 2),
    # or an option running past the end of the option area.
    BAD_OPTION_LENGTH = "bad_option_length"
    # RFC 8200 §3 Payload Length: the 40-octet header plus the payload is longer than what was read.
    BAD_PAYLOAD_LENGTH = "bad_payload_length"
    # RFC 8200 §4: an extension header whose length (or the fixed 8 octets of a Fragment header)
    # runs past the end of the payload.
    EXT_HEADER_OVERRUN = "ext_header_overrun"
    # RFC 8200 §4.1: an extension header repeated more often than a chain may hold it (once;
    # Destination Options twice) -- a chain that goes round in circles.
    EXT_HEADER_LOOP = "ext_header_loop"
    # RFC 8200 §4.3: Hop-by-Hop Options may only follow the IPv6 header itself.
    HOP_BY_HOP_NOT_FIRST = "hop_by_hop_not_first"
    # ICMP and ICMPv6 (stack.wire.icmp), checked after the IP header, in this order.
    # RFC 792 / RFC 4443 §2.1: every message starts with type, code, checksum and 4 more octets.
    ICMP_TRUNCATED = "icmp_truncated"
    # RFC 792 (internet checksum) / RFC 4443 §2.3 (with the IPv6 pseudo-header) does not verify.
    BAD_ICMP_CHECKSUM = "bad_icmp_checksum"
    # An error quoting less than an IP header and 8 octets of what it carried (RFC 1122 §3.2.2).
    ICMP_QUOTE_TRUNCATED = "icmp_quote_truncated"
    # The quote does not start with an IP header of the message's own version (version, IHL).
    ICMP_BAD_QUOTE = "icmp_bad_quote"


class MalformedPacket(ValueError):
    """The only exception `parse_packet` raises: the packet is dropped and `reason` counted."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[type[MalformedPacket], tuple[Reason, str]]:
        # Keep the two-argument constructor working through pickle (e.g. multiprocessing).
        return (MalformedPacket, (self.reason, self.detail))


# The reasons of stack.wire.icmp: counted as ICMP input errors, not as TCP ones.
ICMP_REASONS = frozenset({Reason.ICMP_TRUNCATED, Reason.BAD_ICMP_CHECKSUM, Reason.ICMP_QUOTE_TRUNCATED,
                          Reason.ICMP_BAD_QUOTE})
