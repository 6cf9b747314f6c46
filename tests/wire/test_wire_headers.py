"""The construct definitions themselves: field layout, every option kind, and the compiled layouts.

The hot path parses and builds through `FlatSequence`, whose compiled code is one struct call.
These tests are the proof that it is the same construct as the stock `Sequence` of the same
subcons, on random input, so the named Structs remain the single source of truth.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from construct import Bytes, CheckError, Const, ConstError, FormatFieldError, Int8ub, Sequence, Struct, this
from hypothesis import given, settings
from hypothesis import strategies as st

from stack.wire import TcpOptions, build_tcp_options
from stack.wire import headers as h

SETTINGS = settings(max_examples=150, deadline=None)

ALL_LAYOUTS = [
    h.IPV4_LAYOUT, h.TCP_LAYOUT, h.PLAIN_LAYOUT, h.TS_LAYOUT, h.SYN_LAYOUT, h.TCP_TS_LAYOUT, h.TCP_SYN_LAYOUT,
    h.IPV6_LAYOUT, h.IPV6_EXT_LAYOUT, h.IPV6_FRAGMENT_LAYOUT, h.PLAIN6_LAYOUT, h.TS6_LAYOUT,
]
LAYOUT_IDS = ["ipv4", "tcp", "plain", "ts", "syn", "tcp_ts", "tcp_syn",
              "ipv6", "ipv6_ext", "ipv6_fragment", "plain6", "ts6"]


def stock(flat: Any) -> Any:
    """The same subcons as a plain construct Sequence, compiled the standard way."""
    return Sequence(*flat.subcons).compile()


def values_for(flat: Any) -> st.SearchStrategy[list[Any]]:
    """Random valid values for each field of a FlatSequence."""
    fields: list[st.SearchStrategy[Any]] = []
    for sc in flat.subcons:
        if isinstance(sc, Const):
            fields.append(st.none())
        elif isinstance(sc, Bytes):
            fields.append(st.binary(min_size=sc.length, max_size=sc.length))
        else:
            fields.append(st.integers(0, 2 ** (8 * sc.sizeof()) - 1))
    return st.tuples(*fields).map(list)


# ---- field layout -----------------------------------------------------------------------------


def test_ipv4_header_fields_follow_rfc791() -> None:
    assert h.IPV4_HEADER.sizeof() == 20
    assert h.IPV4_FIELDS == (
        "version_ihl",
        "tos",
        "total_length",
        "identification",
        "flags_fragment",
        "ttl",
        "protocol",
        "header_checksum",
        "src",
        "dst",
    )
    raw = bytes.fromhex("4500003c1c4640004006b1e6ac100a63ac100a0c")
    hdr = h.IPV4_HEADER.parse(raw)
    assert hdr.version_ihl == 0x45
    assert hdr.total_length == 60
    assert hdr.identification == 0x1C46
    assert hdr.flags_fragment & h.IP_DF
    assert not hdr.flags_fragment & (h.IP_MF | h.IP_OFFSET_MASK)
    assert (hdr.ttl, hdr.protocol, hdr.header_checksum) == (64, h.IPPROTO_TCP, 0xB1E6)
    assert (hdr.src, hdr.dst) == (bytes([172, 16, 10, 99]), bytes([172, 16, 10, 12]))
    assert h.IPV4_HEADER.build(hdr) == raw


def test_tcp_header_fields_follow_rfc9293() -> None:
    assert h.TCP_HEADER.sizeof() == 20
    assert h.TCP_FIELDS == (
        "src_port",
        "dst_port",
        "seq",
        "ack",
        "data_offset",
        "flags",
        "window",
        "checksum",
        "urgent",
    )
    raw = bytes.fromhex("0050c3d2deadbeef01020304a0ff7210abcd0007")
    hdr = h.TCP_HEADER.parse(raw)
    assert (hdr.src_port, hdr.dst_port) == (80, 50130)
    assert (hdr.seq, hdr.ack) == (0xDEADBEEF, 0x01020304)
    assert hdr.data_offset >> 4 == 10
    assert hdr.flags == 0xFF  # CWR ECE URG ACK PSH RST SYN FIN all set
    assert (hdr.window, hdr.checksum, hdr.urgent) == (0x7210, 0xABCD, 7)
    assert h.TCP_HEADER.build(hdr) == raw


def test_layout_positions_are_the_struct_fields() -> None:
    assert len(h.PLAIN_LAYOUT.subcons) == len(h.IPV4_FIELDS) + len(h.TCP_FIELDS) == 19
    assert h.PLAIN_LAYOUT.sizeof() == h.PLAIN_LAYOUT_SIZE == 40
    assert h.TS_LAYOUT.sizeof() == h.TS_LAYOUT_SIZE == 52
    raw = bytes(range(40))
    ip = h.IPV4_HEADER.parse(raw[:20])
    tcp = h.TCP_HEADER.parse(raw[20:])
    expected = [ip[n] for n in h.IPV4_FIELDS] + [tcp[n] for n in h.TCP_FIELDS]
    assert list(h.PLAIN_CODEC.parse(raw)) == expected
    assert list(h.IPV4_CODEC.parse(raw)) + list(h.TCP_CODEC.parse(raw, 20)) == expected


def test_flat_sequence_rejects_non_flat_subcons() -> None:
    with pytest.raises(TypeError):
        h.FlatSequence(Int8ub, Bytes(this.n))
    with pytest.raises(TypeError):
        h.FlatSequence(Struct("a" / Int8ub))


# ---- FlatSequence == stock Sequence -----------------------------------------------------------


@pytest.mark.parametrize("flat", ALL_LAYOUTS, ids=LAYOUT_IDS)
@SETTINGS
@given(data=st.data())
def test_flat_parse_equals_stock_sequence(flat: Any, data: st.DataObject) -> None:
    size = flat.sizeof()
    raw = data.draw(st.binary(min_size=size, max_size=size + 8))
    if flat is h.TS_LAYOUT and data.draw(st.booleans()):
        raw = raw[:40] + h.TS_OPTION_PREFIX + raw[44:]  # hit the Const both ways
    if flat is h.TS6_LAYOUT and data.draw(st.booleans()):
        raw = raw[:60] + h.TS_OPTION_PREFIX + raw[64:]
    compiled = h.CompiledCodec(flat)
    try:
        expected = stock(flat).parse(raw)
    except ConstError:
        with pytest.raises(ConstError):
            compiled.parse(raw)
        return
    assert list(compiled.parse(raw)) == list(expected)
    assert list(flat.parse(raw)) == list(expected)  # the non-compiled Sequence path too
    assert list(flat.packer.unpack_from(raw)) == list(expected)  # what the hot paths call


@pytest.mark.parametrize("flat", ALL_LAYOUTS, ids=LAYOUT_IDS)
@SETTINGS
@given(data=st.data())
def test_flat_build_equals_stock_sequence(flat: Any, data: st.DataObject) -> None:
    values = data.draw(values_for(flat))
    assert h.CompiledCodec(flat).build(values) == stock(flat).build(values) == flat.build(values)
    # What the hot paths call: the struct itself, Const fields given their value.
    consts = dict(flat.consts)
    direct = [consts.get(i, v) for i, v in enumerate(values)]
    assert flat.packer.pack(*direct) == stock(flat).build(values)


def test_syn_layout_is_the_canonical_syn_options() -> None:
    # The SYN layout's option block is what build_tcp_options writes for Linux's SYN options.
    opts = build_tcp_options(TcpOptions(mss=1460, wscale=7, sack_permitted=True, timestamp=(1, 2)))
    values = [0] * len(h.SYN_LAYOUT.subcons)
    for at, v in zip(h.SYN_SHAPE_AT, h.SYN_SHAPE, strict=True):
        values[at] = v
    for at, v in zip(h.SYN_VALUES_AT, (1460, 1, 2, 7), strict=True):
        values[at] = v
    values[8] = values[9] = bytes(4)
    assert h.SYN_LAYOUT.packer.pack(*values)[40:] == opts
    assert h.SYN_LAYOUT.sizeof() == h.SYN_LAYOUT_SIZE == 60


def test_flat_build_rejects_out_of_range_like_stock() -> None:
    values = [0] * 9
    values[2] = 1 << 32  # seq does not fit Int32ub
    with pytest.raises(struct.error):
        h.TCP_CODEC.build(values)
    with pytest.raises(struct.error):  # compiled stock code calls struct directly too
        stock(h.TCP_LAYOUT).build(values)
    with pytest.raises(FormatFieldError):  # the interpreted path wraps it
        h.TCP_LAYOUT.build(values)


def test_ts_layout_rejects_other_options() -> None:
    raw = bytes(40) + bytes.fromhex("0101050a") + bytes(8)
    with pytest.raises(ConstError):
        h.TS_CODEC.parse(raw)


# ---- every option kind through TCP_OPTION (RFC 9293 §3.2, RFC 7323, RFC 2018) -----------------

OPTION_CASES = [
    ("eol", "00", h.OPT_EOL, 1, None),
    ("nop", "01", h.OPT_NOP, 1, None),
    ("mss", "020405b4", h.OPT_MSS, 4, 1460),
    ("wscale", "030307", h.OPT_WSCALE, 3, 7),
    ("sack_permitted", "0402", h.OPT_SACK_PERMITTED, 2, None),
    ("timestamp", "080a0000000100000002", h.OPT_TIMESTAMP, 10, [1, 2]),
    ("sack1", "050a0000000a00000014", h.OPT_SACK, 10, [[10, 20]]),
    (
        "sack4",
        "0522" + "".join(f"{i:08x}" for i in range(8)),
        h.OPT_SACK,
        34,
        [[0, 1], [2, 3], [4, 5], [6, 7]],
    ),
    ("unknown", "1e05616263", 30, 5, b"abc"),
    ("unknown_empty", "fd02", 253, 2, b""),
    ("mss_bad_length", "0205050000", h.OPT_MSS, 5, b"\x05\x00\x00"),  # kept verbatim, not MSS
    ("sack_no_blocks", "0502", h.OPT_SACK, 2, b""),
    ("ts_short", "0809" + "00" * 7, h.OPT_TIMESTAMP, 9, bytes(7)),
]


@pytest.mark.parametrize(
    ("hexbytes", "kind", "length", "value"), [c[1:] for c in OPTION_CASES], ids=[c[0] for c in OPTION_CASES]
)
def test_option_round_trip(hexbytes: str, kind: int, length: int, value: Any) -> None:
    raw = bytes.fromhex(hexbytes)
    for codec in (h.TCP_OPTION, h.TCP_OPTION.compile()):
        opt = codec.parse(raw)
        assert (opt.kind, opt.length) == (kind, length)
        got = opt.value
        if isinstance(got, list):
            got = [list(x) if isinstance(x, list) else x for x in got]
        assert got == value
        assert codec.build({"kind": kind, "length": length, "value": value}) == raw
    assert h.OPTION_CODEC.build({"kind": kind, "length": length, "value": value}) == raw
    assert h.OPTION_CODEC.parse(raw)["value"] == h.TCP_OPTION.parse(raw).value


@pytest.mark.parametrize("raw", ["0200", "0201", "fe01"])
def test_option_length_below_two_fails_the_check(raw: str) -> None:
    with pytest.raises(CheckError):
        h.TCP_OPTION.parse(bytes.fromhex(raw))


@SETTINGS
@given(kind=st.integers(2, 255), data=st.binary(max_size=38))
def test_any_option_round_trips_through_construct(kind: int, data: bytes) -> None:
    raw = bytes([kind, len(data) + 2]) + data
    opt = h.OPTION_CODEC.parse(raw)
    assert opt["length"] == len(raw)
    assert h.OPTION_CODEC.build(opt) == raw
    assert h.TCP_OPTION.build(h.TCP_OPTION.parse(raw)) == raw


def test_option_key_matches_switch_expression() -> None:
    # TCP_OPTION switches on `this.kind * 256 + this.length`; option_key must agree.
    for kind in (0, 2, 8, 255):
        for length in (1, 2, 10, 255):
            assert h.option_key(kind, length) == kind * 256 + length


def test_sack_block_is_two_32bit_edges() -> None:
    assert h.SACK_BLOCK.sizeof() == 8
    assert h.SACK_BLOCK.build([1, 2]) == bytes.fromhex("0000000100000002")


# ---- OPTION_LAYOUTS == TCP_OPTION -------------------------------------------------------------


def leaves(value: Any) -> list[Any]:
    """A TCP_OPTION value flattened to its integer leaves (the FlatSequence field order)."""
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [leaf for item in value for leaf in leaves(item)]


OPTION_KEYS = sorted(h.OPTION_LAYOUTS)


def test_option_layouts_cover_exactly_the_interpreted_options() -> None:
    assert set(h.OPTION_LAYOUTS) == set(h.OPTION_VALUES) == set(h.OPTION_CODECS)
    for key, flat in h.OPTION_LAYOUTS.items():
        kind, length = key >> 8, key & 0xFF
        assert flat.sizeof() == length, hex(key)
        head = bytes([kind]) if kind <= h.OPT_NOP else bytes([kind, length])
        zero_value = h.TCP_OPTION.parse(head + bytes(length - len(head))).value
        assert len(flat.subcons) == len(head) + len(leaves(zero_value))


@pytest.mark.parametrize("key", OPTION_KEYS, ids=[f"kind{k >> 8}_len{k & 0xFF}" for k in OPTION_KEYS])
@SETTINGS
@given(data=st.data())
def test_option_layout_parse_equals_tcp_option(key: int, data: st.DataObject) -> None:
    kind, length = key >> 8, key & 0xFF
    head = bytes([kind]) if kind <= h.OPT_NOP else bytes([kind, length])
    raw = head + data.draw(st.binary(min_size=length - len(head), max_size=length - len(head)))
    reference = h.TCP_OPTION.parse(raw)
    flat = list(h.OPTION_CODECS[key].parse(raw))
    assert flat[0] == reference.kind
    assert flat[1 : len(head)] == [reference.length][: len(head) - 1]
    assert flat[len(head) :] == leaves(reference.value)


@pytest.mark.parametrize("key", OPTION_KEYS, ids=[f"kind{k >> 8}_len{k & 0xFF}" for k in OPTION_KEYS])
@SETTINGS
@given(data=st.data())
def test_option_layout_build_equals_tcp_option(key: int, data: st.DataObject) -> None:
    flat = h.OPTION_LAYOUTS[key]
    kind, length = key >> 8, key & 0xFF
    values = data.draw(values_for(flat))
    values[0] = kind
    if kind > h.OPT_NOP:
        values[1] = length
    raw = h.OPTION_CODECS[key].build(values)
    assert raw == flat.build(values)  # the non-compiled Sequence semantics
    reference = h.TCP_OPTION.parse(raw)
    assert leaves(reference.value) == values[(1 if kind <= h.OPT_NOP else 2) :]
    assert h.TCP_OPTION.build(reference) == raw
