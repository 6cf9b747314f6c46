"""Every malformation has its own Reason, and nothing but MalformedPacket ever escapes the parser."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from stack.native import internet_checksum
from stack.wire import ACK, MalformedPacket, Reason, Segment, TcpOptions, build_packet, parse_packet
from stack.wire.reasons import ICMP_REASONS

from .test_wire_roundtrip import fix_checksums, segments

SEG = Segment(
    "10.0.0.1",
    "10.0.0.2",
    1234,
    80,
    1000,
    2000,
    ACK,
    65535,
    options=TcpOptions(timestamp=(5, 6)),
    payload=b"hello world",
)
GOOD = build_packet(SEG)  # 20 IP + 20 TCP + 12 options + 11 payload


def mutate(pkt: bytes, fixes: dict[int, int], *, fix: bool = True) -> bytearray:
    out = bytearray(pkt)
    for at, value in fixes.items():
        out[at] = value
    return fix_checksums(out) if fix else out


def reason_of(buf: bytes | bytearray, *, verify: bool = True) -> Reason:
    with pytest.raises(MalformedPacket) as info:
        parse_packet(buf, verify_checksums=verify)
    assert isinstance(info.value, ValueError)
    assert str(info.value).startswith(info.value.reason.value)
    return info.value.reason


def with_raw_options(options: bytes) -> bytes:
    """GOOD with its option area replaced (length a multiple of 4), checksums fixed."""
    assert len(options) % 4 == 0 and len(options) <= 40
    out = bytearray(GOOD[:40] + options + SEG.payload)
    out[2:4] = len(out).to_bytes(2, "big")
    out[32] = (20 + len(options)) // 4 << 4
    return bytes(fix_checksums(out))


def test_the_good_packet_parses() -> None:
    assert parse_packet(GOOD) == SEG


def test_reason_values_are_stable_counter_names() -> None:
    assert [r.value for r in Reason] == [
        "truncated",
        "not_ipv4",
        "bad_ihl",
        "bad_ip_checksum",
        "fragment",
        "not_tcp",
        "bad_total_length",
        "tcp_truncated",
        "bad_data_offset",
        "bad_tcp_checksum",
        "bad_option_length",
        "bad_payload_length",
        "ext_header_overrun",
        "ext_header_loop",
        "hop_by_hop_not_first",
        "icmp_truncated",
        "bad_icmp_checksum",
        "icmp_quote_truncated",
        "icmp_bad_quote",
    ]
    assert all(r.value.isidentifier() and r.value.islower() for r in Reason)
    assert f"wire_drop_{Reason.FRAGMENT}" == "wire_drop_fragment"


def test_malformed_packet_pickles() -> None:
    exc = pickle.loads(pickle.dumps(MalformedPacket(Reason.NOT_TCP, "proto 17")))
    assert (exc.reason, exc.detail) == (Reason.NOT_TCP, "proto 17")


# ---- one test per reason ----------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 19])
def test_truncated_ip_header(size: int) -> None:
    assert reason_of(GOOD[:size]) is Reason.TRUNCATED


def test_truncated_inside_ip_options() -> None:
    # IHL 15 says 60 octets of IP header, only 40 are there.
    assert reason_of(mutate(GOOD[:40], {0: 0x4F}, fix=False)) is Reason.TRUNCATED


@pytest.mark.parametrize("version", [0, 5, 7, 15])  # 6 is IPv6: tests/wire/test_wire_ipv6.py
def test_not_ipv4(version: int) -> None:
    assert reason_of(mutate(GOOD, {0: version << 4 | 5})) is Reason.NOT_IPV4


@pytest.mark.parametrize("ihl", [0, 4])
def test_ihl_below_five(ihl: int) -> None:
    assert reason_of(mutate(GOOD, {0: 0x40 | ihl}, fix=False)) is Reason.BAD_IHL


def test_bad_ip_checksum() -> None:
    bad = mutate(GOOD, {10: GOOD[10] ^ 0x01}, fix=False)
    assert reason_of(bad) is Reason.BAD_IP_CHECKSUM
    assert parse_packet(bad, verify_checksums=False) == SEG


@pytest.mark.parametrize(
    ("hi", "lo"),
    [(0x20, 0x00), (0x00, 0x01), (0x1F, 0xFF), (0x60, 0x00)],
    ids=["mf", "offset", "max_offset", "df_mf"],
)
def test_fragment(hi: int, lo: int) -> None:
    assert reason_of(mutate(GOOD, {6: hi, 7: lo})) is Reason.FRAGMENT


@pytest.mark.parametrize("proto", [1, 17, 41, 255])
def test_not_tcp(proto: int) -> None:
    assert reason_of(mutate(GOOD, {9: proto})) is Reason.NOT_TCP


@pytest.mark.parametrize("total", [len(GOOD) + 1, 0xFFFF, 19, 0])
def test_bad_total_length(total: int) -> None:
    assert reason_of(mutate(GOOD, {2: total >> 8, 3: total & 0xFF})) is Reason.BAD_TOTAL_LENGTH


@pytest.mark.parametrize("total", [20, 30, 39])
def test_tcp_header_truncated(total: int) -> None:
    assert reason_of(mutate(GOOD, {2: 0, 3: total})) is Reason.TCP_TRUNCATED
    assert reason_of(mutate(GOOD[:total], {2: 0, 3: total})) is Reason.TCP_TRUNCATED


@pytest.mark.parametrize("doff", [0, 4, 15])
def test_bad_data_offset(doff: int) -> None:
    # 15 words = 60 octets > the 52-octet segment.
    assert reason_of(mutate(GOOD, {32: doff << 4})) is Reason.BAD_DATA_OFFSET


def test_data_offset_past_a_short_segment() -> None:
    pkt = build_packet(Segment("1.2.3.4", "5.6.7.8", 1, 2, 3))  # 20-octet TCP segment
    assert reason_of(mutate(pkt, {32: 6 << 4})) is Reason.BAD_DATA_OFFSET


@pytest.mark.parametrize(
    "options",
    [
        "02000000",  # MSS with length 0
        "02010000",  # MSS with length 1
        "fe010000",  # unknown kind with length 1
        "0101080b00000005000000060000",  # timestamp claims 11 octets, 10 remain (padded to 12 below)
        "010101fe",  # kind 254 in the last octet: no room for its length octet
        "1e0a0000",  # unknown kind claims 10 octets in a 4-octet area
    ],
)
def test_bad_option_length(options: str) -> None:
    raw = bytes.fromhex(options)
    raw = raw[: len(raw) // 4 * 4] if len(raw) % 4 else raw
    assert reason_of(with_raw_options(raw)) is Reason.BAD_OPTION_LENGTH


def test_bad_tcp_checksum() -> None:
    bad = mutate(GOOD, {len(GOOD) - 1: GOOD[-1] ^ 0xFF}, fix=False)
    assert reason_of(bad) is Reason.BAD_TCP_CHECKSUM
    assert parse_packet(bad, verify_checksums=False).payload == SEG.payload[:-1] + bytes([GOOD[-1] ^ 0xFF])


def test_tcp_checksum_covers_the_pseudo_header() -> None:
    # Change the destination address and fix only the IP header checksum.
    out = bytearray(GOOD)
    out[19] ^= 0x01
    out[10:12] = b"\0\0"
    out[10:12] = internet_checksum(bytes(out[:20])).to_bytes(2, "big")
    assert reason_of(out) is Reason.BAD_TCP_CHECKSUM


def test_checks_apply_in_the_documented_order() -> None:
    # A short UDP datagram is "not TCP", not "TCP header truncated".
    udp = mutate(GOOD[:28], {2: 0, 3: 28, 9: 17})
    assert reason_of(udp) is Reason.NOT_TCP
    # Corruption is reported by the checksum before the options it garbled are looked at.
    bad_options = bytearray(with_raw_options(bytes.fromhex("02000000")))
    bad_options[-1] ^= 0xFF
    assert reason_of(bad_options) is Reason.BAD_TCP_CHECKSUM
    assert reason_of(bad_options, verify=False) is Reason.BAD_OPTION_LENGTH
    # The IP checksum is checked before the fields it protects are trusted.
    frag = mutate(GOOD, {6: 0x20}, fix=False)
    assert reason_of(frag) is Reason.BAD_IP_CHECKSUM
    assert reason_of(frag, verify=False) is Reason.FRAGMENT


def test_each_reason_is_reachable() -> None:
    # Guard: adding a Reason without a test above should fail here.
    tested = {
        Reason.TRUNCATED,
        Reason.NOT_IPV4,
        Reason.BAD_IHL,
        Reason.BAD_IP_CHECKSUM,
        Reason.FRAGMENT,
        Reason.NOT_TCP,
        Reason.BAD_TOTAL_LENGTH,
        Reason.TCP_TRUNCATED,
        Reason.BAD_DATA_OFFSET,
        Reason.BAD_OPTION_LENGTH,
        Reason.BAD_TCP_CHECKSUM,
        # IPv6 only, tested in test_wire_ipv6.py
        Reason.BAD_PAYLOAD_LENGTH,
        Reason.EXT_HEADER_OVERRUN,
        Reason.EXT_HEADER_LOOP,
        Reason.HOP_BY_HOP_NOT_FIRST,
    }
    assert tested == set(Reason) - ICMP_REASONS  # those are reached in test_wire_icmp.py


# ---- nothing but MalformedPacket --------------------------------------------------------------

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def parses_or_malformed(buf: bytes | bytearray | memoryview, verify: bool) -> None:
    try:
        seg = parse_packet(buf, verify_checksums=verify)
    except MalformedPacket as exc:
        assert isinstance(exc.reason, Reason)
        event(f"dropped: {exc.reason}")
    else:
        assert isinstance(seg, Segment)
        event("parsed")


@FUZZ
@given(buf=st.binary(max_size=120), verify=st.booleans())
def test_random_bytes_only_raise_malformed(buf: bytes, verify: bool) -> None:
    parses_or_malformed(buf, verify)


@FUZZ
@given(buf=st.binary(min_size=20, max_size=100), ihl=st.sampled_from([5, 5, 5, 6, 15]), verify=st.booleans())
def test_random_bytes_that_look_like_ipv4_tcp(buf: bytes, ihl: int, verify: bool) -> None:
    # Random headers with a plausible version, IHL, length and protocol and valid checksums,
    # so the random bytes reach the TCP data offset, option and payload handling.
    out = bytearray(buf)
    out[0] = 0x40 | ihl
    out[2:4] = len(out).to_bytes(2, "big")
    out[6] &= 0x40  # no fragment
    out[7] = 0
    out[9] = 6
    parses_or_malformed(fix_checksums(out), verify)


EDITS = ("flip", "set", "truncate", "insert", "delete")


def random_edits(draw: st.DrawFn, out: bytearray, actions: tuple[str, ...] = EDITS) -> None:
    """One to four random edits of `out`, in place: flip a bit, set an octet, cut the rest, insert
    or delete a few octets."""
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(actions))
        at = draw(st.integers(0, max(0, len(out) - 1)))
        if action == "flip" and out:
            out[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "set" and out:
            out[at] = draw(st.integers(0, 255))
        elif action == "truncate":
            del out[at:]
        elif action == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif action == "delete":
            del out[at : at + draw(st.integers(1, 8))]


@st.composite
def mutated_packets(draw: st.DrawFn) -> bytearray:
    seg = draw(segments())
    out = bytearray(build_packet(seg))
    random_edits(draw, out)
    if len(out) >= 20 and draw(st.booleans()):
        # Repair checksums so mutations reach the TCP-level checks and option parsing.
        ihl = (out[0] & 0x0F) * 4
        if 20 <= ihl <= len(out):
            fix_checksums(out)
    return out


@FUZZ
@given(buf=mutated_packets(), verify=st.booleans())
def test_mutated_packets_only_raise_malformed(buf: bytearray, verify: bool) -> None:
    parses_or_malformed(buf, verify)
    parses_or_malformed(memoryview(bytes(buf)), verify)


@FUZZ
@given(options=st.binary(max_size=40).map(lambda b: b + bytes(-len(b) % 4)))
def test_random_option_areas_only_raise_malformed(options: bytes) -> None:
    try:
        seg = parse_packet(with_raw_options(options))
    except MalformedPacket as exc:
        assert exc.reason is Reason.BAD_OPTION_LENGTH
    else:
        assert seg.payload == SEG.payload
