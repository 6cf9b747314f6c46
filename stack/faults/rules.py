"""Fault rules: the dataclasses and their one-line text form.

A rule is ``ACTION DIRECTION [POSITIONAL] [key=value ...]``, e.g. ``drop out state=TIME-WAIT nth=1``.
The same rule can be built from Python (`FaultRule(Drop(), "out", states=("TIME-WAIT",), nth=1)`) and
`FaultRule.text` writes the canonical text back, which the parser turns into an equal rule.

Every error is a `FaultRuleError` carrying the 1-based column (and, for a scenario file, the line),
raised while parsing, before any traffic flows. The grammar is documented in `stack/faults/__init__.py`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

from stack.tcp.states import State
from stack.wire.address import network_text
from stack.wire.segment import flags_text, parse_flags_text

DIRECTIONS = ("in", "out")
PROTOS = ("tcp", "icmp")  # what a rule acts on: TCP segments (the default) or ICMP/ICMPv6 datagrams
# The actions and matchers that make sense for an ICMP datagram: nothing that reads or writes TCP.
ICMP_ACTIONS = ("drop", "delay", "dup", "corrupt", "truncate")
_TCP_MATCHERS = ("flags", "flags_exact", "port", "sport", "dport", "addr", "src", "dst", "payload", "states")
INJECT_KINDS = ("rst", "syn", "ack")
SEQ_SPACE = 1 << 32
_MAX_DURATION = 1e9  # ~31 years: anything larger is a typo, and inf would never release a held packet
STATE_NAMES = tuple(s.value for s in State)
# `ss` spellings are accepted too, so a state copied from `tcpstack ss` output works as written.
_STATE_ALIASES = {s.ss_name: s.value for s in State} | {s.value: s.value for s in State}


class FaultRuleError(ValueError):
    """A rule that cannot be used. `column` is 1-based; `line` is set for scenario files."""

    def __init__(self, column: int, reason: str, *, line: int | None = None) -> None:
        self.column = column
        self.reason = reason
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"column {self.column}" if self.line is None else f"line {self.line}, column {self.column}"
        return f"{where}: {self.reason}"

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_error, (self.column, self.reason, self.line))


def _rebuild_error(column: int, reason: str, line: int | None) -> FaultRuleError:
    return FaultRuleError(column, reason, line=line)


# ---------------------------------------------------------------------- values
ADDRESS_KEYS = ("addr", "src", "dst")  # matchers of either / the source / the destination address


def parse_duration(text: str) -> float:
    """'50ms' / '1.5s' / '200us' / '0' -> seconds. Raises ValueError.

    The unit is required (only 0 may go without): a bare '50' in `delay in 50` is far more likely
    meant as 50 ms than as the 50 s it would otherwise be."""
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(us|ms|s)?", text, re.ASCII)
    if m is None:
        raise ValueError(f"bad duration {text!r} (expected e.g. 50ms, 1.5s, 200us)")
    if m.group(2) is None and float(m.group(1)) != 0:
        raise ValueError(f"duration {text!r} needs a unit: {text}ms, {text}s or {text}us")
    exponent = {"us": 6, "ms": 3, "s": 0, None: 0}[m.group(2)]
    # One decimal-to-float conversion (not float(x) / 1000), so the value is correctly rounded and
    # `format_duration` can round-trip it exactly.
    value = float(f"{m.group(1)}e-{exponent}")
    _check_duration("duration", value)
    return value


def format_duration(seconds: float) -> str:
    """Shortest exact text for a duration, in the largest unit that keeps it >= 1 (0 -> '0s')."""
    if seconds == 0:
        return "0s"
    exact = Decimal(repr(seconds))  # repr is the shortest decimal that converts back to `seconds`
    for unit, exponent in (("s", 0), ("ms", 3), ("us", 6)):
        if seconds >= 10.0**-exponent or unit == "us":
            return format(exact.scaleb(exponent).normalize(), "f") + unit
    raise AssertionError("unreachable")


def _check_duration(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value <= _MAX_DURATION):
        raise ValueError(f"{name} must be a duration between 0 and {_MAX_DURATION:g} s, not {value!r}")


def _check_int(name: str, value: int, lo: int, hi: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer from {lo} to {hi}, not {value!r}")


def normalize_state(name: str) -> str:
    """'time_wait', 'TIME-WAIT', 'ESTAB' -> the `State` value ('TIME-WAIT'). Raises ValueError."""
    key = name.upper().replace("_", "-")
    if key not in _STATE_ALIASES:
        raise ValueError(f"unknown state {name!r} (expected one of {', '.join(STATE_NAMES)})")
    return _STATE_ALIASES[key]


# ---------------------------------------------------------------------- actions
# Each action knows its canonical words: `positional` right after the direction, `params` at the
# end. Defining parameters (delay's time, reorder's hold, inject's kind and seq, truncate's length,
# rewrite's changes) are always written; tuning knobs (jitter, copies, timeout, bits) only when
# they differ from their default, so the canonical text stays as short as what people type.
class _Words:
    """Default words of an action: none beyond its name."""

    __slots__ = ()

    def positional(self) -> list[str]:
        return []

    def params(self) -> list[str]:
        return []


@dataclass(frozen=True, slots=True)
class Drop(_Words):
    name: ClassVar[str] = "drop"


@dataclass(frozen=True, slots=True)
class Delay(_Words):
    """Add `delay` seconds, +/- a uniform `jitter` (the sum is clamped at 0)."""

    delay: float
    jitter: float = 0.0
    name: ClassVar[str] = "delay"

    def __post_init__(self) -> None:
        _check_duration("delay", self.delay)
        _check_duration("jitter", self.jitter)

    def positional(self) -> list[str]:
        return [format_duration(self.delay)]

    def params(self) -> list[str]:
        return [f"jitter={format_duration(self.jitter)}"] if self.jitter else []


@dataclass(frozen=True, slots=True)
class Dup(_Words):
    """Send `copies` extra copies right behind the segment."""

    copies: int = 1
    name: ClassVar[str] = "dup"

    def __post_init__(self) -> None:
        _check_int("copies", self.copies, 1, 1000)

    def params(self) -> list[str]:
        return [f"copies={self.copies}"] if self.copies != 1 else []


@dataclass(frozen=True, slots=True)
class Reorder(_Words):
    """Hold the segment until `hold` later segments in the same direction crossed, or `timeout`."""

    hold: int = 1
    timeout: float = 1.0
    name: ClassVar[str] = "reorder"

    def __post_init__(self) -> None:
        _check_int("hold", self.hold, 1, 1_000_000)
        _check_duration("timeout", self.timeout)

    def params(self) -> list[str]:
        return [f"hold={self.hold}"] + ([f"timeout={format_duration(self.timeout)}"] if self.timeout != 1.0 else [])


@dataclass(frozen=True, slots=True)
class Corrupt(_Words):
    """Flip `bits` bits of the TCP header or payload so the TCP checksum no longer verifies."""

    bits: int = 1
    name: ClassVar[str] = "corrupt"

    def __post_init__(self) -> None:
        _check_int("bits", self.bits, 1, 64)

    def params(self) -> list[str]:
        return [f"bits={self.bits}"] if self.bits != 1 else []


@dataclass(frozen=True, slots=True)
class Truncate(_Words):
    """Keep the first `length` bytes of the packet, or cut the last `cut` bytes (exactly one)."""

    length: int | None = None
    cut: int | None = None
    name: ClassVar[str] = "truncate"

    def __post_init__(self) -> None:
        if (self.length is None) == (self.cut is None):
            raise ValueError("truncate needs exactly one of len=N or cut=N")
        if self.length is not None:
            _check_int("len", self.length, 0, 65535)
        if self.cut is not None:
            _check_int("cut", self.cut, 1, 65535)

    def params(self) -> list[str]:
        return [f"len={self.length}"] if self.length is not None else [f"cut={self.cut}"]


@dataclass(frozen=True, slots=True)
class Rewrite(_Words):
    """Change header fields in place (checksum fixed up): window, seq/ack offsets, flags.

    New flags are ``((flags if set_flags is None else set_flags) | add_flags) & ~clear_flags``.
    """

    window: int | None = None
    seq: int = 0
    ack: int = 0
    set_flags: int | None = None
    add_flags: int = 0
    clear_flags: int = 0
    name: ClassVar[str] = "rewrite"

    def __post_init__(self) -> None:
        if self.window is not None:
            _check_int("window", self.window, 0, 65535)
        _check_int("seq", self.seq, -(SEQ_SPACE - 1), SEQ_SPACE - 1)
        _check_int("ack", self.ack, -(SEQ_SPACE - 1), SEQ_SPACE - 1)
        if self.set_flags is not None:
            _check_int("flags", self.set_flags, 0, 0xFF)
        _check_int("flags+", self.add_flags, 0, 0xFF)
        _check_int("flags-", self.clear_flags, 0, 0xFF)
        if (self.window is None and not self.seq and not self.ack and self.set_flags is None
                and not self.add_flags and not self.clear_flags):
            raise ValueError("rewrite needs a change: window=N, seq+=N, ack+=N, flags=F, flags+=F or flags-=F")

    def params(self) -> list[str]:
        out = [] if self.window is None else [f"window={self.window}"]
        for key, delta in (("seq", self.seq), ("ack", self.ack)):
            if delta:
                out.append(f"{key}+={delta}" if delta > 0 else f"{key}-={-delta}")
        if self.set_flags is not None:
            out.append(f"flags={flags_text(self.set_flags)}")
        if self.add_flags:
            out.append(f"flags+={flags_text(self.add_flags)}")
        if self.clear_flags:
            out.append(f"flags-={flags_text(self.clear_flags)}")
        return out


@dataclass(frozen=True, slots=True)
class Inject(_Words):
    """Send an extra `kind` segment behind the matched one, in the same direction, same 4-tuple.

    Its SEQ is the matched segment's SEQ + SEG.LEN (the sender's next sequence number, which is what
    the receiver expects when nothing is missing) plus `seq`. rst: <RST> ACK=0 WIN=0; syn: <SYN> ACK=0,
    the matched window; ack: <ACK> with the matched ACK and window. No options (so no PAWS check).
    """

    kind: str
    seq: int = 0
    name: ClassVar[str] = "inject"

    def __post_init__(self) -> None:
        if self.kind not in INJECT_KINDS:
            raise ValueError(f"unknown inject kind {self.kind!r} (expected {', '.join(INJECT_KINDS)})")
        _check_int("seq", self.seq, -(SEQ_SPACE - 1), SEQ_SPACE - 1)

    def positional(self) -> list[str]:
        return [self.kind]

    def params(self) -> list[str]:
        return [f"seq={self.seq:+d}"]


Action = Drop | Delay | Dup | Reorder | Corrupt | Truncate | Rewrite | Inject
ACTIONS: dict[str, type[Action]] = {
    cls.name: cls for cls in (Drop, Delay, Dup, Reorder, Corrupt, Truncate, Rewrite, Inject)
}


# ---------------------------------------------------------------------- the rule
@dataclass(frozen=True, slots=True, kw_only=True)
class FaultRule:
    """One action, one direction, and matchers that must all hold (unset ones always do).

    `flags`: any of these bits set; `flags_exact`: exactly these. `states`: the stack connection is in
    one of them ('CLOSED' also matches "no connection"). `after`/`before`: seconds since the engine
    started. `nth`/`first`/`every` count the segments that passed every other matcher except `p`,
    per rule over all connections (1-based); `p` is then drawn from the rule's own seeded RNG.
    """

    action: Action
    direction: str
    flags: int | None = None
    flags_exact: int | None = None
    port: int | None = None
    sport: int | None = None
    dport: int | None = None
    addr: str | None = None  # an address or prefix of either family, e.g. 2001:2::/64
    src: str | None = None
    dst: str | None = None
    payload: bool | None = None
    states: tuple[str, ...] = ()
    after: float | None = None
    before: float | None = None
    nth: int | None = None
    first: int | None = None
    every: int | None = None
    p: float | None = None
    seed: int | None = None
    proto: str = "tcp"

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"unknown direction {self.direction!r} (expected 'in' or 'out')")
        if self.proto not in PROTOS:
            raise ValueError(f"unknown proto {self.proto!r} (expected {' or '.join(PROTOS)})")
        if self.proto == "icmp":
            if self.action.name not in ICMP_ACTIONS:
                allowed = ", ".join(ICMP_ACTIONS)
                raise ValueError(f"{self.action.name} acts on TCP segments; proto=icmp allows {allowed}")
            tcp_only = [name for name in _TCP_MATCHERS if getattr(self, name) not in (None, ())]
            if tcp_only:
                raise ValueError(f"proto=icmp cannot match on TCP fields ({', '.join(tcp_only)})")
        if not isinstance(self.action, tuple(ACTIONS.values())):
            raise ValueError(f"not a fault action: {self.action!r}")
        for name in ("flags", "flags_exact"):
            value = getattr(self, name)
            if value is not None:
                _check_int(name, value, 0, 0xFF)
        for name in ("port", "sport", "dport"):
            value = getattr(self, name)
            if value is not None:
                _check_int(name, value, 0, 65535)
        for name in ("nth", "first", "every"):
            value = getattr(self, name)
            if value is not None:
                _check_int(name, value, 1, 1 << 62)
        for name in ADDRESS_KEYS:
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, network_text(value))
        if self.seed is not None:
            _check_int("seed", self.seed, 0, 1 << 64)
        if self.p is not None and not (isinstance(self.p, (int, float)) and 0.0 <= self.p <= 1.0):
            raise ValueError(f"p must be a probability from 0 to 1, not {self.p!r}")
        if isinstance(self.states, str):
            object.__setattr__(self, "states", (self.states,))  # a lone string is one state, not letters
        object.__setattr__(self, "states", tuple(normalize_state(s) for s in self.states))
        for name in ("after", "before"):
            value = getattr(self, name)
            if value is not None:
                _check_duration(name, value)
        if self.after is not None and self.before is not None and self.before <= self.after:
            raise ValueError("before= must be later than after=")

    @property
    def text(self) -> str:
        """The canonical one-line form; `parse_rule(rule.text) == rule`."""
        words = [self.action.name, self.direction, *self.action.positional()]
        if self.proto != "tcp":
            words.append(f"proto={self.proto}")
        if self.flags is not None:
            # In a rewrite, `flags=` is the change, so the "any of" matcher is spelled `has=`.
            key = "has" if isinstance(self.action, Rewrite) else "flags"
            words.append(f"{key}={flags_text(self.flags)}")
        if self.flags_exact is not None:
            words.append(f"flags=={flags_text(self.flags_exact)}")
        for name in ("port", "sport", "dport", *ADDRESS_KEYS):
            value = getattr(self, name)
            if value is not None:
                words.append(f"{name}={value}")
        if self.payload is not None:
            words.append(f"payload={'yes' if self.payload else 'no'}")
        if self.states:
            words.append("state=" + ",".join(self.states))
        for name in ("after", "before"):
            value = getattr(self, name)
            if value is not None:
                words.append(f"{name}={format_duration(value)}")
        for name in ("nth", "first", "every"):
            value = getattr(self, name)
            if value is not None:
                words.append(f"{name}={value}")
        if self.p is not None:
            words.append(f"p={float(self.p)!r}")
        if self.seed is not None:
            words.append(f"seed={self.seed}")
        words += self.action.params()
        return " ".join(words)

    def __str__(self) -> str:
        return self.text

    @classmethod
    def parse(cls, text: str) -> FaultRule:
        return parse_rule(text)


# ---------------------------------------------------------------------- the parser
_TOKEN = re.compile(r"\S+")
_KEY_VALUE = re.compile(r"([a-z][a-z0-9_]*)(==|\+=|-=|=)(.*)", re.ASCII | re.DOTALL)
_UINT = re.compile(r"[0-9]+", re.ASCII)
_OFFSET = re.compile(r"[+-][0-9]+", re.ASCII)
_FLOAT = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?%?", re.ASCII)
_MATCH_KEYS = ("flags", "has", "port", "sport", "dport", "addr", "src", "dst", "payload", "state", "after",
               "before", "nth", "first", "every", "p", "seed", "proto")
_ACTION_KEYS: dict[str, tuple[str, ...]] = {
    "drop": (), "delay": ("jitter",), "dup": ("copies",), "reorder": ("hold", "timeout"), "corrupt": ("bits",),
    "truncate": ("len", "cut"), "rewrite": ("window", "seq", "ack", "flags"), "inject": ("seq",),
}
_INT_RANGES = {"port": (0, 65535), "sport": (0, 65535), "dport": (0, 65535), "nth": (1, 1 << 62),
               "first": (1, 1 << 62), "every": (1, 1 << 62), "seed": (0, 1 << 64), "copies": (1, 1000),
               "hold": (1, 1_000_000), "bits": (1, 64), "len": (0, 65535), "cut": (1, 65535),
               "window": (0, 65535), "seq": (0, SEQ_SPACE - 1), "ack": (0, SEQ_SPACE - 1)}


def _int_value(key: str, text: str, col: int) -> int:
    lo, hi = _INT_RANGES[key]
    if not _UINT.fullmatch(text):
        raise FaultRuleError(col, f"{key} needs an integer, not {text!r}")
    if len(text.lstrip("0")) > 24:  # int() refuses huge digit strings; every limit here is far smaller
        raise FaultRuleError(col, f"{key} must be from {lo} to {hi}, not {text}")
    value = int(text)
    if not lo <= value <= hi:
        limit = f"at least {lo}" if hi >= 1 << 62 else f"from {lo} to {hi}"
        raise FaultRuleError(col, f"{key} must be {limit}, not {value}")
    return value


def _flags_value(key: str, text: str, col: int) -> int:
    if text != ".":
        # Checked here rather than by parse_flags_text: str.upper() maps some non-ASCII letters
        # onto flag letters, and the column should point at the offending letter.
        for i, ch in enumerate(text):
            if ch.upper() not in "FSRPAUEC" or not ch.isascii():
                raise FaultRuleError(col + i, f"{key}: unknown TCP flag letter {ch!r} (use F S R P A U E C, or .)")
    return parse_flags_text(text)


class _Args:
    """Collects key=value words of one rule, remembering where each was, for later errors."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}  # field name -> value, each checked as it was parsed
        self.columns: dict[str, int] = {}

    def put(self, field: str, value: object, col: int, label: str) -> None:
        if field in self.values:
            raise FaultRuleError(col, f"duplicate {label} (first given at column {self.columns[field]})")
        self.values[field] = value
        self.columns[field] = col


def parse_rule(text: str) -> FaultRule:
    """Parse one rule (a trailing ``# comment`` is allowed). Raises `FaultRuleError`."""
    if "\n" in text or "\r" in text:
        raise FaultRuleError(min(i for i in (text.find("\n"), text.find("\r")) if i >= 0) + 1,
                             "a rule is one line (use parse_rules for a scenario file)")
    body = text.split("#", 1)[0]
    tokens = [(m.group(), m.start() + 1) for m in _TOKEN.finditer(body)]
    end_col = len(body.rstrip()) + 2  # where a missing word would go: one space after the last one
    if not tokens:
        raise FaultRuleError(1, "empty rule (expected e.g. 'drop in flags=F nth=1')")
    word, col = tokens[0]
    if word not in ACTIONS:
        raise FaultRuleError(col, f"unknown action {word!r} (expected one of {', '.join(ACTIONS)})")
    action_name = word
    action_col = col
    if len(tokens) < 2:
        raise FaultRuleError(end_col, f"missing direction after {action_name!r} (expected 'in' or 'out')")
    direction, col = tokens[1]
    if direction not in DIRECTIONS:
        raise FaultRuleError(col, f"unknown direction {direction!r} (expected 'in' or 'out')")

    args = _Args()
    positional: list[tuple[str, int]] = []
    for word, col in tokens[2:]:
        m = _KEY_VALUE.fullmatch(word)
        if m is None:
            if "=" in word:
                raise FaultRuleError(col, f"expected key=value, got {word!r}")
            positional.append((word, col))
            continue
        key, op, value = m.group(1), m.group(2), m.group(3)
        vcol = col + len(key) + len(op)
        if not value:
            raise FaultRuleError(vcol, f"missing value after '{key}{op}'")
        _parse_arg(action_name, key, op, value, col, vcol, args)

    action = _build_action(action_name, action_col, end_col, positional, args)
    try:
        return FaultRule(action=action, direction=direction,
                         **{k: v for k, v in args.values.items() if not k.startswith("a_")})
    except ValueError as exc:  # cross-field checks not caught above (proto=icmp with a TCP matcher)
        raise FaultRuleError(args.columns.get("proto", action_col), str(exc)) from None


def _parse_arg(action: str, key: str, op: str, value: str, col: int, vcol: int, args: _Args) -> None:
    if key in _ACTION_KEYS[action] and not (key == "flags" and op == "=="):
        _parse_action_arg(action, key, op, value, col, vcol, args)
        return
    if key not in _MATCH_KEYS:
        known = ", ".join(_MATCH_KEYS + _ACTION_KEYS[action])
        raise FaultRuleError(col, f"unknown parameter {key!r} for {action!r} (known: {known})")
    if key == "flags" and op == "==":
        args.put("flags_exact", _flags_value(key, value, vcol), col, "'flags=='")
        return
    if op != "=":
        opcol = col + len(key)
        hint = " (only 'flags==' exists)" if op == "==" else ""
        raise FaultRuleError(opcol, f"{key!r} takes '=', not {op!r}{hint}")
    if key in ("flags", "has"):  # (in a rewrite, 'flags=' was taken as the change above)
        args.put("flags", _flags_value(key, value, vcol), col, "flags matcher ('flags=' / 'has=')")
    elif key in ("port", "sport", "dport", "nth", "first", "every", "seed"):
        args.put(key, _int_value(key, value, vcol), col, repr(key))
    elif key in ADDRESS_KEYS:
        try:
            args.put(key, network_text(value), col, repr(key))
        except ValueError as exc:
            raise FaultRuleError(vcol, str(exc)) from None
    elif key == "proto":
        if value not in PROTOS:
            raise FaultRuleError(vcol, f"proto must be {' or '.join(PROTOS)}, not {value!r}")
        args.put(key, value, col, repr(key))
    elif key == "payload":
        if value not in ("yes", "no"):
            raise FaultRuleError(vcol, f"payload must be 'yes' or 'no', not {value!r}")
        args.put(key, value == "yes", col, repr(key))
    elif key == "state":
        states: list[str] = []
        offset = 0
        for part in value.split(","):
            try:
                states.append(normalize_state(part))
            except ValueError as exc:
                raise FaultRuleError(vcol + offset, str(exc)) from None
            offset += len(part) + 1
        args.put("states", tuple(states), col, repr(key))
    elif key in ("after", "before"):
        args.put(key, _duration_value(value, vcol), col, repr(key))
        after, before = args.values.get("after"), args.values.get("before")
        if isinstance(after, float) and isinstance(before, float) and before <= after:
            raise FaultRuleError(vcol, "before= must be later than after=")
    elif key == "p":
        if not _FLOAT.fullmatch(value):
            raise FaultRuleError(vcol, f"p needs a probability like 0.1 or 10%, not {value!r}")
        p = float(value[:-1]) / 100 if value.endswith("%") else float(value)
        if not 0.0 <= p <= 1.0:
            raise FaultRuleError(vcol, f"p must be from 0 to 1, not {value}")
        args.put(key, p, col, repr(key))


def _duration_value(text: str, col: int) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise FaultRuleError(col, str(exc)) from None


def _parse_action_arg(action: str, key: str, op: str, value: str, col: int, vcol: int, args: _Args) -> None:
    opcol = col + len(key)
    rewrite = action == "rewrite"
    if rewrite and key in ("seq", "ack"):
        if op not in ("+=", "-="):
            raise FaultRuleError(opcol, f"rewrite changes {key} by an offset: '{key}+=N' or '{key}-=N'")
        delta = _int_value(key, value, vcol)
        args.put("a_" + key, delta if op == "+=" else -delta, col, repr(key))
        return
    if rewrite and key == "flags":
        field = {"=": "a_set_flags", "+=": "a_add_flags", "-=": "a_clear_flags"}[op]
        args.put(field, _flags_value(key, value, vcol), col, f"'flags{op}'")
        return
    if op != "=":
        raise FaultRuleError(opcol, f"{key!r} takes '=', not {op!r}")
    if action == "inject":  # seq=+N / seq=-N, relative to the sender's next sequence number
        if not _OFFSET.fullmatch(value):
            raise FaultRuleError(vcol, f"inject seq is an offset with a sign, like +0 or -100, not {value!r}")
        offset = int(value) if len(value) < 24 else SEQ_SPACE
        if abs(offset) >= SEQ_SPACE:
            raise FaultRuleError(vcol, f"seq offset must be within +/-{SEQ_SPACE - 1}")
        args.put("a_seq", offset, col, repr(key))
    elif key in ("jitter", "timeout"):
        args.put("a_" + key, _duration_value(value, vcol), col, repr(key))
    else:
        args.put("a_" + key, _int_value(key, value, vcol), col, repr(key))


def _build_action(name: str, col: int, end_col: int, positional: list[tuple[str, int]], args: _Args) -> Action:
    a = {k[2:]: v for k, v in args.values.items() if k.startswith("a_")}
    wants = 1 if name in ("delay", "inject") else 0
    for word, wcol in positional[wants:]:
        what = {"delay": "delay takes one duration", "inject": "inject takes one kind"}
        raise FaultRuleError(wcol, f"unexpected {word!r} ({what.get(name, 'parameters are key=value')})")
    if name == "delay":
        if not positional:
            raise FaultRuleError(end_col, "delay needs a duration, e.g. 'delay out 50ms'")
        return Delay(_duration_value(*positional[0]), **a)
    if name == "inject":
        if not positional:
            raise FaultRuleError(end_col, f"inject needs a kind: {', '.join(INJECT_KINDS)}")
        kind, kcol = positional[0]
        if kind not in INJECT_KINDS:
            raise FaultRuleError(kcol, f"unknown inject kind {kind!r} (expected {', '.join(INJECT_KINDS)})")
        return Inject(kind, **a)
    if name == "truncate":
        if "len" in a and "cut" in a:
            raise FaultRuleError(max(args.columns["a_len"], args.columns["a_cut"]), "len= and cut= exclude each other")
        if not a:
            raise FaultRuleError(col, "truncate needs len=N (keep N bytes) or cut=N (remove the last N)")
        return Truncate(length=a.get("len"), cut=a.get("cut"))
    if name == "rewrite":
        if not a:
            raise FaultRuleError(col, "rewrite needs a change: window=N, seq+=N, ack+=N, flags=F, flags+=F, flags-=F")
        return Rewrite(**a)
    action: Action = ACTIONS[name](**a)  # drop, dup, reorder, corrupt: keyword parameters only
    return action


def parse_rules(text: str) -> list[FaultRule]:
    """A scenario: one rule per line; '#' comments and blank lines ignored. Errors carry the line."""
    rules = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.split("#", 1)[0].strip():
            continue
        try:
            rules.append(parse_rule(line))
        except FaultRuleError as exc:
            raise FaultRuleError(exc.column, exc.reason, line=number) from None
    return rules


def load_rules(path: str | Path) -> list[FaultRule]:
    """`parse_rules` on a file's contents."""
    return parse_rules(Path(path).read_text(encoding="utf-8"))
