"""Wire format: IPv4/IPv6 + TCP bytes <-> `Segment` (construct definitions in `stack.wire.headers`)."""

from stack.wire.address import canonical_address, endpoint, is_ipv6
from stack.wire.build import build_packet, build_tcp_options
from stack.wire.parse import parse_packet, parse_tcp_options
from stack.wire.reasons import MalformedPacket, Reason
from stack.wire.segment import (
    ACK,
    CWR,
    ECE,
    FIN,
    NO_OPTIONS,
    PSH,
    RST,
    SYN,
    URG,
    Flags,
    Segment,
    TcpOptions,
    flags_text,
    parse_flags_text,
)

__all__ = [
    "ACK",
    "CWR",
    "ECE",
    "FIN",
    "NO_OPTIONS",
    "PSH",
    "RST",
    "SYN",
    "URG",
    "Flags",
    "MalformedPacket",
    "Reason",
    "Segment",
    "TcpOptions",
    "build_packet",
    "build_tcp_options",
    "canonical_address",
    "endpoint",
    "flags_text",
    "is_ipv6",
    "parse_flags_text",
    "parse_packet",
    "parse_tcp_options",
]
