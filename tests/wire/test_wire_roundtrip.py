"""parse(build(seg)) == seg, the canonical option layout, and the hot path == the general path.

Also home of the hypothesis strategies the other wire tests import.
"""

from __future__ import annotations

import socket
import struct
from io import BytesIO

import pytest
from construct import CheckError, ConstructError, StreamError
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from stack.native import internet_checksum, tcp_checksum_ipv4
from stack.wire import (
    ACK,
    PSH,
    SYN,
    MalformedPacket,
    Reason,
    Segment,
    TcpOptions,
    build_packet,
    build_tcp_options,
    parse_packet,
    parse_tcp_options,
)
from stack.wire import headers as h

SETTINGS = settings(max_examples=200, deadline=None)

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)
addresses = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
KNOWN_KINDS = {
    h.OPT_EOL,
    h.OPT_NOP,
    h.OPT_MSS,
    h.OPT_WSCALE,
    h.OPT_SACK_PERMITTED,
    h.OPT_SACK,
    h.OPT_TIMESTAMP,
}
unknown_options = st.tuples(st.integers(0, 255).filter(lambda k: k not in KNOWN_KINDS), st.binary(max_size=6))


@st.composite
def tcp_options(draw: st.DrawFn, *, max_sack: int | None = None) -> TcpOptions:
    """Random options that fit in 40 octets when built (so they must survive a round trip)."""
    opts = TcpOptions(
        mss=draw(st.none() | u16),
        wscale=draw(st.none() | st.integers(0, 255)),
        sack_permitted=draw(st.booleans()),
        timestamp=draw(st.none() | st.tuples(u32, u32)),
        unknown=tuple(draw(st.lists(unknown_options, max_size=2))),
    )
    used = (
        (4 if opts.mss is not None else 0)
        + (12 if opts.timestamp is not None else 4 if opts.sack_permitted else 0)
        + (4 if opts.wscale is not None else 0)
    )
    unknown_len = sum(2 + len(d) for _, d in opts.unknown)
    assume(used + unknown_len <= 40)
    room = (40 - used - (unknown_len + 3) // 4 * 4 - 4) // 8
    limit = min(4, room) if max_sack is None else min(max_sack, room)
    if limit > 0:
        opts.sack_blocks = tuple(draw(st.lists(st.tuples(u32, u32), max_size=limit)))
    return opts


@st.composite
def segments(draw: st.DrawFn, *, options: st.SearchStrategy[TcpOptions] | None = None) -> Segment:
    return Segment(
        src_addr=draw(addresses),
        dst_addr=draw(addresses),
        src_port=draw(u16),
        dst_port=draw(u16),
        seq=draw(u32),
        ack=draw(u32),
        flags=draw(st.integers(0, 255)),
        window=draw(u16),
        urgent=draw(u16),
        options=draw(options if options is not None else tcp_options()),
        payload=draw(st.binary(max_size=64)),
    )


def hot_segments() -> st.SearchStrategy[Segment]:
    """Segments that take the two layouts of the hot path (no options, or timestamps only)."""
    return segments(options=st.builds(TcpOptions, timestamp=st.none() | st.tuples(u32, u32)))


def syn_options() -> st.SearchStrategy[TcpOptions]:
    """The SYN option set Linux sends (MSS, SACK-permitted, timestamps, window scale): the third
    hot layout, which random options almost never hit."""
    return st.builds(TcpOptions, mss=u16, wscale=st.integers(0, 255), sack_permitted=st.just(True),
                     timestamp=st.tuples(u32, u32))


def fast_path_segments() -> st.SearchStrategy[Segment]:
    """Every shape build_packet and parse_packet have a fast path for, payload or not."""
    return hot_segments() | segments(options=syn_options())


def fix_checksums(pkt: bytearray) -> bytearray:
    """Recompute both checksums of a (mutated) packet so parsing gets past them."""
    ihl = (pkt[0] & 0x0F) * 4
    pkt[10:12] = b"\0\0"
    pkt[10:12] = internet_checksum(bytes(pkt[:ihl])).to_bytes(2, "big")
    total = int.from_bytes(pkt[2:4], "big")
    if ihl + 18 <= total <= len(pkt):
        pkt[ihl + 16 : ihl + 18] = b"\0\0"
        csum = tcp_checksum_ipv4(bytes(pkt[12:16]), bytes(pkt[16:20]), bytes(pkt[ihl:total]))
        pkt[ihl + 16 : ihl + 18] = csum.to_bytes(2, "big")
    return pkt


def with_ip_options(pkt: bytes, ip_options: bytes) -> bytes:
    """The same datagram with IP options inserted (IHL grows), checksums fixed."""
    assert len(ip_options) % 4 == 0
    out = bytearray(pkt[:20] + ip_options + pkt[20:])
    out[0] = 0x40 | (20 + len(ip_options)) // 4
    out[2:4] = (len(out)).to_bytes(2, "big")
    return bytes(fix_checksums(out))


# ---- round trips ------------------------------------------------------------------------------


@SETTINGS
@given(seg=segments())
def test_parse_build_round_trip(seg: Segment) -> None:
    pkt = build_packet(seg)
    assert parse_packet(pkt) == seg
    assert parse_packet(pkt, verify_checksums=False) == seg
    assert parse_packet(bytearray(pkt)) == seg
    assert parse_packet(memoryview(pkt)) == seg


@SETTINGS
@given(seg=hot_segments(), ttl=st.integers(0, 255), ident=u16, df=st.booleans())
def test_ip_header_fields_as_requested(seg: Segment, ttl: int, ident: int, df: bool) -> None:
    pkt = build_packet(seg, ttl=ttl, ident=ident, dont_fragment=df)
    ip = h.IPV4_HEADER.parse(pkt)
    assert ip.version_ihl == 0x45 and ip.tos == 0
    assert ip.total_length == len(pkt)
    assert (ip.identification, ip.ttl, ip.protocol) == (ident, ttl, 6)
    assert ip.flags_fragment == (h.IP_DF if df else 0)
    assert internet_checksum(pkt[:20]) == 0
    assert tcp_checksum_ipv4(ip.src, ip.dst, pkt[20:]) == 0
    assert parse_packet(pkt) == seg


@SETTINGS
@given(opts=tcp_options())
def test_options_round_trip(opts: TcpOptions) -> None:
    raw = build_tcp_options(opts)
    assert len(raw) % 4 == 0 and len(raw) <= 40
    assert parse_tcp_options(raw) == opts


@SETTINGS
@given(seg=segments(), padding=st.binary(min_size=1, max_size=16))
def test_trailing_bytes_past_total_length_are_ignored(seg: Segment, padding: bytes) -> None:
    assert parse_packet(build_packet(seg) + padding) == seg


@SETTINGS
@given(seg=segments(), words=st.integers(1, 10))
def test_ip_options_are_skipped(seg: Segment, words: int) -> None:
    # RFC 791 §3.1 option area: NOPs (type 1) then EOL; the TCP header moves by IHL.
    pkt = with_ip_options(build_packet(seg), b"\x01" * (4 * words - 1) + b"\x00")
    assert parse_packet(pkt) == seg


# ---- hot path == general path -----------------------------------------------------------------


@SETTINGS
@given(seg=hot_segments())
def test_hot_layouts_parse_like_the_general_path(seg: Segment) -> None:
    pkt = build_packet(seg)
    # One word of IP options forces IPV4_LAYOUT + TCP_LAYOUT + parse_tcp_options.
    assert parse_packet(with_ip_options(pkt, b"\x01\x01\x01\x00")) == parse_packet(pkt) == seg


@SETTINGS
@given(seg=hot_segments())
def test_hot_layouts_build_like_the_general_path(seg: Segment) -> None:
    pkt = build_packet(seg)
    raw_options = build_tcp_options(seg.options)
    header = h.IPV4_CODEC.build(list(h.IPV4_CODEC.parse(pkt))) + h.TCP_CODEC.build(list(h.TCP_CODEC.parse(pkt, 20)))
    assert pkt == header + raw_options + seg.payload
    assert pkt[40 : 40 + len(raw_options)] == raw_options


# ---- canonical option layout (Linux tcp_options_write order) ----------------------------------

LAYOUTS = [
    ("none", TcpOptions(), ""),
    ("ts", TcpOptions(timestamp=(1, 2)), "0101080a0000000100000002"),
    ("mss", TcpOptions(mss=1460), "020405b4"),
    (
        "linux_syn",
        TcpOptions(mss=1460, sack_permitted=True, timestamp=(1, 2), wscale=7),
        "020405b4" + "0402080a0000000100000002" + "01030307",
    ),
    ("sackok_alone", TcpOptions(sack_permitted=True), "01010402"),
    ("syn_no_ts", TcpOptions(mss=536, sack_permitted=True, wscale=0), "02040218" + "01010402" + "01030300"),
    ("wscale", TcpOptions(wscale=14), "0103030e"),
    (
        "ts_sack",
        TcpOptions(timestamp=(3, 4), sack_blocks=((10, 20),)),
        "0101080a0000000300000004" + "0101050a0000000a00000014",
    ),
    ("unknown_padded", TcpOptions(unknown=((30, b"a"),)), "1e036100"),
    ("unknown_two", TcpOptions(unknown=((30, b""), (31, b"xy"))), "1e02" + "1f047879" + "0000"),
    ("mss_then_unknown", TcpOptions(mss=1, unknown=((254, b"\x00\x01"),)), "02040001" + "fe040001"),
]


@pytest.mark.parametrize(("opts", "hexbytes"), [c[1:] for c in LAYOUTS], ids=[c[0] for c in LAYOUTS])
def test_canonical_option_bytes(opts: TcpOptions, hexbytes: str) -> None:
    raw = build_tcp_options(opts)
    assert raw.hex() == hexbytes
    assert parse_tcp_options(raw) == opts


@pytest.mark.parametrize(("with_ts", "kept"), [(True, 3), (False, 4)])
def test_excess_sack_blocks_are_dropped_from_the_end(with_ts: bool, kept: int) -> None:
    blocks = tuple((i * 100, i * 100 + 50) for i in range(6))
    opts = TcpOptions(sack_blocks=blocks, timestamp=(7, 8) if with_ts else None)
    seg = Segment("10.0.0.1", "10.0.0.2", 1, 2, 3, 4, ACK, 5, options=opts, payload=b"data")
    pkt = build_packet(seg)
    assert (pkt[32] >> 4) * 4 <= 60
    got = parse_packet(pkt)
    assert got.options.sack_blocks == blocks[:kept]
    assert got.options.timestamp == opts.timestamp
    assert got.payload == b"data"


def test_sack_blocks_make_room_for_other_options() -> None:
    opts = TcpOptions(mss=1, wscale=2, timestamp=(1, 2), sack_blocks=((1, 2), (3, 4), (5, 6)))
    got = parse_tcp_options(build_tcp_options(opts))
    # MSS 4 + NOP NOP TS 12 + NOP WS 4 = 20 used; NOP NOP SACK header 4; 16 left = two blocks.
    assert got.sack_blocks == ((1, 2), (3, 4))
    assert got.mss == 1 and got.wscale == 2 and got.timestamp == (1, 2)


def test_options_that_cannot_fit_are_an_error() -> None:
    opts = TcpOptions(mss=1, timestamp=(1, 2), unknown=((30, bytes(30)),))
    with pytest.raises(ValueError, match="40"):
        build_tcp_options(opts)
    with pytest.raises(ValueError):
        build_packet(Segment("1.2.3.4", "5.6.7.8", 1, 2, 3, options=opts))


@pytest.mark.parametrize(
    "seg",
    [
        Segment("1.2.3.4", "5.6.7.8", 70000, 2, 3),
        Segment("1.2.3.4", "5.6.7.8", 1, 2, -1),
        Segment("1.2.3.4", "5.6.7.8", 1, 2, 3, window=1 << 16),
        Segment("1.2.3.4", "5.6.7.8", 1, 2, 3, flags=256),
        Segment("1.2.3.4", "5.6.7.8", 1, 2, 3, options=TcpOptions(timestamp=(1 << 32, 0))),
        Segment("1.2.3.4", "5.6.7.8", 1, 2, 3, options=TcpOptions(mss=1 << 16)),
        Segment("1.2.3.4", "5.6.7.8", 1, 2, 3, options=TcpOptions(wscale=-1)),
        Segment("1.2.3.4", "5.6.7.8", 1, 2, 3, options=TcpOptions(sack_blocks=((1, 1 << 32),))),
        Segment("1.2.3.4", "5.6.7.8", 1, 2, 3, options=TcpOptions(unknown=((256, b""),))),
        Segment("1.2.3", "5.6.7.8", 1, 2, 3),
        Segment("1.2.3.4", "::1", 1, 2, 3),
        Segment("1.2.3.4", "5.6.7.8", 1, 2, 3, payload=bytes(65536 - 40)),
    ],
    ids=lambda s: s.summary(),
)
def test_unencodable_segments_raise_value_error(seg: Segment) -> None:
    with pytest.raises(ValueError):
        build_packet(seg)


def test_ttl_and_ident_out_of_range() -> None:
    seg = Segment("1.2.3.4", "5.6.7.8", 1, 2, 3)
    with pytest.raises(ValueError):
        build_packet(seg, ttl=256)
    with pytest.raises(ValueError):
        build_packet(seg, ident=-1)


def test_known_example_packet() -> None:
    seg = Segment(
        "10.0.0.1",
        "10.0.0.2",
        1234,
        80,
        1000,
        2000,
        ACK | PSH,
        65535,
        options=TcpOptions(timestamp=(5, 6)),
        payload=b"hello",
    )
    assert build_packet(seg, ident=0).hex() == (
        "4500003900004000400626bd0a0000010a000002"
        "04d20050000003e8000007d08018ffff0df70000"
        "0101080a0000000500000006" + b"hello".hex()
    )
    syn = Segment(
        "10.0.0.1",
        "10.0.0.2",
        1234,
        80,
        1000,
        0,
        SYN,
        65535,
        options=TcpOptions(mss=1460, wscale=7, sack_permitted=True, timestamp=(5, 6)),
    )
    assert build_packet(syn)[40:].hex() == "020405b40402080a000000050000000601030307"


# ---- build_tcp_options == the canonical order spelled out with TCP_OPTION -----------------------


def reference_build_options(opts: TcpOptions) -> bytes:
    """The documented canonical layout, each option built by the non-compiled TCP_OPTION."""

    def opt(kind: int, length: int, value: object = None) -> dict[str, object]:
        return {"kind": kind, "length": length, "value": value}

    nop = opt(h.OPT_NOP, 1)
    items = []
    if opts.mss is not None:
        items.append(opt(h.OPT_MSS, 4, opts.mss))
    if opts.timestamp is not None:
        items += [opt(h.OPT_SACK_PERMITTED, 2)] if opts.sack_permitted else [nop, nop]
        items.append(opt(h.OPT_TIMESTAMP, 10, list(opts.timestamp)))
    elif opts.sack_permitted:
        items += [nop, nop, opt(h.OPT_SACK_PERMITTED, 2)]
    if opts.wscale is not None:
        items += [nop, opt(h.OPT_WSCALE, 3, opts.wscale)]
    unknown = b"".join(h.TCP_OPTION.build(opt(k, 2 + len(d), d)) for k, d in opts.unknown)
    used = sum(len(h.TCP_OPTION.build(item)) for item in items)
    blocks = list(opts.sack_blocks)
    while blocks and used + 4 + 8 * len(blocks) + len(unknown) + (-len(unknown) % 4) > 40:
        blocks.pop()  # RFC 2018 §4: the first block is the most recent; drop from the end
    if blocks:
        items += [nop, nop, opt(h.OPT_SACK, 2 + 8 * len(blocks), [list(b) for b in blocks])]
    raw = b"".join(h.TCP_OPTION.build(item) for item in items) + unknown
    raw += b"".join(h.TCP_OPTION.build(opt(h.OPT_EOL, 1)) for _ in range(-len(raw) % 4))
    if len(raw) > 40:
        raise ValueError("too long")
    return raw


@settings(max_examples=300, deadline=None)
@given(
    opts=st.builds(
        TcpOptions,
        mss=st.none() | u16,
        wscale=st.none() | st.integers(0, 255),
        sack_permitted=st.booleans(),
        sack_blocks=st.lists(st.tuples(u32, u32), max_size=6).map(tuple),
        timestamp=st.none() | st.tuples(u32, u32),
        unknown=st.lists(unknown_options, max_size=3).map(tuple),
    )
)
def test_build_tcp_options_equals_construct_reference(opts: TcpOptions) -> None:
    try:
        expected = reference_build_options(opts)
    except ValueError:
        with pytest.raises(ValueError):
            build_tcp_options(opts)
        return
    assert build_tcp_options(opts) == expected


# ---- whole packets == the named Structs, built and parsed the plain construct way ---------------


@SETTINGS
@given(seg=segments(), ttl=st.integers(0, 255), ident=u16, df=st.booleans())
def test_build_packet_equals_named_structs(seg: Segment, ttl: int, ident: int, df: bool) -> None:
    assert_built_like_named_structs(seg, ttl, ident, df)


@SETTINGS
@given(seg=fast_path_segments(), ttl=st.integers(0, 255), ident=u16, df=st.booleans())
def test_fast_path_build_equals_named_structs(seg: Segment, ttl: int, ident: int, df: bool) -> None:
    assert_built_like_named_structs(seg, ttl, ident, df)


def assert_built_like_named_structs(seg: Segment, ttl: int, ident: int, df: bool) -> None:
    pkt = build_packet(seg, ttl=ttl, ident=ident, dont_fragment=df)
    options = reference_build_options(seg.options)
    src4, dst4 = socket.inet_aton(seg.src_addr), socket.inet_aton(seg.dst_addr)
    ip = {
        "version_ihl": 0x45,
        "tos": 0,
        "total_length": 40 + len(options) + len(seg.payload),
        "identification": ident,
        "flags_fragment": h.IP_DF if df else 0,
        "ttl": ttl,
        "protocol": h.IPPROTO_TCP,
        "header_checksum": int.from_bytes(pkt[10:12], "big"),  # verified just below
        "src": src4,
        "dst": dst4,
    }
    tcp = reference_tcp_header(seg, options, int.from_bytes(pkt[36:38], "big"))
    assert pkt == h.IPV4_HEADER.build(ip) + h.TCP_HEADER.build(tcp) + options + seg.payload
    assert internet_checksum(pkt[:20]) == 0
    assert tcp_checksum_ipv4(src4, dst4, pkt[20:]) == 0


def reference_tcp_header(seg: Segment, options: bytes, checksum: int) -> dict[str, int]:
    """TCP_HEADER's fields of `seg` with its option area `options`, for either family; the checksum
    is the packet's own (the caller verifies it)."""
    return {
        "src_port": seg.src_port,
        "dst_port": seg.dst_port,
        "seq": seg.seq,
        "ack": seg.ack,
        "data_offset": (20 + len(options)) // 4 << 4,
        "flags": seg.flags,
        "window": seg.window,
        "checksum": checksum,
        "urgent": seg.urgent,
    }


def reference_parse_packet(pkt: bytes) -> Segment:
    """A valid packet decoded with the non-compiled named Structs (no validation)."""
    ip = h.IPV4_HEADER.parse(pkt)
    ihl = (ip.version_ihl & 0x0F) * 4
    tcp = h.TCP_HEADER.parse(pkt[ihl:])
    doff = (tcp.data_offset >> 4) * 4
    return Segment(
        socket.inet_ntoa(ip.src),
        socket.inet_ntoa(ip.dst),
        tcp.src_port,
        tcp.dst_port,
        tcp.seq,
        tcp.ack,
        tcp.flags,
        tcp.window,
        tcp.urgent,
        reference_parse_options(pkt[ihl + 20 : ihl + doff]),
        pkt[ihl + doff : ip.total_length],
    )


@SETTINGS
@given(seg=segments(), ip_option_words=st.sampled_from([0, 0, 1, 10]), padding=st.binary(max_size=4))
def test_parse_packet_equals_named_structs(seg: Segment, ip_option_words: int, padding: bytes) -> None:
    pkt = build_packet(seg)
    if ip_option_words:
        pkt = with_ip_options(pkt, b"\x01" * (4 * ip_option_words))
    pkt += padding
    assert parse_packet(pkt) == reference_parse_packet(pkt) == seg


@SETTINGS
@given(seg=fast_path_segments(), verify=st.booleans())
def test_fast_path_parse_equals_named_structs(seg: Segment, verify: bool) -> None:
    pkt = build_packet(seg)
    assert parse_packet(pkt, verify_checksums=verify) == reference_parse_packet(pkt) == seg


@SETTINGS
@given(seg=segments(options=syn_options()), data=st.data())
def test_near_syn_option_areas_parse_like_the_general_path(seg: Segment, data: st.DataObject) -> None:
    # The same 20 octets with one kind or length octet changed: no longer the SYN layout, so the
    # general path (or a malformed-option error) decides, exactly as the reference does.
    pkt = bytearray(build_packet(seg))
    at = data.draw(st.sampled_from([40, 41, 44, 45, 46, 47, 56, 57, 58]))
    pkt[at] = data.draw(st.integers(0, 255))
    pkt = fix_checksums(pkt)
    try:
        expected = reference_parse_packet(bytes(pkt))
    except (MalformedPacket, ConstructError):
        with pytest.raises(MalformedPacket):
            parse_packet(bytes(pkt))
        return
    assert parse_packet(bytes(pkt)) == expected


# ---- parse_tcp_options == a plain construct loop -----------------------------------------------


def reference_parse_options(raw: bytes) -> TcpOptions:
    """Option decoding done by the non-compiled TCP_OPTION construct alone, with its own errors."""
    opts = TcpOptions()
    unknown = []
    stream = BytesIO(raw)
    while stream.tell() < len(raw):
        try:
            opt = h.TCP_OPTION.parse_stream(stream)
        except CheckError as exc:
            raise MalformedPacket(Reason.BAD_OPTION_LENGTH, "length < 2") from exc
        except StreamError as exc:
            raise MalformedPacket(Reason.BAD_OPTION_LENGTH, "overrun") from exc
        if opt.kind == h.OPT_EOL:
            break
        if isinstance(opt.value, bytes):
            unknown.append((opt.kind, opt.value))
        elif opt.kind == h.OPT_MSS:
            opts.mss = opt.value
        elif opt.kind == h.OPT_WSCALE:
            opts.wscale = opt.value
        elif opt.kind == h.OPT_SACK_PERMITTED:
            opts.sack_permitted = True
        elif opt.kind == h.OPT_TIMESTAMP:
            opts.timestamp = tuple(opt.value)
        elif opt.kind == h.OPT_SACK:
            opts.sack_blocks = tuple(tuple(b) for b in opt.value)
    opts.unknown = tuple(unknown)
    return opts


option_soup = st.lists(
    st.sampled_from(
        [
            b"\x00",
            b"\x01",
            b"\x02\x04\x05\xb4",
            b"\x03\x03\x07",
            b"\x04\x02",
            b"\x08\x0a" + bytes(range(8)),
            b"\x05\x0a" + bytes(range(8)),
            b"\x05\x12" + bytes(range(16)),
            b"\x1e\x03x",
            b"\x02\x00",
            b"\x02\x01",
            b"\x08\x09" + bytes(7),
            b"\x05\x02",
            b"\x02",
        ]
    ),
    max_size=8,
).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(raw=st.one_of(option_soup, st.binary(max_size=40)))
def test_parse_tcp_options_equals_construct_reference(raw: bytes) -> None:
    try:
        expected = reference_parse_options(raw)
    except MalformedPacket as exc:
        with pytest.raises(MalformedPacket) as info:
            parse_tcp_options(raw)
        assert info.value.reason == exc.reason
        return
    except ConstructError:  # the reference has no other failure mode; make that visible
        raise
    assert parse_tcp_options(raw) == expected


def test_later_duplicate_option_wins() -> None:
    raw = bytes.fromhex("020405b4" + "02040218")
    assert parse_tcp_options(raw).mss == 536


def test_options_after_eol_are_ignored() -> None:
    assert parse_tcp_options(bytes.fromhex("00020405b4")) == TcpOptions()
    assert parse_tcp_options(bytes.fromhex("010100ff")) == TcpOptions()


def test_struct_reference_point_agrees() -> None:
    # The benchmark's struct.unpack_from reference reads the same fields as PLAIN_LAYOUT.
    pkt = build_packet(Segment("1.2.3.4", "5.6.7.8", 1, 2, 3, 4, ACK, 5))
    assert list(struct.unpack_from(h.PLAIN_LAYOUT.packer.format, pkt)) == list(h.PLAIN_CODEC.parse(pkt))
