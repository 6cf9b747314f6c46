"""The decoded form of one TCP segment, shared by the wire layer and the TCP core.

The core never sees raw bytes: `stack.wire.parse` turns what the TUN device delivers into a `Segment`
and `stack.wire.build` turns a `Segment` back into an IPv4 or IPv6 packet. Keeping this type free of construct
lets the core stay a pure state machine that tests can drive with hand-built segments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntFlag

from stack.wire.address import endpoint


class Flags(IntFlag):
    """TCP control bits (RFC 9293 §3.1, RFC 3168 for ECE/CWR)."""

    FIN = 0x01
    SYN = 0x02
    RST = 0x04
    PSH = 0x08
    ACK = 0x10
    URG = 0x20
    ECE = 0x40
    CWR = 0x80


# Plain ints for the hot paths (an IntFlag operation costs far more than an int one).
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = (int(flag) for flag in Flags)

_FLAG_LETTERS = (("F", FIN), ("S", SYN), ("R", RST), ("P", PSH), ("A", ACK), ("U", URG), ("E", ECE), ("C", CWR))


def flags_text(flags: int) -> str:
    """Flags as tcpdump-like letters, e.g. 'FA' for FIN|ACK ('.' for none)."""
    text = "".join(letter for letter, bit in _FLAG_LETTERS if flags & bit)
    return text or "."


def parse_flags_text(text: str) -> int:
    """Inverse of `flags_text`: 'SA' -> SYN|ACK. Raises ValueError on an unknown letter."""
    if text == ".":
        return 0
    value = 0
    letters = dict(_FLAG_LETTERS)
    for letter in text.upper():
        if letter not in letters:
            raise ValueError(f"unknown TCP flag letter {letter!r} (use F S R P A U E C)")
        value |= letters[letter]
    return value


@dataclass(slots=True)
class TcpOptions:
    """TCP options of one segment (RFC 9293 §3.2, RFC 7323, RFC 2018).

    `None` / empty means the option is absent. `unknown` keeps options this stack does not interpret
    as (kind, data) so they survive a parse/build round trip.
    """

    mss: int | None = None
    wscale: int | None = None
    sack_permitted: bool = False
    sack_blocks: tuple[tuple[int, int], ...] = ()
    timestamp: tuple[int, int] | None = None  # (TSval, TSecr)
    unknown: tuple[tuple[int, bytes], ...] = ()

    def is_empty(self) -> bool:
        return (
            self.mss is None
            and self.wscale is None
            and not self.sack_permitted
            and not self.sack_blocks
            and self.timestamp is None
            and not self.unknown
        )


NO_OPTIONS = TcpOptions()


@dataclass(slots=True)
class Segment:
    """One TCP segment with the addresses it travels between.

    Addresses are canonical text of either family: a dotted quad, or IPv6 in RFC 5952's compressed
    form (what `socket.inet_ntop` gives), so equal addresses are equal strings. Both are one family.

    `window` is the raw 16-bit field as on the wire; scaling is the connection's business.
    """

    src_addr: str
    dst_addr: str
    src_port: int
    dst_port: int
    seq: int
    ack: int = 0
    flags: int = 0
    window: int = 0
    urgent: int = 0
    options: TcpOptions = field(default_factory=TcpOptions)
    payload: bytes = b""

    @property
    def seg_len(self) -> int:
        """SEG.LEN of RFC 9293: payload octets plus one each for SYN and FIN."""
        return len(self.payload) + (1 if self.flags & SYN else 0) + (1 if self.flags & FIN else 0)

    def summary(self) -> str:
        """A one-line tcpdump-like description, for traces and failing tests."""
        parts = [
            f"{endpoint(self.src_addr, self.src_port)} > {endpoint(self.dst_addr, self.dst_port)}",
            f"[{flags_text(self.flags)}]",
            f"seq={self.seq}",
        ]
        if self.flags & ACK:
            parts.append(f"ack={self.ack}")
        parts.append(f"win={self.window}")
        if self.payload:
            parts.append(f"len={len(self.payload)}")
        opts = self.options
        if opts.mss is not None:
            parts.append(f"mss={opts.mss}")
        if opts.wscale is not None:
            parts.append(f"wscale={opts.wscale}")
        if opts.sack_permitted:
            parts.append("sackOK")
        if opts.sack_blocks:
            parts.append("sack=" + ",".join(f"{a}-{b}" for a, b in opts.sack_blocks))
        if opts.timestamp is not None:
            parts.append(f"ts={opts.timestamp[0]}/{opts.timestamp[1]}")
        return " ".join(parts)
