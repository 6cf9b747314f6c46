"""Wire-format timings: parse_packet / build_packet per packet, plus construct and struct baselines.

Run: .venv/bin/python benchmarks/bench_wire.py   (prints a table; never asserts)
`run()` returns {case name: nanoseconds per call}, the best of several timeit repeats.

Targets (see stack/wire): parse <= 5 µs and build <= 5 µs for a 20 + 20 + 12 octet header
(IPv4, TCP, NOP NOP Timestamps).
"""

from __future__ import annotations

import struct
import timeit
from collections.abc import Callable
from io import BytesIO
from typing import Any

from construct import Sequence, Struct

from stack.wire import ACK, PSH, SYN, Segment, TcpOptions, build_packet, parse_packet
from stack.wire import build as wire_build
from stack.wire import headers as h
from stack.wire import parse as wire_parse

REPEATS = 7


def _ns(fn: Callable[[], Any]) -> float:
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()  # enough loops for >= 0.2 s
    number = max(number, 1000)
    return min(timer.repeat(repeat=REPEATS, number=number)) / number * 1e9


def _segment(options: TcpOptions, payload: bytes = b"", flags: int = ACK | PSH) -> Segment:
    return Segment("10.0.0.1", "10.0.0.2", 43210, 80, 123456789, 987654321, flags, 65535, 0, options, payload)


def cases() -> dict[str, Callable[[], Any]]:
    ts = _segment(TcpOptions(timestamp=(1000, 2000)))
    ts_1460 = _segment(TcpOptions(timestamp=(1000, 2000)), bytes(1460))
    plain = _segment(TcpOptions())
    syn = _segment(TcpOptions(mss=1460, sack_permitted=True, timestamp=(1, 0), wscale=7), flags=SYN)
    sack = _segment(TcpOptions(timestamp=(1000, 2000), sack_blocks=((1, 2), (3, 4), (5, 6))))
    raw_ts, raw_ts_1460, raw_plain = build_packet(ts), build_packet(ts_1460), build_packet(plain)
    raw_syn, raw_sack = build_packet(syn), build_packet(sack)
    ts6 = Segment("2001:2::1", "2001:2::2", 43210, 80, 123456789, 987654321, ACK | PSH, 65535, 0,
                  TcpOptions(timestamp=(1000, 2000)))
    raw_ts6 = build_packet(ts6)
    # An 8-octet Destination Options header (PadN) between the IPv6 header and TCP.
    ext = bytes((h.IPPROTO_TCP, 0, 1, 4, 0, 0, 0, 0))
    raw_ts6_ext = (raw_ts6[:4] + (len(raw_ts6) - 40 + 8).to_bytes(2, "big") + bytes((h.IPV6_DEST_OPTIONS,))
                   + raw_ts6[7:40] + ext + raw_ts6[40:])

    # What construct gives without FlatSequence: a compiled Struct (Containers, one struct call
    # per field) and a compiled stock Sequence of the same subcons as TS_LAYOUT.
    stock_struct_c = Struct(
        *h.IPV4_HEADER.subcons, *[("tcp_" + sc.name) / sc.subcon for sc in h.TCP_HEADER.subcons]
    ).compile()
    stock_seq_c = Sequence(*h.TS_LAYOUT.subcons).compile()
    flat_parse = h.TS_CODEC.parse_stream
    unpack_from = struct.Struct(h.TS_LAYOUT.packer.format).unpack_from
    ctx = h.PARSE_CONTEXT

    return {
        # the contract: 20 + 20 + 12 octet header
        "parse ts header (verify checksums)": lambda: parse_packet(raw_ts),
        "parse ts header (no verify)": lambda: parse_packet(raw_ts, verify_checksums=False),
        "build ts header": lambda: build_packet(ts),
        # with a full-size payload
        "parse ts + 1460 B (verify checksums)": lambda: parse_packet(raw_ts_1460),
        "parse ts + 1460 B (no verify)": lambda: parse_packet(raw_ts_1460, verify_checksums=False),
        "build ts + 1460 B": lambda: build_packet(ts_1460),
        # other layouts
        "parse no options": lambda: parse_packet(raw_plain),
        "build no options": lambda: build_packet(plain),
        "parse SYN (mss sackok ts ws)": lambda: parse_packet(raw_syn),
        "build SYN (mss sackok ts ws)": lambda: build_packet(syn),
        "parse ts + 3 SACK blocks": lambda: parse_packet(raw_sack),
        "build ts + 3 SACK blocks": lambda: build_packet(sack),
        # IPv6 (RFC 8200): the same header behind 40 octets, and behind one extension header
        "parse IPv6 ts header (verify checksums)": lambda: parse_packet(raw_ts6),
        "build IPv6 ts header": lambda: build_packet(ts6),
        "parse IPv6 ts + destination options": lambda: parse_packet(raw_ts6_ext),
        # reference points for the 52-octet header block alone
        "construct Struct.compile().parse, 40 B": lambda: stock_struct_c.parse(raw_ts),
        "construct Sequence.compile() parsefunc, 52 B": lambda: stock_seq_c.parsefunc(BytesIO(raw_ts), ctx),
        "FlatSequence compiled parsefunc, 52 B": lambda: flat_parse(BytesIO(raw_ts), ctx),
        "struct.unpack_from, 52 B": lambda: unpack_from(raw_ts),
    }


def stock_layout_cases() -> dict[str, Callable[[], Any]]:
    """The same end-to-end calls with TS_LAYOUT compiled as a stock construct Sequence.

    This is the design alternative FlatSequence replaced; run() swaps it in only while timing.
    """
    ts = _segment(TcpOptions(timestamp=(1000, 2000)))
    raw_ts = build_packet(ts)
    return {
        "parse ts header, stock Sequence layout (verify)": lambda: parse_packet(raw_ts),
        "build ts header, stock Sequence layout": lambda: build_packet(ts),
    }


def run() -> dict[str, float]:
    results = {name: _ns(fn) for name, fn in cases().items()}
    stock = Sequence(*h.TS_LAYOUT.subcons).compile()
    saved = (wire_parse._parse_ts, wire_build._build_ts)
    wire_parse._parse_ts, wire_build._build_ts = stock.parsefunc, stock.buildfunc
    try:
        results.update({name: _ns(fn) for name, fn in stock_layout_cases().items()})
    finally:
        wire_parse._parse_ts, wire_build._build_ts = saved
    return results


def main() -> None:
    results = run()
    width = max(map(len, results))
    print(f"{'case':<{width}}  ns/call")
    for name, ns in results.items():
        print(f"{name:<{width}}  {ns:8.0f}")


if __name__ == "__main__":
    main()
