"""Raw IPv4/TCP packets for the drill runner, with TCP options kept in the order a script writes them.

`stack.wire` builds options in its own canonical order and parses them into an unordered record;
packetdrill matches the option list in order (NOPs included), so the runner encodes and walks the
option bytes itself. Headers are still parsed (and checksums verified) by `stack.wire.parse`.
"""

from __future__ import annotations

import socket
import struct

from stack.drill.script import TcpOption
from stack.native import internet_checksum, tcp_checksum_ipv4
from stack.wire.parse import parse_packet
from stack.wire.segment import Segment

KIND_NUMBERS = {"eol": 0, "nop": 1, "mss": 2, "wscale": 3, "sackOK": 4, "sack": 5, "TS": 8}
KIND_NAMES = {number: name for name, number in KIND_NUMBERS.items()}

_IP = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")
_IP_DF = 0x4000


def encode_options(options: tuple[TcpOption, ...]) -> bytes:
    """The option bytes in script order, padded with EOL to a multiple of 4 (RFC 9293 §3.1)."""
    out = bytearray()
    for opt in options:
        kind = KIND_NUMBERS[opt.kind]
        if opt.kind in ("eol", "nop"):
            out.append(kind)
        elif opt.kind == "mss":
            out += struct.pack("!BBH", kind, 4, opt.values[0])
        elif opt.kind == "wscale":
            out += struct.pack("!BBB", kind, 3, opt.values[0])
        elif opt.kind == "sackOK":
            out += bytes((kind, 2))
        elif opt.kind == "TS":
            out += struct.pack("!BBII", kind, 10, opt.values[0], opt.values[1])
        else:  # sack
            out += bytes((kind, 2 + 4 * len(opt.values))) + b"".join(struct.pack("!I", v) for v in opt.values)
    out += bytes(-len(out) % 4)
    if len(out) > 40:
        raise ValueError(f"TCP options need {len(out)} octets, at most 40 fit")
    return bytes(out)


def decode_options(raw: bytes) -> list[TcpOption]:
    """The options of a packet in wire order; an EOL ends the list (padding after it is skipped).
    Kinds this runner does not name come back as `kind<N>`."""
    found: list[TcpOption] = []
    pos = 0
    while pos < len(raw):
        kind = raw[pos]
        if kind in (0, 1):
            found.append(TcpOption(KIND_NAMES[kind]))
            pos += 1
            if kind == 0:
                break
            continue
        length = raw[pos + 1] if pos + 1 < len(raw) else 0
        if length < 2 or pos + length > len(raw):
            found.append(TcpOption(f"kind{kind}"))
            break
        body = raw[pos + 2 : pos + length]
        name = KIND_NAMES.get(kind)
        if name == "mss" and length == 4:
            found.append(TcpOption("mss", struct.unpack("!H", body)))
        elif name == "wscale" and length == 3:
            found.append(TcpOption("wscale", (body[0],)))
        elif name == "sackOK" and length == 2:
            found.append(TcpOption("sackOK"))
        elif name == "TS" and length == 10:
            found.append(TcpOption("TS", struct.unpack("!II", body)))
        elif name == "sack" and length % 8 == 2:
            found.append(TcpOption("sack", struct.unpack(f"!{len(body) // 4}I", body)))
        else:
            found.append(TcpOption(f"kind{kind}", tuple(body)))
        pos += length
    return found


def build(src: str, dst: str, sport: int, dport: int, seq: int, ack: int, flags: int, window: int,
          options: bytes, payload: bytes) -> bytes:
    """One IPv4 packet (DF, TTL 64) carrying the TCP segment, both checksums correct."""
    src4, dst4 = socket.inet_aton(src), socket.inet_aton(dst)
    tcp = bytearray(_TCP.pack(sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, (5 + len(options) // 4) << 4,
                              flags, window, 0, 0))
    tcp += options + payload
    tcp[16:18] = tcp_checksum_ipv4(src4, dst4, bytes(tcp)).to_bytes(2, "big")
    ip = bytearray(_IP.pack(0x45, 0, 20 + len(tcp), 0, _IP_DF, 64, socket.IPPROTO_TCP, 0, src4, dst4))
    ip[10:12] = internet_checksum(bytes(ip)).to_bytes(2, "big")
    return bytes(ip + tcp)


def parse(raw: bytes) -> tuple[Segment, list[TcpOption]]:
    """The segment (wire.parse: headers checked, checksums verified) and its options in order.
    Raises stack.wire.reasons.MalformedPacket."""
    seg = parse_packet(raw)
    ihl = (raw[0] & 0x0F) * 4
    doff = (raw[ihl + 12] >> 4) * 4
    return seg, decode_options(raw[ihl + 20 : ihl + doff])
