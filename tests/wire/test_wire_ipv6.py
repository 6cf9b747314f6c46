"""IPv6 (RFC 8200): the header definitions, the extension-header chain, one test per drop reason,
round trips, the hot layouts == the general path == the named Structs, and scapy as the oracle."""

from __future__ import annotations

import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stack.native import tcp_checksum_ipv6
from stack.wire import ACK, SYN, MalformedPacket, Reason, Segment, TcpOptions, build_packet, parse_packet
from stack.wire import headers as h
from stack.wire.ipv6 import walk_extension_headers

from .test_wire_malformed import parses_or_malformed, random_edits
from .test_wire_roundtrip import (
    hot_segments,
    reference_parse_options,
    reference_tcp_header,
    segments,
    tcp_options,
)

SETTINGS = settings(max_examples=150, deadline=None)
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

addresses6 = st.binary(min_size=16, max_size=16).map(lambda raw: socket.inet_ntop(socket.AF_INET6, raw))


def as_ipv6(seg: Segment, src: str, dst: str) -> Segment:
    seg.src_addr, seg.dst_addr = src, dst
    return seg


@st.composite
def segments6(draw: st.DrawFn, *, hot: bool = False) -> Segment:
    seg = draw(hot_segments() if hot else segments())
    return as_ipv6(seg, draw(addresses6), draw(addresses6))


SEG = Segment(
    "2001:2::1", "2001:2::2", 1234, 80, 1000, 2000, ACK, 65535,
    options=TcpOptions(timestamp=(5, 6)), payload=b"hello world",
)
GOOD = build_packet(SEG)  # 40 IPv6 + 20 TCP + 12 options + 11 payload


def fix_tcp_checksum(pkt: bytearray, start: int = 40) -> bytearray:
    """Recompute the TCP checksum of an IPv6 packet whose TCP header starts at `start`."""
    end = 40 + int.from_bytes(pkt[4:6], "big")
    if start + 18 <= end <= len(pkt):
        pkt[start + 16 : start + 18] = b"\0\0"
        csum = tcp_checksum_ipv6(bytes(pkt[8:24]), bytes(pkt[24:40]), bytes(pkt[start:end]))
        pkt[start + 16 : start + 18] = csum.to_bytes(2, "big")
    return pkt


def options_ext(next_header: int, body_len: int = 6, fill: int = 1) -> bytes:
    """A Hop-by-Hop / Destination Options / Routing frame of 2 + body_len octets."""
    assert (2 + body_len) % 8 == 0
    return h.IPV6_OPTIONS_EXT.build(
        {"next_header": next_header, "hdr_ext_len": (2 + body_len) // 8 - 1, "body": bytes([fill]) * body_len}
    )


def fragment_ext(next_header: int, offset: int = 0, more: bool = False, ident: int = 0x1234) -> bytes:
    return h.IPV6_FRAGMENT_EXT.build(
        {"next_header": next_header, "reserved": 0, "offset_flags": offset << 3 | int(more), "identification": ident}
    )


def with_chain(pkt: bytes, chain: list[tuple[int, bytes]]) -> bytearray:
    """`pkt` (IPv6 + TCP) with extension headers inserted: chain is [(type, frame)], each frame's own
    next-header octet is rewritten to point at the following one (the last at TCP)."""
    out = bytearray(pkt[:40])
    types = [t for t, _ in chain] + [pkt[6]]
    out[6] = types[0]
    for i, (_, frame) in enumerate(chain):
        out += bytes([types[i + 1]]) + frame[1:]
    out += pkt[40:]
    out[4:6] = (len(out) - 40).to_bytes(2, "big")
    return out


def reason_of(buf: bytes | bytearray, *, verify: bool = True) -> Reason:
    with pytest.raises(MalformedPacket) as info:
        parse_packet(buf, verify_checksums=verify)
    assert str(info.value).startswith(info.value.reason.value)
    return info.value.reason


# ---- definitions ------------------------------------------------------------------------------


def test_ipv6_header_fields_follow_rfc8200() -> None:
    assert h.IPV6_HEADER.sizeof() == h.IPV6_HEADER_SIZE == 40
    assert h.IPV6_FIELDS == ("version_class_flow", "payload_length", "next_header", "hop_limit", "src", "dst")
    raw = bytes.fromhex("6e3abcde" "0020" "06" "40") + bytes(range(16)) + bytes(range(16, 32))
    hdr = h.IPV6_HEADER.parse(raw)
    assert hdr.version_class_flow >> h.IPV6_VERSION_SHIFT == 6
    assert hdr.version_class_flow >> 20 & 0xFF == 0xE3  # traffic class
    assert hdr.version_class_flow & 0xFFFFF == 0xABCDE  # flow label
    assert (hdr.payload_length, hdr.next_header, hdr.hop_limit) == (32, 6, 64)
    assert (hdr.src, hdr.dst) == (bytes(range(16)), bytes(range(16, 32)))
    assert h.IPV6_HEADER.build(hdr) == raw


def test_extension_frames_follow_rfc8200() -> None:
    # §4.3/§4.4/§4.6: length in 8-octet units beyond the first 8; §4.5: the fragment header is 8.
    frame = h.IPV6_OPTIONS_EXT.parse(bytes.fromhex("3b01") + bytes(14))
    assert (frame.next_header, frame.hdr_ext_len, len(frame.body)) == (59, 1, 14)
    assert list(h.IPV6_EXT_CODEC.parse(bytes.fromhex("3b01"))) == [59, 1]
    frag = h.IPV6_FRAGMENT_EXT.parse(bytes.fromhex("06000b39deadbeef"))
    assert frag.offset_flags & h.IPV6_FRAG_OFFSET_MASK == 0x0B38 and frag.offset_flags & h.IPV6_FRAG_M == 1
    assert (frag.next_header, frag.identification) == (6, 0xDEADBEEF)
    assert h.IPV6_FRAGMENT_EXT.sizeof() == h.IPV6_FRAGMENT_SIZE


def test_ipv6_layout_positions_are_the_struct_fields() -> None:
    assert h.PLAIN6_LAYOUT.sizeof() == h.PLAIN6_LAYOUT_SIZE == 60
    assert h.TS6_LAYOUT.sizeof() == h.TS6_LAYOUT_SIZE == 72
    raw = bytes(range(60))
    ip = h.IPV6_HEADER.parse(raw[:40])
    tcp = h.TCP_HEADER.parse(raw[40:])
    expected = [ip[n] for n in h.IPV6_FIELDS] + [tcp[n] for n in h.TCP_FIELDS]
    assert list(h.PLAIN6_CODEC.parse(raw)) == expected
    assert list(h.IPV6_CODEC.parse(raw)) + list(h.TCP_CODEC.parse(raw, 40)) == expected


# ---- round trips and the hot path -------------------------------------------------------------


@SETTINGS
@given(seg=segments6(), hop_limit=st.integers(0, 255))
def test_parse_build_round_trip(seg: Segment, hop_limit: int) -> None:
    pkt = build_packet(seg, ttl=hop_limit)
    assert pkt[0] >> 4 == 6 and pkt[7] == hop_limit and pkt[6] == h.IPPROTO_TCP
    assert int.from_bytes(pkt[4:6], "big") == len(pkt) - 40
    assert parse_packet(pkt) == seg
    assert parse_packet(pkt, verify_checksums=False) == seg
    assert parse_packet(bytearray(pkt)) == seg
    assert parse_packet(memoryview(pkt)) == seg


@SETTINGS
@given(seg=segments6(), padding=st.binary(min_size=1, max_size=16))
def test_trailing_bytes_past_payload_length_are_ignored(seg: Segment, padding: bytes) -> None:
    assert parse_packet(build_packet(seg) + padding) == seg


def test_addresses_come_back_in_canonical_compressed_form() -> None:
    seg = Segment("2001:0002:0000:0000:0000:0000:0000:0002", "2001:2:0:0::1", 1, 2, 3)
    got = parse_packet(build_packet(seg))
    assert (got.src_addr, got.dst_addr) == ("2001:2::2", "2001:2::1")
    mapped = parse_packet(build_packet(Segment("::ffff:1.2.3.4", "::1", 1, 2, 3)))
    assert (mapped.src_addr, mapped.dst_addr) == ("::ffff:1.2.3.4", "::1")  # stays IPv6 text


@SETTINGS
@given(seg=segments6(hot=True))
def test_hot_layouts_parse_like_the_general_path(seg: Segment) -> None:
    pkt = build_packet(seg)
    # A Destination Options header forces IPV6_LAYOUT + the chain walk + TCP_LAYOUT + options.
    general = fix_tcp_checksum(with_chain(pkt, [(h.IPV6_DEST_OPTIONS, options_ext(0))]), 48)
    assert parse_packet(general) == parse_packet(pkt) == seg


@SETTINGS
@given(seg=segments6(), hop_limit=st.integers(0, 255))
def test_build_packet_equals_named_structs(seg: Segment, hop_limit: int) -> None:
    pkt = build_packet(seg, ttl=hop_limit)
    from .test_wire_roundtrip import reference_build_options

    options = reference_build_options(seg.options)
    src6 = socket.inet_pton(socket.AF_INET6, seg.src_addr)
    dst6 = socket.inet_pton(socket.AF_INET6, seg.dst_addr)
    ip = {
        "version_class_flow": 6 << 28,
        "payload_length": 20 + len(options) + len(seg.payload),
        "next_header": h.IPPROTO_TCP,
        "hop_limit": hop_limit,
        "src": src6,
        "dst": dst6,
    }
    tcp = reference_tcp_header(seg, options, int.from_bytes(pkt[56:58], "big"))  # verified just below
    assert pkt == h.IPV6_HEADER.build(ip) + h.TCP_HEADER.build(tcp) + options + seg.payload
    assert tcp_checksum_ipv6(src6, dst6, pkt[40:]) == 0


def reference_parse_packet(pkt: bytes) -> Segment:
    """A valid packet decoded with the non-compiled named Structs (no validation)."""
    ip = h.IPV6_HEADER.parse(pkt)
    pos, next_header = 40, ip.next_header
    while next_header != h.IPPROTO_TCP:
        if next_header == h.IPV6_FRAGMENT:
            ext = h.IPV6_FRAGMENT_EXT.parse(pkt[pos:])
            pos += 8
        else:
            ext = h.IPV6_OPTIONS_EXT.parse(pkt[pos:])
            pos += 2 + len(ext.body)
        next_header = ext.next_header
    tcp = h.TCP_HEADER.parse(pkt[pos:])
    doff = (tcp.data_offset >> 4) * 4
    return Segment(
        socket.inet_ntop(socket.AF_INET6, ip.src),
        socket.inet_ntop(socket.AF_INET6, ip.dst),
        tcp.src_port, tcp.dst_port, tcp.seq, tcp.ack, tcp.flags, tcp.window, tcp.urgent,
        reference_parse_options(pkt[pos + 20 : pos + doff]),
        pkt[pos + doff : 40 + ip.payload_length],
    )


# Chains RFC 8200 §4.1 allows; bodies of 6, 14 and 22 octets exercise hdr_ext_len 0..2.
CHAINS = [
    [],
    [(h.IPV6_HOP_BY_HOP, options_ext(0))],
    [(h.IPV6_DEST_OPTIONS, options_ext(0, 14))],
    [(h.IPV6_ROUTING, options_ext(0, 22, fill=0))],
    [(h.IPV6_FRAGMENT, fragment_ext(0))],  # atomic fragment: processed on its own (RFC 6946)
    [
        (h.IPV6_HOP_BY_HOP, options_ext(0)),
        (h.IPV6_DEST_OPTIONS, options_ext(0)),
        (h.IPV6_ROUTING, options_ext(0, 14)),
        (h.IPV6_FRAGMENT, fragment_ext(0)),
        (h.IPV6_DEST_OPTIONS, options_ext(0, 22)),
    ],
]


@SETTINGS
@given(seg=segments6(), chain=st.sampled_from(CHAINS), padding=st.binary(max_size=4))
def test_parse_packet_equals_named_structs(seg: Segment, chain: list[tuple[int, bytes]], padding: bytes) -> None:
    pkt = build_packet(seg)
    start = 40 + sum(len(frame) for _, frame in chain)
    pkt = bytes(fix_tcp_checksum(with_chain(pkt, chain), start)) + padding
    assert parse_packet(pkt) == reference_parse_packet(pkt) == seg


def test_walk_reports_protocol_and_offset() -> None:
    chain = CHAINS[-1]
    pkt = bytes(with_chain(GOOD, chain))
    assert walk_extension_headers(pkt, pkt[6], len(pkt)) == (h.IPPROTO_TCP, 40 + sum(len(f) for _, f in chain))
    assert walk_extension_headers(GOOD, GOOD[6], len(GOOD)) == (h.IPPROTO_TCP, 40)


@pytest.mark.parametrize(
    "seg",
    [
        Segment("2001:2::1", "10.0.0.1", 1, 2, 3),
        Segment("2001:2::1", "2001:2::2::3", 1, 2, 3),
        Segment("2001:2::1", "2001:2::2", 1, 2, 3, payload=bytes(65536 - 20)),
        Segment("2001:2::1", "2001:2::2", 70000, 2, 3),
        Segment("2001:2::1", "2001:2::2", 1, 2, 3, options=TcpOptions(mss=1 << 16)),
    ],
    ids=lambda s: s.summary(),
)
def test_unencodable_segments_raise_value_error(seg: Segment) -> None:
    with pytest.raises(ValueError):
        build_packet(seg)


def test_largest_payload_fits() -> None:
    seg = Segment("2001:2::1", "2001:2::2", 1, 2, 3, payload=bytes(65535 - 20))
    assert parse_packet(build_packet(seg)) == seg


def test_known_example_packet() -> None:
    seg = Segment("2001:2::1", "2001:2::2", 1234, 80, 1, 2, ACK, 100, options=TcpOptions(timestamp=(1, 2)),
                  payload=b"hi")
    assert build_packet(seg).hex() == (
        "6000000000220640" "20010002000000000000000000000001" "20010002000000000000000000000002"
        "04d20050000000010000000280100064c8bd0000" "0101080a0000000100000002" + b"hi".hex()
    )


# ---- one test per reason ----------------------------------------------------------------------


def test_the_good_packet_parses() -> None:
    assert parse_packet(GOOD) == SEG


@pytest.mark.parametrize("size", [1, 19, 20, 39])
def test_truncated_ipv6_header(size: int) -> None:
    assert reason_of(GOOD[:size]) is Reason.TRUNCATED


@pytest.mark.parametrize("payload_length", [len(GOOD) - 40 + 1, 0xFFFF])
def test_bad_payload_length(payload_length: int) -> None:
    bad = bytearray(GOOD)
    bad[4:6] = payload_length.to_bytes(2, "big")
    assert reason_of(bad) is Reason.BAD_PAYLOAD_LENGTH
    # The same through the general path (an extension header in front of TCP).
    chained = with_chain(GOOD, [(h.IPV6_DEST_OPTIONS, options_ext(0))])
    chained[4:6] = min(payload_length + 8, 0xFFFF).to_bytes(2, "big")
    assert reason_of(chained) is Reason.BAD_PAYLOAD_LENGTH


def test_hop_by_hop_not_first() -> None:
    chain = [(h.IPV6_DEST_OPTIONS, options_ext(0)), (h.IPV6_HOP_BY_HOP, options_ext(0))]
    assert reason_of(with_chain(GOOD, chain)) is Reason.HOP_BY_HOP_NOT_FIRST


@pytest.mark.parametrize(
    "types",
    [
        [h.IPV6_DEST_OPTIONS] * 3,
        [h.IPV6_ROUTING] * 2,
        [h.IPV6_FRAGMENT] * 2,
        [h.IPV6_DEST_OPTIONS, h.IPV6_ROUTING, h.IPV6_DEST_OPTIONS, h.IPV6_ROUTING],
    ],
    ids=["dest3", "routing2", "fragment2", "circle"],
)
def test_ext_header_loop(types: list[int]) -> None:
    chain = [(t, fragment_ext(0) if t == h.IPV6_FRAGMENT else options_ext(0)) for t in types]
    assert reason_of(with_chain(GOOD, chain)) is Reason.EXT_HEADER_LOOP


def test_a_long_legal_chain_is_no_loop() -> None:
    assert parse_packet(with_chain(GOOD, CHAINS[-1])) == SEG  # extension headers leave the TCP checksum alone


@pytest.mark.parametrize("cut", [1, 2, 7], ids=["no_length_octet", "length_says_more", "body_cut"])
def test_ext_header_overrun(cut: int) -> None:
    # A Destination Options header that the payload length ends inside of.
    pkt = bytearray(GOOD[:40]) + options_ext(h.IPPROTO_TCP)[:cut]
    pkt[6] = h.IPV6_DEST_OPTIONS
    pkt[4:6] = cut.to_bytes(2, "big")
    assert reason_of(pkt) is Reason.EXT_HEADER_OVERRUN
    # A length octet claiming more than the payload holds.
    long = with_chain(GOOD, [(h.IPV6_DEST_OPTIONS, options_ext(0))])
    long[41] = 0xFF
    assert reason_of(long) is Reason.EXT_HEADER_OVERRUN


def test_fragment_header_overrun() -> None:
    pkt = bytearray(GOOD[:40]) + fragment_ext(h.IPPROTO_TCP)[:5]
    pkt[6] = h.IPV6_FRAGMENT
    pkt[4:6] = (5).to_bytes(2, "big")
    assert reason_of(pkt) is Reason.EXT_HEADER_OVERRUN


@pytest.mark.parametrize(("offset", "more"), [(0, True), (1, False), (0x1FFF, True)], ids=["first", "last", "mid"])
def test_fragment(offset: int, more: bool) -> None:
    chain = [(h.IPV6_HOP_BY_HOP, options_ext(0)), (h.IPV6_FRAGMENT, fragment_ext(0, offset, more))]
    assert reason_of(with_chain(GOOD, chain)) is Reason.FRAGMENT


@pytest.mark.parametrize("next_header", [58, 17, 59, 51, 50, 41, 255])
def test_not_tcp(next_header: int) -> None:
    direct = bytearray(GOOD)
    direct[6] = next_header
    assert reason_of(direct) is Reason.NOT_TCP
    chain = [(h.IPV6_HOP_BY_HOP, options_ext(0)), (h.IPV6_DEST_OPTIONS, options_ext(0))]
    behind = with_chain(GOOD, chain)
    behind[48] = next_header  # the Destination Options header's Next Header
    assert reason_of(behind) is Reason.NOT_TCP


@pytest.mark.parametrize("payload_length", [0, 8, 19])
def test_tcp_truncated(payload_length: int) -> None:
    bad = bytearray(GOOD)
    bad[4:6] = payload_length.to_bytes(2, "big")
    assert reason_of(bad) is Reason.TCP_TRUNCATED
    assert reason_of(bad[: 40 + payload_length]) is Reason.TCP_TRUNCATED


@pytest.mark.parametrize("doff", [0, 4, 15])
def test_bad_data_offset(doff: int) -> None:
    bad = bytearray(GOOD)
    bad[52] = doff << 4
    assert reason_of(fix_tcp_checksum(bad)) is Reason.BAD_DATA_OFFSET


def test_bad_tcp_checksum_covers_the_pseudo_header() -> None:
    bad = bytearray(GOOD)
    bad[-1] ^= 0xFF
    assert reason_of(bad) is Reason.BAD_TCP_CHECKSUM
    assert parse_packet(bad, verify_checksums=False).payload[:-1] == SEG.payload[:-1]
    moved = bytearray(GOOD)
    moved[39] ^= 1  # destination address: only the pseudo-header protects it
    assert reason_of(moved) is Reason.BAD_TCP_CHECKSUM


def test_bad_option_length() -> None:
    bad = bytearray(GOOD)
    bad[60:64] = bytes.fromhex("02000000")
    assert reason_of(fix_tcp_checksum(bad)) is Reason.BAD_OPTION_LENGTH


def test_every_ipv6_reason_is_reachable() -> None:
    # The reasons only IPv6 has are all tested above; the rest are shared with IPv4.
    ipv6_only = {Reason.BAD_PAYLOAD_LENGTH, Reason.EXT_HEADER_OVERRUN, Reason.EXT_HEADER_LOOP,
                 Reason.HOP_BY_HOP_NOT_FIRST}
    after_ipv4 = list(Reason).index(Reason.BAD_OPTION_LENGTH) + 1  # (the ICMP reasons follow them)
    assert ipv6_only == set(list(Reason)[after_ipv4 : after_ipv4 + 4])


# ---- nothing but MalformedPacket --------------------------------------------------------------

ext_types = st.sampled_from(
    [h.IPV6_HOP_BY_HOP, h.IPV6_ROUTING, h.IPV6_FRAGMENT, h.IPV6_DEST_OPTIONS, h.IPPROTO_TCP, 58, 59]
)


@FUZZ
@given(buf=st.binary(min_size=1, max_size=140), next_header=ext_types, exact_length=st.booleans(),
       verify=st.booleans())
def test_random_bytes_that_look_like_ipv6(buf: bytes, next_header: int, exact_length: bool, verify: bool) -> None:
    # Version 6, a plausible next header and (often) a payload length that matches, so random
    # bytes reach the chain walker, the TCP header checks and option parsing.
    out = bytearray(buf)
    out[0] = 0x60 | out[0] & 0x0F
    if len(out) >= 40:
        out[6] = next_header
        if exact_length:
            out[4:6] = (len(out) - 40).to_bytes(2, "big")
    parses_or_malformed(out, verify)


@st.composite
def mutated_packets6(draw: st.DrawFn) -> bytearray:
    seg = as_ipv6(draw(segments(options=tcp_options())), draw(addresses6), draw(addresses6))
    chain = draw(st.sampled_from(CHAINS))
    out = with_chain(build_packet(seg), chain)
    random_edits(draw, out, ("set", "truncate", "insert", "delete"))
    return out


@FUZZ
@given(buf=mutated_packets6(), verify=st.booleans())
def test_mutated_ipv6_packets_only_raise_malformed(buf: bytearray, verify: bool) -> None:
    parses_or_malformed(buf, verify)


@FUZZ
@given(seg=segments6(), words=st.integers(0, 255))
def test_ext_lengths_never_escape(seg: Segment, words: int) -> None:
    pkt = with_chain(build_packet(seg), [(h.IPV6_DEST_OPTIONS, options_ext(0))])
    pkt[41] = words
    parses_or_malformed(pkt, True)


def test_a_linux_like_syn_round_trips() -> None:
    syn = Segment("2001:2::2", "2001:2::1", 80, 40000, 7, 0, SYN, 64800,
                  options=TcpOptions(mss=1440, sack_permitted=True, timestamp=(1, 0), wscale=7))
    assert parse_packet(build_packet(syn)) == syn
