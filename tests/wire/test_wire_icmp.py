"""ICMP and ICMPv6 on the wire (stack.wire.icmp): round trips, one test per malformed reason, the
quote of an error, and scapy as an independent oracle both ways."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stack.native import internet_checksum
from stack.wire import ACK, MalformedPacket, Reason, Segment, build_packet
from stack.wire.icmp import (
    ICMP_DEST_UNREACH,
    ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST,
    ICMP_FRAG_NEEDED,
    ICMP_PARAMETER_PROBLEM,
    ICMP_TIME_EXCEEDED,
    ICMPV6_DEST_UNREACH,
    ICMPV6_ECHO_REQUEST,
    ICMPV6_PACKET_TOO_BIG,
    IcmpMessage,
    Quote,
    build_icmp,
    icmpv6_checksum,
    parse_datagram,
    parse_icmp,
)
from stack.wire.reasons import ICMP_REASONS

from .test_wire_roundtrip import addresses, u16, u32

SETTINGS = settings(max_examples=60, deadline=None)
TCP_SEG = Segment("198.18.0.2", "198.18.0.1", 40000, 80, 123456, 7, ACK, 1000, payload=b"x" * 100)
V6 = ("2001:2::1", "2001:2::2")


def quote_of(seg: Segment) -> bytes:
    return build_packet(seg)[:28]  # IP header + the first 8 octets of TCP, as routers quote


def reason_of(raw: bytes, verify: bool = True) -> Reason:
    with pytest.raises(MalformedPacket) as info:
        parse_datagram(raw, verify_checksums=verify)
    return info.value.reason


def fix_v4(raw: bytearray) -> bytes:
    """Recompute the IPv4 header and ICMP checksums after a test changed octets."""
    raw[10:12] = b"\0\0"
    raw[10:12] = internet_checksum(raw[:20]).to_bytes(2, "big")
    raw[22:24] = b"\0\0"
    raw[22:24] = internet_checksum(raw[20:]).to_bytes(2, "big")
    return bytes(raw)


# ---------------------------------------------------------------------------------- round trips
@SETTINGS
@given(addresses, addresses, u16, u16, st.binary(max_size=200), st.sampled_from([ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY]))
def test_echo_round_trip(src: str, dst: str, ident: int, seq: int, data: bytes, kind: int) -> None:
    msg = IcmpMessage(4, src, dst, kind, 0, ident, seq, body=data)
    assert parse_datagram(build_icmp(msg)) == msg


@SETTINGS
@given(u16, u16, st.binary(max_size=200))
def test_echo6_round_trip(ident: int, seq: int, data: bytes) -> None:
    msg = IcmpMessage(6, *V6, ICMPV6_ECHO_REQUEST, 0, ident, seq, body=data)
    assert parse_icmp(build_icmp(msg)) == msg


@SETTINGS
@given(u32, u16, st.integers(0, 15))
def test_error_quotes_decode(seq: int, mtu: int, code: int) -> None:
    seg = Segment("198.18.0.2", "198.18.0.1", 40000, 80, seq, 0, ACK, 1000)
    msg = IcmpMessage(4, "198.18.0.1", "198.18.0.2", ICMP_DEST_UNREACH, code, mtu=mtu, body=quote_of(seg))
    got = parse_datagram(build_icmp(msg))
    assert isinstance(got, IcmpMessage)
    assert got.is_error and got.mtu == mtu and got.code == code
    assert got.quote == Quote("198.18.0.2", "198.18.0.1", 6, 40000, 80, seq)


def test_packet_too_big_quote_decodes() -> None:
    seg6 = bytes.fromhex("6000000000140640") + bytes(15) + b"\2" + bytes(15) + b"\1"
    tcp = (40000).to_bytes(2, "big") + (80).to_bytes(2, "big") + (99).to_bytes(4, "big") + bytes(12)
    msg = IcmpMessage(6, *V6, ICMPV6_PACKET_TOO_BIG, 0, mtu=1280, body=seg6 + tcp)
    got = parse_icmp(build_icmp(msg))
    assert got.mtu == 1280
    assert got.quote == Quote("::2", "::1", 6, 40000, 80, 99)


def test_a_quote_of_another_protocol_is_not_malformed() -> None:
    udp = bytearray(quote_of(TCP_SEG))
    udp[9] = 17
    got = parse_icmp(build_icmp(IcmpMessage(4, "198.18.0.1", "198.18.0.2", ICMP_DEST_UNREACH, 3, body=bytes(udp))))
    assert got.quote is not None and got.quote.protocol == 17 and got.quote.src_port == 0


def test_tcp_still_parses_as_a_segment() -> None:
    assert parse_datagram(build_packet(TCP_SEG)) == TCP_SEG


# ---------------------------------------------------------------------------------- one test per reason
def test_unknown_protocol_is_still_not_tcp() -> None:
    raw = bytearray(build_icmp(IcmpMessage(4, "198.18.0.1", "198.18.0.2", ICMP_ECHO_REQUEST)))
    raw[9] = 17
    assert reason_of(fix_v4(raw)) is Reason.NOT_TCP


def test_total_length_past_the_buffer() -> None:
    raw = bytearray(build_icmp(IcmpMessage(4, "198.18.0.1", "198.18.0.2", ICMP_ECHO_REQUEST, body=b"abcd")))
    raw[2:4] = (len(raw) + 1).to_bytes(2, "big")
    assert reason_of(fix_v4(raw)) is Reason.BAD_TOTAL_LENGTH


def test_icmp_truncated() -> None:
    raw = bytearray(build_icmp(IcmpMessage(4, "198.18.0.1", "198.18.0.2", ICMP_ECHO_REQUEST)))[:26]
    raw[2:4] = (26).to_bytes(2, "big")
    raw[10:12] = b"\0\0"
    raw[10:12] = internet_checksum(raw[:20]).to_bytes(2, "big")
    assert reason_of(bytes(raw)) is Reason.ICMP_TRUNCATED


def test_bad_icmp_checksum_both_families() -> None:
    raw = bytearray(build_icmp(IcmpMessage(4, "198.18.0.1", "198.18.0.2", ICMP_ECHO_REQUEST, body=b"ping")))
    raw[-1] ^= 1
    assert reason_of(bytes(raw)) is Reason.BAD_ICMP_CHECKSUM
    assert isinstance(parse_datagram(bytes(raw), verify_checksums=False), IcmpMessage)
    raw6 = bytearray(build_icmp(IcmpMessage(6, *V6, ICMPV6_ECHO_REQUEST, body=b"ping")))
    raw6[8] ^= 1  # the source address: the pseudo-header covers it (RFC 4443 §2.3)
    with pytest.raises(MalformedPacket) as info:
        parse_icmp(bytes(raw6))
    assert info.value.reason is Reason.BAD_ICMP_CHECKSUM


@pytest.mark.parametrize("kind", [ICMP_DEST_UNREACH, ICMP_TIME_EXCEEDED, ICMP_PARAMETER_PROBLEM])
def test_quote_truncated(kind: int) -> None:
    short = quote_of(TCP_SEG)[:27]  # one octet short of IP header + 8
    raw = build_icmp(IcmpMessage(4, "198.18.0.1", "198.18.0.2", kind, 0, body=short))
    assert reason_of(raw) is Reason.ICMP_QUOTE_TRUNCATED


def test_bad_quote() -> None:
    quoted = bytearray(quote_of(TCP_SEG))
    quoted[0] = 0x65  # version 6 inside an ICMP (v4) error
    raw = build_icmp(IcmpMessage(4, "198.18.0.1", "198.18.0.2", ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED,
                                 body=bytes(quoted)))
    assert reason_of(raw) is Reason.ICMP_BAD_QUOTE
    quoted[0] = 0x44  # IHL 4
    raw = build_icmp(IcmpMessage(4, "198.18.0.1", "198.18.0.2", ICMP_DEST_UNREACH, 1, body=bytes(quoted)))
    assert reason_of(raw) is Reason.ICMP_BAD_QUOTE


def test_each_icmp_reason_is_reached_here() -> None:
    tested = {Reason.ICMP_TRUNCATED, Reason.BAD_ICMP_CHECKSUM, Reason.ICMP_QUOTE_TRUNCATED, Reason.ICMP_BAD_QUOTE}
    assert tested == ICMP_REASONS


@SETTINGS
@given(st.binary(max_size=120), st.integers(0, 255))
def test_garbage_after_an_ip_header_raises_only_malformed(tail: bytes, kind: int) -> None:
    body = bytes([kind]) + tail
    raw = bytearray(build_icmp(IcmpMessage(4, "198.18.0.1", "198.18.0.2", ICMP_ECHO_REQUEST)))[:20] + body
    raw[2:4] = len(raw).to_bytes(2, "big")
    raw[10:12] = b"\0\0"
    raw[10:12] = internet_checksum(raw[:20]).to_bytes(2, "big")
    for verify in (True, False):
        try:
            got = parse_datagram(bytes(raw), verify_checksums=verify)
        except MalformedPacket:
            continue
        assert isinstance(got, IcmpMessage)


# ---------------------------------------------------------------------------------- scapy, the oracle
scapy_all = pytest.importorskip("scapy.all")
IP, ICMP, IPv6, Raw = scapy_all.IP, scapy_all.ICMP, scapy_all.IPv6, scapy_all.Raw
inet6 = pytest.importorskip("scapy.layers.inet6")


@SETTINGS
@given(addresses, addresses, u16, u16, st.binary(max_size=100))
def test_scapy_builds_echo_we_parse(src: str, dst: str, ident: int, seq: int, data: bytes) -> None:
    raw = bytes(IP(src=src, dst=dst) / ICMP(type=8, id=ident, seq=seq) / Raw(data))
    assert parse_datagram(raw) == IcmpMessage(4, src, dst, ICMP_ECHO_REQUEST, 0, ident, seq, body=data)


@SETTINGS
@given(u32, st.integers(0, 0xFFFF))
def test_scapy_builds_frag_needed_we_parse(seq: int, mtu: int) -> None:
    quoted = IP(src="198.18.0.2", dst="198.18.0.1") / scapy_all.TCP(sport=40000, dport=80, seq=seq)
    raw = bytes(IP(src="198.18.0.1", dst="198.18.0.2") / ICMP(type=3, code=4, nexthopmtu=mtu) / quoted)
    got = parse_datagram(raw)
    assert isinstance(got, IcmpMessage)
    assert (got.type, got.code, got.mtu) == (ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, mtu)
    assert got.quote == Quote("198.18.0.2", "198.18.0.1", 6, 40000, 80, seq)


@SETTINGS
@given(u32, st.integers(1280, 0xFFFF_FFFF))
def test_scapy_builds_packet_too_big_we_parse(seq: int, mtu: int) -> None:
    quoted = IPv6(src=V6[1], dst=V6[0]) / scapy_all.TCP(sport=40000, dport=80, seq=seq)
    raw = bytes(IPv6(src=V6[0], dst=V6[1]) / inet6.ICMPv6PacketTooBig(mtu=mtu) / quoted)
    got = parse_icmp(raw)
    assert (got.type, got.mtu) == (ICMPV6_PACKET_TOO_BIG, mtu)
    assert got.quote == Quote(V6[1], V6[0], 6, 40000, 80, seq)


@SETTINGS
@given(u16, u16, st.binary(max_size=100))
def test_we_build_echo_scapy_verifies(ident: int, seq: int, data: bytes) -> None:
    raw = build_icmp(IcmpMessage(4, "198.18.0.2", "198.18.0.1", ICMP_ECHO_REPLY, 0, ident, seq, body=data))
    pkt = IP(raw)
    sent = pkt[ICMP].chksum
    del pkt[ICMP].chksum
    del pkt[IP].chksum
    again = IP(bytes(pkt))
    assert (again[ICMP].chksum, again[IP].chksum) == (sent, IP(raw).chksum)
    assert (pkt[ICMP].type, pkt[ICMP].id, pkt[ICMP].seq, bytes(pkt[ICMP].payload)) == (0, ident, seq, data)


@SETTINGS
@given(u16, u16, st.binary(max_size=100))
def test_we_build_echo6_scapy_verifies(ident: int, seq: int, data: bytes) -> None:
    raw = build_icmp(IcmpMessage(6, *V6, 129, 0, ident, seq, body=data))
    pkt = IPv6(raw)
    reply = pkt[inet6.ICMPv6EchoReply]
    sent = reply.cksum
    del reply.cksum
    assert IPv6(bytes(pkt))[inet6.ICMPv6EchoReply].cksum == sent
    assert (reply.id, reply.seq, bytes(reply.data)) == (ident, seq, data)
    assert icmpv6_checksum(bytes(raw[8:24]), bytes(raw[24:40]), raw[40:]) == 0


def test_quote_of_an_icmpv6_dest_unreach_is_parsed() -> None:
    quoted = IPv6(src=V6[1], dst=V6[0]) / scapy_all.TCP(sport=1, dport=2, seq=3)
    raw = bytes(IPv6(src=V6[0], dst=V6[1]) / inet6.ICMPv6DestUnreach(code=4) / quoted)
    got = parse_icmp(raw)
    assert (got.type, got.code) == (ICMPV6_DEST_UNREACH, 4)
    assert got.quote == Quote(V6[1], V6[0], 6, 1, 2, 3)


@SETTINGS
@given(st.sampled_from([0, 3, 8, 11, 12, 1, 2, 4, 128, 129, 200]), st.binary(min_size=7, max_size=60))
def test_compiled_messages_parse_and_build_as_the_named_structs(kind: int, rest: bytes) -> None:
    from stack.wire import icmp

    raw = bytes([kind]) + rest
    for named, compiled in ((icmp.ICMPV4_MESSAGE, icmp._ICMPV4), (icmp.ICMPV6_MESSAGE, icmp._ICMPV6)):
        value = named.parse(raw)
        assert compiled.parse(raw) == value
        assert compiled.build(value) == named.build(value) == raw
