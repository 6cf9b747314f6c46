"""construct definitions of the IPv4, IPv6 and TCP headers and the TCP options: the single source of truth.

Everything byte-level in `stack.wire` comes from the named `Struct`s below. They use flat,
byte-aligned fields only (no BitStruct: bit fields cost ~5x more to parse). Sub-byte fields are
carried as whole octets and split with the masks defined next to them.

The hot path does not call `Struct.parse`. A compiled Struct builds two Containers (an ordered
dict subclass) per call, writes every field twice and calls struct once per field: ~2.5 µs for
the 52-octet header block before any TCP logic runs. Instead `layout()` turns the same subcons
into a `FlatSequence`: a construct `Sequence` whose compiled form reads all its fixed-width
fields with one precompiled `struct.Struct` whose format is derived from the subcons themselves.
Two such layouts cover almost every segment of an established connection:

* `PLAIN_LAYOUT`: IPv4 header without IP options + TCP header without TCP options (40 octets);
* `TS_LAYOUT`: the same followed by NOP, NOP, Timestamps -- the RFC 7323 Appendix A layout that
  Linux puts on every segment once timestamps are negotiated (52 octets).

`PLAIN6_LAYOUT` and `TS6_LAYOUT` are the same two behind an IPv6 header without extension headers.

Anything else (IP options, SYN options, SACK) takes the general path: `IPV4_LAYOUT` and
`TCP_LAYOUT`, then the option area option by option. Each option the `TCP_OPTION` switch
interprets has its own FlatSequence in `OPTION_LAYOUTS` (kind, length, then the leaf fields of
its value construct, derived from `OPTION_VALUES`); anything else goes through the compiled
`TCP_OPTION` itself. tests/wire proves, with hypothesis, that every FlatSequence parses and
builds exactly like the stock construct it was derived from, and that the hot layouts agree
with the general path.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from io import BytesIO
from typing import Any

from construct import (
    Array,
    Bytes,
    Check,
    Computed,
    Const,
    Container,
    FormatField,
    IfThenElse,
    Int8ub,
    Int16ub,
    Int32ub,
    Pass,
    Sequence,
    Struct,
    Switch,
    this,
)

# ---------------------------------------------------------------------------------------------
# IPv4 (RFC 791 §3.1)
# ---------------------------------------------------------------------------------------------

IPV4_HEADER = Struct(
    "version_ihl" / Int8ub,  # Version (high nibble) | IHL in 32-bit words (low nibble)
    "tos" / Int8ub,  # Type of Service (DSCP | ECN today, RFC 2474 / RFC 3168)
    "total_length" / Int16ub,  # header + data, in octets
    "identification" / Int16ub,
    "flags_fragment" / Int16ub,  # reserved | DF | MF | 13-bit Fragment Offset (8-octet units)
    "ttl" / Int8ub,
    "protocol" / Int8ub,
    "header_checksum" / Int16ub,  # RFC 1071 sum over the header only
    "src" / Bytes(4),
    "dst" / Bytes(4),
)
IPV4_MIN_HEADER = 20
IPV4_VERSION = 4
IP_DF = 0x4000  # Don't Fragment
IP_MF = 0x2000  # More Fragments
IP_OFFSET_MASK = 0x1FFF
IPPROTO_TCP = 6
IP_MAX_TOTAL_LENGTH = 0xFFFF

# ---------------------------------------------------------------------------------------------
# IPv6 (RFC 8200 §3, §4)
# ---------------------------------------------------------------------------------------------

IPV6_HEADER = Struct(
    "version_class_flow" / Int32ub,  # Version (4 bits) | Traffic Class (8) | Flow Label (20)
    "payload_length" / Int16ub,  # octets after this 40-octet header: extension headers + upper layer
    "next_header" / Int8ub,  # the first extension header, or the upper-layer protocol
    "hop_limit" / Int8ub,
    "src" / Bytes(16),
    "dst" / Bytes(16),
)
IPV6_HEADER_SIZE = 40
IPV6_VERSION = 6
IPV6_VERSION_SHIFT = 28  # the version's place in version_class_flow

# Extension headers this stack walks over (RFC 8200 §4.1). Hop-by-Hop Options, Routing and
# Destination Options share one frame: next header, length in 8-octet units not counting the
# first 8, then the body. None of them asks anything of a host that is not a router or the
# final destination of a routing header it would have to act on, so they are skipped by length.
IPV6_HOP_BY_HOP = 0
IPV6_ROUTING = 43
IPV6_FRAGMENT = 44
IPV6_DEST_OPTIONS = 60
IPV6_NO_NEXT_HEADER = 59
IPV6_EXT_UNIT = 8

IPV6_EXT_PREFIX = Struct(
    "next_header" / Int8ub,
    "hdr_ext_len" / Int8ub,  # (length in octets / 8) - 1
)
# The whole frame, for reference and tests; the parser reads the prefix and skips the body.
IPV6_OPTIONS_EXT = Struct(
    "next_header" / Int8ub,
    "hdr_ext_len" / Int8ub,
    "body" / Bytes(this.hdr_ext_len * IPV6_EXT_UNIT + IPV6_EXT_UNIT - 2),
)
# RFC 8200 §4.5: the Fragment header is always 8 octets.
IPV6_FRAGMENT_EXT = Struct(
    "next_header" / Int8ub,
    "reserved" / Int8ub,
    "offset_flags" / Int16ub,  # 13-bit Fragment Offset (8-octet units) | 2 reserved bits | M
    "identification" / Int32ub,
)
IPV6_FRAGMENT_SIZE = 8
IPV6_FRAG_OFFSET_MASK = 0xFFF8
IPV6_FRAG_M = 0x0001
# RFC 8200 §4.1: each extension header at most once, Destination Options at most twice (before
# a Routing header and before the upper layer). A chain with more is treated as a loop.
IPV6_EXT_MAX_COUNT = {IPV6_HOP_BY_HOP: 1, IPV6_ROUTING: 1, IPV6_FRAGMENT: 1, IPV6_DEST_OPTIONS: 2}

# ---------------------------------------------------------------------------------------------
# TCP (RFC 9293 §3.1)
# ---------------------------------------------------------------------------------------------

TCP_HEADER = Struct(
    "src_port" / Int16ub,
    "dst_port" / Int16ub,
    "seq" / Int32ub,
    "ack" / Int32ub,
    "data_offset" / Int8ub,  # Data Offset in 32-bit words (high nibble) | reserved (low nibble)
    "flags" / Int8ub,  # CWR ECE URG ACK PSH RST SYN FIN, same bits as segment.Flags
    "window" / Int16ub,
    "checksum" / Int16ub,  # over pseudo-header + header + payload
    "urgent" / Int16ub,
)
TCP_MIN_HEADER = 20
TCP_MAX_HEADER = 60  # Data Offset is 4 bits of 32-bit words
TCP_MAX_OPTION_SPACE = TCP_MAX_HEADER - TCP_MIN_HEADER

# ---------------------------------------------------------------------------------------------
# TCP options (RFC 9293 §3.2, RFC 7323, RFC 2018)
# ---------------------------------------------------------------------------------------------

OPT_EOL = 0  # End of Option List, one octet (RFC 9293 §3.2)
OPT_NOP = 1  # No-Operation, one octet, used to align later options
OPT_MSS = 2  # Maximum Segment Size, length 4 (RFC 9293 §3.2 / §3.7.1)
OPT_WSCALE = 3  # Window Scale shift count, length 3 (RFC 7323 §2.2)
OPT_SACK_PERMITTED = 4  # length 2 (RFC 2018 §2)
OPT_SACK = 5  # length 2 + 8n, n >= 1 blocks of (left edge, right edge) (RFC 2018 §3)
OPT_TIMESTAMP = 8  # TSval, TSecr, length 10 (RFC 7323 §3.2)

# Largest SACK option: 2 + 8 * 4 = 34 octets, the most a 40-octet option space can hold.
SACK_MAX_BLOCKS = 4

SACK_BLOCK = Sequence(Int32ub, Int32ub)  # (left edge, right edge), RFC 2018 §3


def option_key(kind: int, length: int) -> int:
    """The `TCP_OPTION` switch key: an option is only interpreted at its specified length."""
    return kind << 8 | length


# An option whose kind is known but whose length is not the one its RFC specifies is not
# interpreted (Linux ignores such options too) and falls to the default case, kept verbatim as
# (kind, bytes) like an unknown option.
OPTION_VALUES = {
    option_key(OPT_EOL, 1): Pass,
    option_key(OPT_NOP, 1): Pass,
    option_key(OPT_MSS, 4): Int16ub,
    option_key(OPT_WSCALE, 3): Int8ub,
    option_key(OPT_SACK_PERMITTED, 2): Pass,
    option_key(OPT_TIMESTAMP, 10): Sequence(Int32ub, Int32ub),
    **{option_key(OPT_SACK, 2 + 8 * n): Array(n, SACK_BLOCK) for n in range(1, SACK_MAX_BLOCKS + 1)},
}

TCP_OPTION = Struct(
    "kind" / Int8ub,
    # RFC 9293 §3.2: EOL and NOP are a single octet; every other option has a length octet that
    # counts the kind and length octets too. `length` is the option's total size either way.
    "length" / IfThenElse(this.kind <= OPT_NOP, Computed(1), Int8ub),
    Check((this.kind <= OPT_NOP) | (this.length >= 2)),
    "value" / Switch(this.kind * 256 + this.length, OPTION_VALUES, default=Bytes(this.length - 2)),
)

# ---------------------------------------------------------------------------------------------
# Positional layouts for the hot path
# ---------------------------------------------------------------------------------------------

# NOP, NOP, kind 8, length 10: the 12-octet timestamp-only option block (RFC 7323 Appendix A).
TS_OPTION_PREFIX = bytes((OPT_NOP, OPT_NOP, OPT_TIMESTAMP, 10))
TS_OPTION_SIZE = 12


def field_names(con: Any) -> tuple[str, ...]:
    """Names of a flat `Struct`'s fields, i.e. the positions of a `layout()` list."""
    return tuple(sc.name for sc in con.subcons)


class FlatSequence(Sequence):  # type: ignore[misc]  # construct is untyped
    """A Sequence of fixed-width, byte-aligned fields that compiles to a single struct call.

    Parsing and building semantics are Sequence's (positional list in, positional list out);
    only the code `compile()` emits differs: one `struct.Struct.unpack` / `pack` over the whole
    run instead of one per field plus a nested context. The struct format is derived from the
    subcons -- `FormatField` contributes its format character, `Bytes(n)` and `Const(bytes)`
    contribute `ns` -- so the construct definition stays the only description of the layout.
    Like all compiled construct code, the compiled parser trusts its input to be long enough.
    """

    def __init__(self, *subcons: Any) -> None:
        super().__init__(*subcons)
        fmt = ">"
        self.consts: list[tuple[int, bytes]] = []
        for index, sc in enumerate(self.subcons):
            if isinstance(sc, FormatField) and sc.fmtstr[0] == ">":
                fmt += sc.fmtstr[1]
            elif isinstance(sc, Bytes) and isinstance(sc.length, int):
                fmt += f"{sc.length}s"
            elif isinstance(sc, Const) and isinstance(sc.value, bytes) and isinstance(sc.subcon, Bytes):
                fmt += f"{len(sc.value)}s"
                self.consts.append((index, sc.value))
            else:
                raise TypeError(f"FlatSequence takes big-endian fixed-width fields only, not {sc!r}")
        self.packer = struct.Struct(fmt)

    def _sizeof(self, context: Any, path: Any) -> int:
        return self.packer.size

    def _emitparse(self, code: Any) -> str:
        fname = f"parse_flatsequence_{code.allocateId()}"
        checks = "".join(
            f"""
                if result[{index}] != {value!r}: raise ConstError"""
            for index, value in self.consts
        )
        code.append(f"""
            {fname}_struct = struct.Struct({self.packer.format!r})
            def {fname}(io, this):
                result = ListContainer({fname}_struct.unpack(io.read({self.packer.size}))){checks}
                return result
        """)
        return f"{fname}(io, this)"

    def _emitbuild(self, code: Any) -> str:
        fname = f"build_flatsequence_{code.allocateId()}"
        # Const fields are written from their value whatever the object holds, as Const does.
        const_at = dict(self.consts)
        args = ", ".join(repr(const_at[i]) if i in const_at else f"obj[{i}]" for i in range(len(self.subcons)))
        code.append(f"""
            {fname}_struct = struct.Struct({self.packer.format!r})
            def {fname}(obj, io, this):
                io.write({fname}_struct.pack({args}))
                return obj
        """)
        return f"{fname}(obj, io, this)"


def layout(*parts: Any) -> Any:
    """A FlatSequence of the given Structs' fields (and extra constructs), in order."""
    subcons: list[Any] = []
    for part in parts:
        if isinstance(part, Struct):
            subcons.extend(sc.subcon for sc in part.subcons)  # drop the Renamed wrapper
        else:
            subcons.append(part)
    return FlatSequence(*subcons)


def flat_fields(con: Any) -> list[Any]:
    """The fixed-width leaf fields of an option value construct, in wire order."""
    if con is Pass:
        return []
    if isinstance(con, FormatField):
        return [con]
    if isinstance(con, Array) and isinstance(con.count, int):
        return flat_fields(con.subcon) * con.count
    if isinstance(con, Sequence):
        return [leaf for sc in con.subcons for leaf in flat_fields(sc)]
    raise TypeError(f"no flat form for {con!r}")


def option_layout(key: int) -> Any:
    """FlatSequence of one interpreted option: kind, length (absent for EOL/NOP), value leaves."""
    head = [Int8ub] if key >> 8 <= OPT_NOP else [Int8ub, Int8ub]
    return FlatSequence(*head, *flat_fields(OPTION_VALUES[key]))


# The timestamp option alone, in the order Linux sends it on every segment after the handshake
# (NOP, NOP, kind 8, length 10, TSval, TSecr): the tail of the timestamp hot layouts.
TS_OPTION_FIELDS = (Const(TS_OPTION_PREFIX), Int32ub, Int32ub)


def hot_layouts(ip_header: Any) -> tuple[Any, Any]:
    """The two hot layouts behind an IP header with no IP options or extension headers: the fixed
    headers alone, and followed by the timestamp option alone."""
    return layout(ip_header, TCP_HEADER), layout(ip_header, TCP_HEADER, *TS_OPTION_FIELDS)


IPV4_FIELDS = field_names(IPV4_HEADER)
TCP_FIELDS = field_names(TCP_HEADER)
IPV4_LAYOUT = layout(IPV4_HEADER)
TCP_LAYOUT = layout(TCP_HEADER)
PLAIN_LAYOUT, TS_LAYOUT = hot_layouts(IPV4_HEADER)
PLAIN_LAYOUT_SIZE = IPV4_MIN_HEADER + TCP_MIN_HEADER
TS_LAYOUT_SIZE = PLAIN_LAYOUT_SIZE + TS_OPTION_SIZE

# The same two hot layouts behind an IPv6 header with no extension headers (60 and 72 octets).
IPV6_FIELDS = field_names(IPV6_HEADER)
IPV6_LAYOUT = layout(IPV6_HEADER)
IPV6_EXT_LAYOUT = layout(IPV6_EXT_PREFIX)
IPV6_FRAGMENT_LAYOUT = layout(IPV6_FRAGMENT_EXT)
PLAIN6_LAYOUT, TS6_LAYOUT = hot_layouts(IPV6_HEADER)
PLAIN6_LAYOUT_SIZE = IPV6_HEADER_SIZE + TCP_MIN_HEADER
TS6_LAYOUT_SIZE = PLAIN6_LAYOUT_SIZE + TS_OPTION_SIZE

# The SYN option block Linux writes (and `stack.wire.build` too, in its canonical order): MSS,
# SACK-permitted, Timestamps, NOP, Window scale -- 20 octets. The handshake's segments of a short
# connection all carry it, so it gets a hot layout of its own, made of the options' own layouts.
SYN_OPTION_KEYS = (
    option_key(OPT_MSS, 4),
    option_key(OPT_SACK_PERMITTED, 2),
    option_key(OPT_TIMESTAMP, 10),
    option_key(OPT_NOP, 1),
    option_key(OPT_WSCALE, 3),
)
_SYN_OPTION_FIELDS = [sc for key in SYN_OPTION_KEYS for sc in option_layout(key).subcons]
SYN_OPTION_SIZE = 20
SYN_LAYOUT = FlatSequence(*PLAIN_LAYOUT.subcons, *_SYN_OPTION_FIELDS)
SYN_LAYOUT_SIZE = PLAIN_LAYOUT_SIZE + SYN_OPTION_SIZE


def _syn_shape() -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Positions in a SYN_LAYOUT list of the options' kind and length octets, their values there,
    and the positions of the values proper (MSS, TSval, TSecr, shift)."""
    shape_at: list[int] = []
    shape: list[int] = []
    values_at: list[int] = []
    at = len(PLAIN_LAYOUT.subcons)
    for key in SYN_OPTION_KEYS:
        head = [key >> 8] if key >> 8 <= OPT_NOP else [key >> 8, key & 0xFF]
        shape_at += range(at, at + len(head))
        shape += head
        n = len(option_layout(key).subcons)
        values_at += range(at + len(head), at + n)
        at += n
    return tuple(shape_at), tuple(shape), tuple(values_at)


SYN_SHAPE_AT, SYN_SHAPE, SYN_VALUES_AT = _syn_shape()

# The same blocks without the IPv4 header: what the builder packs before it knows the checksum.
TCP_TS_LAYOUT = layout(TCP_HEADER, *TS_OPTION_FIELDS)
TCP_SYN_LAYOUT = FlatSequence(*TCP_LAYOUT.subcons, *_SYN_OPTION_FIELDS)


def _root_context(*, parsing: bool) -> Any:
    # The outermost context Construct.parse_stream/build_stream would create. The compiled code
    # only reads it (each Sequence/Struct nests its own), so one instance can be shared.
    ctx = Container()
    ctx._parsing = parsing
    ctx._building = not parsing
    ctx._sizing = False
    ctx._params = ctx
    return ctx


PARSE_CONTEXT = _root_context(parsing=True)
BUILD_CONTEXT = _root_context(parsing=False)


class CompiledCodec:
    """A construct compiled once, with its generated parse/build functions called directly.

    `Construct.parse` adds a context, a stream and error-path bookkeeping per call (~1 µs); the
    functions `compile()` generates take a stream and a context, which we supply ourselves.
    Compiled code trusts the input: `Bytes(n)` does not check that n octets were available, so
    callers guarantee the buffer is long enough before calling `parse`.
    """

    __slots__ = ("build_into", "construct", "parse_stream")

    def __init__(self, construct: Any) -> None:
        self.construct = construct
        compiled = construct.compile()
        self.parse_stream: Callable[[BytesIO, Any], Any] = compiled.parsefunc
        self.build_into: Callable[[Any, BytesIO, Any], Any] = compiled.buildfunc

    def parse(self, data: bytes, offset: int = 0) -> Any:
        stream = BytesIO(data)
        if offset:
            stream.seek(offset)
        return self.parse_stream(stream, PARSE_CONTEXT)

    def build(self, value: Any) -> bytes:
        stream = BytesIO()
        self.build_into(value, stream, BUILD_CONTEXT)
        return stream.getvalue()


IPV4_CODEC = CompiledCodec(IPV4_LAYOUT)
TCP_CODEC = CompiledCodec(TCP_LAYOUT)
PLAIN_CODEC = CompiledCodec(PLAIN_LAYOUT)
TS_CODEC = CompiledCodec(TS_LAYOUT)
IPV6_CODEC = CompiledCodec(IPV6_LAYOUT)
IPV6_EXT_CODEC = CompiledCodec(IPV6_EXT_LAYOUT)
IPV6_FRAGMENT_CODEC = CompiledCodec(IPV6_FRAGMENT_LAYOUT)
PLAIN6_CODEC = CompiledCodec(PLAIN6_LAYOUT)
TS6_CODEC = CompiledCodec(TS6_LAYOUT)
OPTION_CODEC = CompiledCodec(TCP_OPTION)
OPTION_LAYOUTS = {key: option_layout(key) for key in OPTION_VALUES}
OPTION_CODECS = {key: CompiledCodec(flat) for key, flat in OPTION_LAYOUTS.items()}
