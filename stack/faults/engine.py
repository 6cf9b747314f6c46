"""The fault engine: applies `FaultRule`s to packets on their way across a link.

Ordering: every rule is applied, in the order given, as a pipeline. A packet enters as one item;
each rule whose direction and matchers fit transforms the items it sees (drop removes one, dup adds
copies behind it, delay adds to its extra delay, ...) and the next rule sees the result. So
``delay out 50ms`` followed by ``drop out p=0.1`` delays everything and also loses 10%, and a rule
after a ``dup`` sees (and counts) each copy. Two exceptions keep the pipeline finite and
predictable: a segment taken off the wire by ``reorder`` skips the rules after it and is released
later as it was, and an ``inject``ed segment is never itself subject to rules.

Matchers see the segment as the sender built it (after earlier rewrites); ``corrupt`` and
``truncate`` change only the bytes, so later rules still match on the original header fields.

Determinism: each rule draws from its own ``random.Random`` -- seeded with the rule's ``seed=`` if
it has one, else from the engine's ``seed`` and the rule's position -- so the same rules, seed and
traffic give the same faults on every run.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import NamedTuple

from stack.faults.rules import (
    DIRECTIONS,
    Corrupt,
    Delay,
    Drop,
    Dup,
    FaultRule,
    Inject,
    Reorder,
    Rewrite,
    Truncate,
    parse_rules,
)
from stack.native import checksum_adjust, checksum_adjust32, tcp_checksum_ipv4
from stack.wire import build_packet
from stack.wire.address import address_matches
from stack.wire.segment import ACK, RST, SYN, Segment

StateOf = Callable[[Segment, str], str | None]
# (time, action, direction, segment, rule text): action is the rule's action name, or "release"
# when a held (reordered) segment goes back on the wire. For inject it is the injected segment.
Listener = Callable[[float, str, str, Segment, str], None]

COUNTER_NAMES = ("FaultDrop", "FaultDelay", "FaultDup", "FaultReorder", "FaultCorrupt", "FaultTruncate",
                 "FaultRewrite", "FaultInject")
_COUNTER_OF = {"drop": "FaultDrop", "delay": "FaultDelay", "dup": "FaultDup", "reorder": "FaultReorder",
               "corrupt": "FaultCorrupt", "truncate": "FaultTruncate", "rewrite": "FaultRewrite",
               "inject": "FaultInject"}
_INJECT_FLAGS = {"rst": RST, "syn": SYN, "ack": ACK}
_MASK32 = 0xFFFFFFFF


class Crossing(NamedTuple):
    """One packet that crosses in place of the one given: its bytes, the extra delay before it
    crosses, and the names of the actions that changed it (empty when none did). A `dup` copy says
    "dup" and its original does not, so an observer can tell the copy from the segment sent."""

    packet: bytes
    delay: float
    faults: tuple[str, ...] = ()


class Release(NamedTuple):
    """A held segment going back on the wire; `segment` says where it was going, `since` when it was
    taken off the wire, `faults` what acted on it ("reorder" last)."""

    direction: str
    segment: Segment
    packet: bytes
    delay: float
    since: float = 0.0
    faults: tuple[str, ...] = ("reorder",)


@dataclass(slots=True)
class _Held:
    direction: str
    segment: Segment
    packet: bytes
    delay: float
    deadline: float  # release at this time at the latest (reorder timeout), or now once `left` hits 0
    left: int  # later segments in this direction that still have to cross first
    order: int
    rule_text: str
    since: float
    faults: tuple[str, ...]


@dataclass(slots=True)
class _Item:
    segment: Segment
    packet: bytes
    delay: float
    held: _Held | None = None
    injected: bool = False
    faults: tuple[str, ...] = ()


class _RuleState:
    __slots__ = ("applied", "rng", "rule", "seen", "text")

    def __init__(self, rule: FaultRule, rng: random.Random) -> None:
        self.rule = rule
        self.text = rule.text
        self.rng = rng
        self.seen = 0  # segments that passed every matcher but the count selectors and p
        self.applied = 0


class FaultEngine:
    """Applies rules to (segment, packet) pairs; see the module docstring for the ordering."""

    def __init__(self, rules: Iterable[FaultRule] | str, *, start: float = 0.0, seed: int = 0,
                 state_of: StateOf | None = None) -> None:
        self.rules: tuple[FaultRule, ...] = tuple(parse_rules(rules) if isinstance(rules, str) else rules)
        self.start = start
        self.seed = seed
        self.state_of = state_of
        self.listeners: list[Listener] = []
        self.counters: dict[str, int] = dict.fromkeys(COUNTER_NAMES, 0)
        self.rule_counts: dict[str, int] = {}  # by rule text (identical rules share a count)
        self._rules: list[_RuleState] = []
        self._icmp_rules: list[_RuleState] = []  # proto=icmp: they never see a TCP segment
        for index, rule in enumerate(self.rules):
            if not isinstance(rule, FaultRule):
                raise TypeError(f"not a FaultRule: {rule!r}")
            # A string seed is hashed with SHA-512 by random.Random: stable across runs and platforms.
            rng = random.Random(rule.seed if rule.seed is not None else f"tcpstack-faults/{seed}/{index}")
            (self._icmp_rules if rule.proto == "icmp" else self._rules).append(_RuleState(rule, rng))
            self.rule_counts.setdefault(rule.text, 0)
        self._held: list[_Held] = []
        self._order = 0

    def __repr__(self) -> str:
        return f"<FaultEngine {len(self.rules)} rules, {len(self._held)} held>"

    # ------------------------------------------------------------------ the packet path
    def process(self, direction: str, segment: Segment, packet: bytes, now: float) -> list[tuple[bytes, float]]:
        """What crosses instead of `packet`: (bytes, extra delay) pairs, [] if nothing does.

        Segments held by ``reorder`` are not in the result; call `release_due` after every call (and
        at `next_deadline`) to collect them.
        """
        return [(c.packet, c.delay) for c in self.cross(direction, segment, packet, now)]

    def cross(self, direction: str, segment: Segment, packet: bytes, now: float) -> list[Crossing]:
        """`process`, with what acted on each packet that crosses (for captures and diagrams)."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be 'in' or 'out', not {direction!r}")
        items = [_Item(segment, packet, 0.0)]
        state: list[str | None] = []  # looked up at most once, and only if a rule asks
        for rs in self._rules:
            rule = rs.rule
            if rule.direction != direction:
                continue
            out: list[_Item] = []
            for item in items:
                if item.held is not None or item.injected or not self._matches(rs, item.segment, direction, now,
                                                                               state):
                    out.append(item)
                    continue
                self._apply(rs, item, direction, now, out)
            items = out
        crossing: list[Crossing] = []
        for item in items:
            if item.held is not None:
                self._held.append(item.held)
                continue
            crossing.append(Crossing(item.packet, item.delay, item.faults))
            self._passed(direction, item.delay, now)
        return crossing

    def _matches(self, rs: _RuleState, seg: Segment, direction: str, now: float, state: list[str | None]) -> bool:
        rule = rs.rule
        flags = seg.flags
        if rule.flags is not None and not flags & rule.flags:
            return False
        if rule.flags_exact is not None and flags != rule.flags_exact:
            return False
        if rule.port is not None and rule.port not in (seg.src_port, seg.dst_port):
            return False
        if rule.sport is not None and seg.src_port != rule.sport:
            return False
        if rule.dport is not None and seg.dst_port != rule.dport:
            return False
        if rule.addr is not None and not (address_matches(seg.src_addr, rule.addr)
                                          or address_matches(seg.dst_addr, rule.addr)):
            return False
        if rule.src is not None and not address_matches(seg.src_addr, rule.src):
            return False
        if rule.dst is not None and not address_matches(seg.dst_addr, rule.dst):
            return False
        if rule.payload is not None and bool(seg.payload) != rule.payload:
            return False
        return self._selects(rs, seg, direction, now, state)

    def _selects(self, rs: _RuleState, seg: Segment | None, direction: str, now: float,
                 state: list[str | None]) -> bool:
        """The matchers every rule has (time window, connection state, counts, p); an ICMP
        datagram (`seg` None) has no connection state, and its rules match on none."""
        rule = rs.rule
        elapsed = now - self.start
        if rule.after is not None and elapsed < rule.after:
            return False
        if rule.before is not None and elapsed >= rule.before:
            return False
        if rule.states and seg is not None:
            if not state:
                state.append(self.state_of(seg, direction) if self.state_of is not None else None)
            current = state[0] or "CLOSED"  # no connection at all reads as CLOSED
            if current not in rule.states:
                return False
        # Count selectors, then the coin: a rule with nth=3 p=0.5 flips a coin on its third match only.
        rs.seen += 1
        seen = rs.seen
        if rule.nth is not None and seen != rule.nth:
            return False
        if rule.first is not None and seen > rule.first:
            return False
        if rule.every is not None and seen % rule.every:
            return False
        return rule.p is None or rs.rng.random() < rule.p

    def cross_icmp(self, direction: str, packet: bytes, now: float) -> list[Crossing]:
        """`cross` for an ICMP or ICMPv6 datagram: only proto=icmp rules apply (drop, delay, dup,
        corrupt, truncate); they count like the others but reach no listener (which take segments)."""
        crossing = [Crossing(packet, 0.0)]
        for rs in self._icmp_rules:
            rule = rs.rule
            if rule.direction != direction:
                continue
            action = rule.action
            name = action.name
            out: list[Crossing] = []
            for c in crossing:
                if not self._selects(rs, None, direction, now, []):
                    out.append(c)
                    continue
                faults = (*c.faults, name)
                if isinstance(action, Delay):
                    extra = action.delay + (rs.rng.uniform(-action.jitter, action.jitter) if action.jitter else 0.0)
                    out.append(Crossing(c.packet, c.delay + max(0.0, extra), faults))
                elif isinstance(action, Dup):
                    out.append(c)
                    out.extend(Crossing(c.packet, c.delay, faults) for _ in range(action.copies))
                elif isinstance(action, Corrupt):
                    out.append(Crossing(corrupt_packet(c.packet, action.bits, rs.rng), c.delay, faults))
                elif isinstance(action, Truncate):
                    keep = action.length if action.length is not None else max(0, len(c.packet) - (action.cut or 0))
                    out.append(Crossing(c.packet[:keep], c.delay, faults))
                rs.applied += 1  # (a drop appends nothing: lost)
                self.counters[_COUNTER_OF[name]] += 1
                self.rule_counts[rs.text] += 1
            crossing = out
        return crossing

    def _apply(self, rs: _RuleState, item: _Item, direction: str, now: float, out: list[_Item]) -> None:
        action = rs.rule.action
        reported = item.segment
        name = action.name
        if isinstance(action, Drop):
            pass  # not appended: lost
        elif isinstance(action, Delay):
            extra = action.delay + (rs.rng.uniform(-action.jitter, action.jitter) if action.jitter else 0.0)
            item.delay += max(0.0, extra)
            item.faults += (name,)
            out.append(item)
        elif isinstance(action, Dup):
            out.append(item)
            copies = (*item.faults, name)  # the copies are the duplicates; the original is what was sent
            out.extend(_Item(item.segment, item.packet, item.delay, faults=copies) for _ in range(action.copies))
        elif isinstance(action, Reorder):
            self._order += 1
            item.held = _Held(direction, item.segment, item.packet, item.delay, now + action.timeout, action.hold,
                              self._order, rs.text, now, (*item.faults, name))
            out.append(item)
        elif isinstance(action, Corrupt):
            item.packet = corrupt_packet(item.packet, action.bits, rs.rng)
            item.faults += (name,)
            out.append(item)
        elif isinstance(action, Truncate):
            keep = action.length if action.length is not None else max(0, len(item.packet) - (action.cut or 0))
            item.packet = item.packet[:keep]
            item.faults += (name,)
            out.append(item)
        elif isinstance(action, Rewrite):
            item.segment, item.packet = rewrite_packet(item.segment, item.packet, action)
            item.faults += (name,)
            reported = item.segment
            out.append(item)
        else:
            out.append(item)
            injected = inject_segment(item.segment, action)
            reported = injected
            out.append(_Item(injected, build_packet(injected), item.delay, injected=True, faults=(name,)))
        rs.applied += 1
        self.counters[_COUNTER_OF[name]] += 1
        self.rule_counts[rs.text] += 1
        for listener in self.listeners:
            listener(now, name, direction, reported, rs.text)

    def _passed(self, direction: str, delay: float, now: float) -> None:
        """One segment crossed in `direction`: held ones waiting on it move a step closer."""
        for held in self._held:
            if held.direction == direction and held.left > 0:
                held.left -= 1
                if held.left == 0:
                    # Released behind the segment that freed it: at least its delay, so it arrives after.
                    held.delay = max(held.delay, delay)
                    held.deadline = now

    # ------------------------------------------------------------------ held segments
    def next_deadline(self) -> float | None:
        """When `release_due` next has something (None: nothing held)."""
        return min((h.deadline for h in self._held), default=None)

    def release_due(self, now: float) -> list[Release]:
        """Held segments whose turn came (enough later segments crossed) or whose timeout passed."""
        if not self._held:
            return []
        due = sorted((h for h in self._held if h.deadline <= now), key=lambda h: (h.deadline, h.order))
        if not due:
            return []
        self._held = [h for h in self._held if h.deadline > now]
        for held in due:
            for listener in self.listeners:
                listener(now, "release", held.direction, held.segment, held.rule_text)
        return [Release(h.direction, h.segment, h.packet, h.delay, h.since, h.faults) for h in due]

    @property
    def held(self) -> int:
        """How many segments are off the wire right now."""
        return len(self._held)


# ---------------------------------------------------------------------- packet surgery
def _tcp_offset(packet: bytes) -> int | None:
    """Where the TCP header starts, if the packet is long enough to hold one (IPv4 only)."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    ihl = (packet[0] & 0x0F) * 4
    return ihl if ihl >= 20 and len(packet) >= ihl + 20 else None


def corrupt_packet(packet: bytes, bits: int, rng: random.Random) -> bytes:
    """Flip `bits` distinct bits in the TCP part so the receiver drops it as a TCP checksum error.

    The IP header and the TCP data-offset octet are left alone: damage there would be reported as
    a different wire error (bad IP checksum, bad data offset) before the TCP checksum is checked.
    One flipped bit always breaks a one's-complement checksum; several could cancel out, so the
    checksum is recomputed and another bit flipped until it fails.
    """
    tcp = _tcp_offset(packet)
    data = bytearray(packet)
    if tcp is None:
        positions = list(range(len(data)))  # not a TCP/IPv4 packet (already truncated?): anywhere
    else:
        total = min(len(data), int.from_bytes(data[2:4], "big")) if len(data) >= 4 else len(data)
        positions = [i for i in range(tcp, max(total, tcp + 20)) if i != tcp + 12]
    if not positions:
        return packet
    bit_positions = rng.sample(range(len(positions) * 8), min(bits, len(positions) * 8))
    for bit in bit_positions:
        data[positions[bit >> 3]] ^= 0x80 >> (bit & 7)
    if bits > 1 and tcp is not None:
        end = max(total, tcp + 20)
        while tcp_checksum_ipv4(bytes(data[12:16]), bytes(data[16:20]), data[tcp:end]) == 0:
            bit = rng.randrange(len(positions) * 8)
            data[positions[bit >> 3]] ^= 0x80 >> (bit & 7)
    return bytes(data)


def rewrite_packet(seg: Segment, packet: bytes, action: Rewrite) -> tuple[Segment, bytes]:
    """Apply `action` to the segment and patch the same fields in the bytes in place.

    The TCP checksum is adjusted incrementally (RFC 1624), so every other byte is kept as it was and
    a packet corrupted by an earlier rule stays corrupt.
    """
    flags = seg.flags if action.set_flags is None else action.set_flags
    flags = (flags | action.add_flags) & ~action.clear_flags & 0xFF
    new = replace(seg, seq=(seg.seq + action.seq) & _MASK32, ack=(seg.ack + action.ack) & _MASK32, flags=flags,
                  window=seg.window if action.window is None else action.window)
    tcp = _tcp_offset(packet)
    if tcp is None:
        return new, packet  # too short to carry the fields: nothing to patch
    data = bytearray(packet)
    csum_at = tcp + 16
    csum = int.from_bytes(data[csum_at:csum_at + 2], "big")
    for at, value in ((tcp + 4, new.seq), (tcp + 8, new.ack)):
        old = int.from_bytes(data[at:at + 4], "big")
        if old != value:
            csum = checksum_adjust32(csum, old, value)
            data[at:at + 4] = value.to_bytes(4, "big")
    old_word = int.from_bytes(data[tcp + 12:tcp + 14], "big")
    new_word = (old_word & 0xFF00) | new.flags
    old_window = int.from_bytes(data[tcp + 14:tcp + 16], "big")
    for at, old, value in ((tcp + 12, old_word, new_word), (tcp + 14, old_window, new.window)):
        if old != value:
            csum = checksum_adjust(csum, old, value)
            data[at:at + 2] = value.to_bytes(2, "big")
    data[csum_at:csum_at + 2] = csum.to_bytes(2, "big")
    return new, bytes(data)


def inject_segment(seg: Segment, action: Inject) -> Segment:
    """The segment `action` sends behind `seg` (see `Inject` for the exact fields)."""
    seq = (seg.seq + seg.seg_len + action.seq) & _MASK32
    flags = _INJECT_FLAGS[action.kind]
    ack = seg.ack if flags == ACK else 0
    window = 0 if flags == RST else seg.window
    return Segment(seg.src_addr, seg.dst_addr, seg.src_port, seg.dst_port, seq, ack, flags, window)
