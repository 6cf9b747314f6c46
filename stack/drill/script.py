"""The parsed form of a drill script: packetdrill's language, the subset closing and handshake scripts use.

A script is a list of events, each at a time and each one of: a TCP segment the remote peer sends
(`<`, inbound to the side under test), a segment the side under test must send (`>`, outbound), a
system call on the side under test's sockets, or a shell command (`ss`, `sysctl`). Every node keeps
its line and column, so a failure or an unsupported construct points at the script text.

Constructs that packetdrill has but this runner does not implement are parsed into `Unsupported`
records: a target refuses such a script with `SKIP: unsupported X`, never a silent pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from stack.wire.segment import ACK, CWR, ECE, FIN, PSH, RST, SYN, URG


class ScriptError(Exception):
    """A syntax or semantic error in a script: printed as `FILE:LINE:COL: message`."""

    def __init__(self, path: str, line: int, col: int, message: str) -> None:
        super().__init__(f"{path}:{line}:{col}: {message}")
        self.path = path
        self.line = line
        self.col = col
        self.message = message


class TimeKind(Enum):
    ABSOLUTE = "absolute"  # `0.1`: seconds since the script started
    RELATIVE = "relative"  # `+0.1`: seconds since the previous event happened
    ABSOLUTE_RANGE = "absolute range"  # `0.1~0.3` (outbound packets only)
    RELATIVE_RANGE = "relative range"  # `+0.1~+0.3` (outbound packets only)
    ANY = "any"  # `*` (outbound packets only)


@dataclass(frozen=True, slots=True)
class EventTime:
    kind: TimeKind
    start: float = 0.0
    end: float | None = None  # the range's end

    @property
    def relative(self) -> bool:
        return self.kind in (TimeKind.RELATIVE, TimeKind.RELATIVE_RANGE)


# Flag letters as packetdrill writes them: `.` is ACK, `E` ECE and `W` CWR.
FLAG_LETTERS: dict[str, int] = {"F": FIN, "S": SYN, "R": RST, "P": PSH, "U": URG, "E": ECE, "W": CWR}


def flags_to_text(flags: int) -> str:
    """Packetdrill's spelling: 'S.', 'F.', 'P.', '.', 'R' (letters in F S R P U E W order, '.' last)."""
    text = "".join(letter for letter, bit in FLAG_LETTERS.items() if flags & bit)
    return text + "." if flags & ACK else (text or "-")


@dataclass(frozen=True, slots=True)
class TcpOption:
    """One TCP option in script order: `kind` is the script word (mss, wscale, sackOK, TS, nop, eol,
    sack); `values` its numbers (TS: val, ecr; sack: left, right, left, right, ...)."""

    kind: str
    values: tuple[int, ...] = ()

    def text(self) -> str:
        if self.kind == "TS":
            return f"TS val {self.values[0]} ecr {self.values[1]}"
        if self.kind == "sack":
            pairs = zip(self.values[::2], self.values[1::2], strict=True)
            return "sack " + " ".join(f"{a}:{b}" for a, b in pairs)
        return " ".join([self.kind, *(str(v) for v in self.values)])


@dataclass(frozen=True, slots=True)
class PacketSpec:
    """`< S. 0:0(0) ack 1 win 65535 <mss 1460>`: numbers in script space (see matcher.SeqMap)."""

    inbound: bool
    flags: int
    seq: int
    length: int
    ack: int  # meaningful when flags has ACK
    window: int | None  # None: not checked (outbound only; inbound packets must say `win`)
    options: tuple[TcpOption, ...] | None  # None: `<...>`, options not checked (outbound only)

    def text(self) -> str:
        parts = [flags_to_text(self.flags), f"{self.seq}:{self.seq + self.length}({self.length})"]
        if self.flags & ACK:
            parts.append(f"ack {self.ack}")
        if self.window is not None:
            parts.append(f"win {self.window}")
        if self.options is None:
            parts.append("<...>")
        elif self.options:
            parts.append("<" + ",".join(o.text() for o in self.options) + ">")
        return " ".join(parts)


# --- system call expressions -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Int:
    value: int
    line: int = 0
    col: int = 0


@dataclass(frozen=True, slots=True)
class Word:
    """A symbol (SOCK_STREAM, SO_LINGER, O_NONBLOCK, ...), resolved by `symbols`."""

    name: str
    line: int = 0
    col: int = 0


@dataclass(frozen=True, slots=True)
class Elided:
    """`...`: an argument whose value does not matter (a buffer, a sockaddr)."""

    line: int = 0
    col: int = 0


@dataclass(frozen=True, slots=True)
class Str:
    value: str
    line: int = 0
    col: int = 0


@dataclass(frozen=True, slots=True)
class ListExpr:
    """`[1]`: the pointed-to value of an option or ioctl."""

    items: tuple[Expr, ...]
    line: int = 0
    col: int = 0


@dataclass(frozen=True, slots=True)
class StructExpr:
    """`{onoff=1, linger=0}`."""

    fields: tuple[tuple[str, Expr], ...]
    line: int = 0
    col: int = 0


@dataclass(frozen=True, slots=True)
class OrExpr:
    """`O_RDWR|O_NONBLOCK`."""

    items: tuple[Expr, ...]
    line: int = 0
    col: int = 0


Expr = Int | Word | Elided | Str | ListExpr | StructExpr | OrExpr


@dataclass(frozen=True, slots=True)
class Syscall:
    """`name(args) = result [ERRNO (note)]`; `end` is the `...END` return time of a blocking call,
    counted from the same origin as the event's start time."""

    name: str
    args: tuple[Expr, ...]
    result: Expr
    errno: str | None
    end: float | None

    def text(self) -> str:
        return f"{self.name}(...)"


@dataclass(frozen=True, slots=True)
class Command:
    """A back-quoted shell line: only `ss` and `sysctl` forms are run (see `commands`)."""

    text: str


Action = PacketSpec | Syscall | Command


@dataclass(frozen=True, slots=True)
class Event:
    line: int
    col: int
    time: EventTime
    action: Action


@dataclass(frozen=True, slots=True)
class Unsupported:
    """A packetdrill construct this runner does not implement: the script is skipped, naming it."""

    what: str
    line: int


@dataclass(frozen=True)
class Script:
    path: str
    events: tuple[Event, ...]
    unsupported: tuple[Unsupported, ...] = ()
    tolerance_usecs: int | None = None  # `--tolerance_usecs=N` at the top of the script

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]
