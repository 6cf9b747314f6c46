"""scapy as an independent oracle: it builds packets we parse, and parses packets we build."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stack.wire import Segment, TcpOptions, build_packet, parse_packet

from .test_wire_roundtrip import addresses, segments, u16, u32

scapy_all = pytest.importorskip("scapy.all")
IP, TCP, Raw = scapy_all.IP, scapy_all.TCP, scapy_all.Raw
SCAPY_NAMED_KINDS = frozenset(pytest.importorskip("scapy.layers.inet").TCPOptions[0])

SETTINGS = settings(max_examples=60, deadline=None)

# scapy's names for the options we interpret, and what we expect them to decode to.
scapy_option = st.one_of(
    st.tuples(st.just("MSS"), u16).map(lambda t: (t, {"mss": t[1]})),
    st.tuples(st.just("WScale"), st.integers(0, 14)).map(lambda t: (t, {"wscale": t[1]})),
    st.just((("SAckOK", b""), {"sack_permitted": True})),
    st.tuples(st.just("Timestamp"), st.tuples(u32, u32)).map(lambda t: (t, {"timestamp": t[1]})),
    st.lists(st.tuples(u32, u32), min_size=1, max_size=3).map(
        lambda blocks: (("SAck", tuple(e for b in blocks for e in b)), {"sack_blocks": tuple(blocks)})
    ),
    st.just((("NOP", None), {})),
)


def option_size(opt: tuple[str, Any]) -> int:
    name, value = opt
    if name == "SAck":
        return 2 + 4 * len(value)
    return {"MSS": 4, "WScale": 3, "SAckOK": 2, "Timestamp": 10, "NOP": 1}[name]


@st.composite
def scapy_packets(draw: st.DrawFn) -> tuple[bytes, Segment]:
    chosen = draw(st.lists(scapy_option, max_size=5))
    options, expected = [], TcpOptions()
    kinds_seen: set[str] = set()
    size = 0
    for opt, fields in chosen:
        if opt[0] in kinds_seen and opt[0] != "NOP":
            continue  # keep one of each so "last one wins" does not matter here
        if size + option_size(opt) > 40:
            continue
        kinds_seen.add(opt[0])
        size += option_size(opt)
        options.append(opt)
        for key, value in fields.items():
            setattr(expected, key, value)
    seg = Segment(
        src_addr=draw(addresses),
        dst_addr=draw(addresses),
        src_port=draw(u16),
        dst_port=draw(u16),
        seq=draw(u32),
        ack=draw(u32),
        flags=draw(st.integers(0, 255)),
        window=draw(u16),
        urgent=draw(u16),
        options=expected,
        payload=draw(st.binary(max_size=40)),
    )
    pkt = IP(src=seg.src_addr, dst=seg.dst_addr, id=draw(u16), ttl=draw(st.integers(1, 255)), flags="DF") / TCP(
        sport=seg.src_port,
        dport=seg.dst_port,
        seq=seg.seq,
        ack=seg.ack,
        flags=seg.flags,
        window=seg.window,
        urgptr=seg.urgent,
        options=options,
    )
    if seg.payload:
        pkt = pkt / Raw(seg.payload)
    return bytes(pkt), seg


@SETTINGS
@given(case=scapy_packets())
def test_we_parse_what_scapy_builds(case: tuple[bytes, Segment]) -> None:
    raw, expected = case
    assert parse_packet(raw) == expected  # also proves scapy's checksums verify with ours


def scapy_checksums_ok(raw: bytes) -> bool:
    """Let scapy recompute both checksums from scratch and compare with what we wrote."""
    pkt = IP(raw)
    fresh = pkt.copy()
    del fresh[IP].chksum
    del fresh[TCP].chksum
    again = IP(bytes(fresh))
    return bool(again[IP].chksum == pkt[IP].chksum and again[TCP].chksum == pkt[TCP].chksum)


@SETTINGS
@given(seg=segments(), ttl=st.integers(1, 255), ident=u16)
def test_scapy_parses_what_we_build(seg: Segment, ttl: int, ident: int) -> None:
    # scapy decodes the kinds it has names for (e.g. 14, AltChkSum) its own way; keep the rest.
    seg.options.unknown = tuple(u for u in seg.options.unknown if u[0] not in SCAPY_NAMED_KINDS)
    raw = build_packet(seg, ttl=ttl, ident=ident)
    pkt = IP(raw)
    assert (pkt.version, pkt.ihl, pkt.len, pkt.id, pkt.ttl, pkt.proto) == (4, 5, len(raw), ident, ttl, 6)
    assert str(pkt.flags) == "DF" and pkt.frag == 0
    assert (pkt.src, pkt.dst) == (seg.src_addr, seg.dst_addr)
    tcp = pkt[TCP]
    assert (tcp.sport, tcp.dport, tcp.seq, tcp.ack) == (seg.src_port, seg.dst_port, seg.seq, seg.ack)
    assert (int(tcp.flags), tcp.window, tcp.urgptr) == (seg.flags, seg.window, seg.urgent)
    assert bytes(tcp.payload) == seg.payload
    decoded = dict(o for o in tcp.options if o[0] not in ("NOP", "EOL") and isinstance(o[0], str))
    opts = seg.options
    assert decoded.get("MSS") == opts.mss
    assert decoded.get("WScale") == opts.wscale
    assert ("SAckOK" in decoded) == opts.sack_permitted
    assert decoded.get("Timestamp") == opts.timestamp
    sack = decoded.get("SAck", ())
    assert tuple(zip(sack[::2], sack[1::2], strict=True)) == opts.sack_blocks
    assert [(k, v) for k, v in tcp.options if isinstance(k, int)] == list(opts.unknown)
    assert scapy_checksums_ok(raw)


def test_scapy_agrees_on_a_typical_syn() -> None:
    syn = Segment(
        "192.0.2.1",
        "198.51.100.7",
        40000,
        443,
        123456789,
        0,
        0x02,
        64240,
        options=TcpOptions(mss=1460, sack_permitted=True, timestamp=(1, 0), wscale=7),
    )
    raw = build_packet(syn)
    assert IP(raw)[TCP].options == [
        ("MSS", 1460),
        ("SAckOK", b""),
        ("Timestamp", (1, 0)),
        ("NOP", None),
        ("WScale", 7),
    ]
    assert scapy_checksums_ok(raw)
    scapy_syn = IP(src="192.0.2.1", dst="198.51.100.7", flags="DF", id=0) / TCP(
        sport=40000,
        dport=443,
        seq=123456789,
        flags="S",
        window=64240,
        options=[("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0)), ("NOP", None), ("WScale", 7)],
    )
    assert bytes(scapy_syn) == raw  # same canonical layout, same checksums, byte for byte


# ---- IPv6 (RFC 8200) ---------------------------------------------------------------------------

IPv6 = scapy_all.IPv6
addresses6 = st.binary(min_size=16, max_size=16).map(lambda raw: socket.inet_ntop(socket.AF_INET6, raw))
# Extension headers as scapy builds them; each must be walked over to reach the same segment.
SCAPY_CHAINS = [
    lambda: [],
    lambda: [scapy_all.IPv6ExtHdrHopByHop()],
    lambda: [scapy_all.IPv6ExtHdrDestOpt(options=[scapy_all.PadN(optdata=b"\0" * 12)])],
    lambda: [scapy_all.IPv6ExtHdrRouting(addresses=["2001:2::9"], segleft=0)],
    lambda: [scapy_all.IPv6ExtHdrFragment(offset=0, m=0, id=7)],  # atomic: RFC 6946
    lambda: [scapy_all.IPv6ExtHdrHopByHop(), scapy_all.IPv6ExtHdrDestOpt(), scapy_all.IPv6ExtHdrRouting(),
             scapy_all.IPv6ExtHdrFragment(), scapy_all.IPv6ExtHdrDestOpt()],
]


@SETTINGS
@given(case=scapy_packets(), src=addresses6, dst=addresses6, chain=st.sampled_from(SCAPY_CHAINS),
       hlim=st.integers(1, 255))
def test_we_parse_ipv6_that_scapy_builds(case: tuple[bytes, Segment], src: str, dst: str, chain: Any,
                                         hlim: int) -> None:
    raw4, expected = case
    expected.src_addr, expected.dst_addr = src, dst
    pkt = IPv6(src=src, dst=dst, hlim=hlim)
    for ext in chain():
        pkt = pkt / ext
    tcp = IP(raw4)[TCP]
    # The payload as the raw octets it is: scapy dissects a payload by port (135 as DCE/RPC, ...)
    # and may build it back longer (seen: 16 octets to 24), which is scapy's doing, not ours.
    tcp.remove_payload()
    pkt = pkt / tcp / Raw(expected.payload) if expected.payload else pkt / tcp
    del pkt[TCP].chksum  # scapy recomputes it over the IPv6 pseudo-header
    assert parse_packet(bytes(pkt)) == expected


@SETTINGS
@given(seg=segments(), src=addresses6, dst=addresses6, hlim=st.integers(0, 255))
def test_scapy_parses_ipv6_that_we_build(seg: Segment, src: str, dst: str, hlim: int) -> None:
    seg.options.unknown = tuple(u for u in seg.options.unknown if u[0] not in SCAPY_NAMED_KINDS)
    seg.src_addr, seg.dst_addr = src, dst
    raw = build_packet(seg, ttl=hlim)
    pkt = IPv6(raw)
    assert (pkt.version, pkt.tc, pkt.fl, pkt.plen, pkt.nh, pkt.hlim) == (6, 0, 0, len(raw) - 40, 6, hlim)
    assert (pkt.src, pkt.dst) == (src, dst)  # scapy prints the same compressed form
    tcp = pkt[TCP]
    assert (tcp.sport, tcp.dport, tcp.seq, tcp.ack) == (seg.src_port, seg.dst_port, seg.seq, seg.ack)
    assert (int(tcp.flags), tcp.window, tcp.urgptr) == (seg.flags, seg.window, seg.urgent)
    assert bytes(tcp.payload) == seg.payload
    fresh = pkt.copy()
    del fresh[TCP].chksum
    assert IPv6(bytes(fresh))[TCP].chksum == tcp.chksum


def test_scapy_agrees_on_an_ipv6_syn_byte_for_byte() -> None:
    opts = [("MSS", 1440), ("SAckOK", b""), ("Timestamp", (1, 0)), ("NOP", None), ("WScale", 7)]
    syn = Segment("2001:2::1", "2001:2::2", 40000, 80, 123456789, 0, 0x02, 64800,
                  options=TcpOptions(mss=1440, sack_permitted=True, timestamp=(1, 0), wscale=7))
    scapy_syn = IPv6(src="2001:2::1", dst="2001:2::2", hlim=64) / TCP(
        sport=40000, dport=80, seq=123456789, flags="S", window=64800, options=opts
    )
    assert bytes(scapy_syn) == build_packet(syn)
