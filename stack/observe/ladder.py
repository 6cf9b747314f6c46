"""Ladder (sequence) diagrams of one connection, as terminal text or standalone SVG.

A diagram is drawn from `LadderEntry` records, one per segment, in time order. `entries_from_segments`
makes them from captured segments the way Wireshark numbers them: each direction's sequence numbers
count from that side's ISN (the first SYN's seq, or the first seq seen if the capture missed the
SYN), and acknowledgment numbers count from the *other* side's ISN. So a SYN is seq=0, the answer
acks 1, and the FIN after n data octets is seq=n+1 and is acked by n+2 -- "ack = seq + 1" reads
straight off the diagram.

The left lifeline is the stack, the right one the peer (the Linux kernel in the integration
tests); `STACK_TO_KERNEL` arrows go left to right. The labels are only names, so the same code
draws stack-to-stack runs with other `left`/`right` labels.

What the fault engine did is drawn as it happened: a dropped segment is an arrow that stops
midway (marked X), a segment a `delay`/`reorder` rule held leaves its sender when it was sent
and arrives when it crossed, and a `dup` copy is labelled a duplicate (only what the sender sent
again is a retransmission). A segment that left its sender before the other side's segment
above it arrived -- its ACK does not cover that one, as in a simultaneous close -- is drawn from
that earlier time, so the two arrows cross. Timer events (the 2MSL expiry) are rows of their own,
`LadderMark`s. `render_svg` (stack.observe.ladder_svg) draws the same rows as a picture.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from stack.faults.adapter import FaultNote
from stack.tcp.events import StateChanged
from stack.tcp.states import State
from stack.wire.segment import ACK, FIN, RST, SYN, Segment, flags_text

STACK_TO_KERNEL: Literal["stack->kernel"] = "stack->kernel"
KERNEL_TO_STACK: Literal["kernel->stack"] = "kernel->stack"
LadderDirection = Literal["stack->kernel", "kernel->stack"]

_MOD = 1 << 32


@dataclass(frozen=True, slots=True)
class LadderEntry:
    """One segment of the diagram and both ends' states once it has been sent and received.

    `flags` are tcpdump letters ("FA"); `seq_rel`/`ack_rel` are relative numbers (`ack_rel` is None
    when ACK is not set); `length` is the payload length (SYN/FIN not counted). A state of None
    means unknown, and the renderers leave it blank. `time` is when the segment reached its
    receiver (for a dropped one: when it was lost); `sent` is when it left its sender, given only
    when that was earlier (held by a fault, or in flight while the other side's segment arrived).
    `faults` are the fault engine's actions on it ("drop", "delay", "dup", ...).
    """

    time: float
    direction: LadderDirection
    flags: str
    seq_rel: int
    ack_rel: int | None
    length: int
    stack_state: str | None
    kernel_state: str | None
    note: str = ""
    sent: float | None = None
    faults: tuple[str, ...] = ()

    @property
    def dropped(self) -> bool:
        return "drop" in self.faults

    @property
    def held(self) -> bool:
        """A fault engine rule kept it off the wire for a while (delay, reorder)."""
        return "delay" in self.faults or "reorder" in self.faults

    @property
    def label(self) -> str:
        """Compact text of the arrow: 'FA seq=1 ack=1' (+ ' len=n' when carrying data)."""
        parts = [self.flags, f"seq={self.seq_rel}"]
        if self.ack_rel is not None:
            parts.append(f"ack={self.ack_rel}")
        if self.length:
            parts.append(f"len={self.length}")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class LadderMark:
    """A row without a segment: something one side did by itself at `time` (a timer expired).
    `state` is that side's state after it."""

    time: float
    side: Literal["stack", "kernel"]
    text: str
    state: str | None = None


# ---------------------------------------------------------------------------------------------
# Building entries from segments

StateTimeline = Iterable[StateChanged | tuple[float, "State | str"]]
"""State changes of one side: core events, or (time, new state) pairs (e.g. from polling `ss`)."""

_DIRECTION_WORDS: dict[str, LadderDirection] = {
    "out": STACK_TO_KERNEL,
    STACK_TO_KERNEL: STACK_TO_KERNEL,
    "in": KERNEL_TO_STACK,
    KERNEL_TO_STACK: KERNEL_TO_STACK,
}


class _Timeline:
    """Answer "which state was this side in at time t" by bisecting sorted change times."""

    def __init__(self, changes: StateTimeline) -> None:
        pairs: list[tuple[float, str]] = []
        for change in changes:
            if isinstance(change, StateChanged):
                pairs.append((change.time, change.new.value))
            else:
                when, state = change
                pairs.append((when, state.value if isinstance(state, State) else str(state)))
        pairs.sort(key=lambda p: p[0])  # stable: same-time changes keep their order
        self._times = [p[0] for p in pairs]
        self._states = [p[1] for p in pairs]

    def at(self, when: float) -> str | None:
        # `<=`: the change a segment causes carries that segment's timestamp, and belongs to it.
        i = bisect.bisect_right(self._times, when)
        return self._states[i - 1] if i else None


class _Inferred:
    """The state RFC 9293 says one side should be in, driven by the segments it sends and gets.

    Used only when no real state record exists for a side, to label hand-built or kernel-side
    ladders. It assumes every segment arrives, is acceptable and is processed in capture order (so
    a simultaneous close captured at one end looks sequential): a guide, not evidence.
    Sequence numbers here are relative (see `entries_from_segments`).
    """

    def __init__(self) -> None:
        self.state: str | None = None
        self.fin_end: int | None = None  # our FIN's seq + 1: the ack that acknowledges it

    def _synchronized_if_unknown(self) -> None:
        # A capture that starts after the handshake: the side was already synchronized.
        if self.state is None:
            self.state = State.ESTABLISHED.value

    def sent(self, flags: int, seq_rel: int, seg_len: int) -> None:
        s = State
        if flags & RST:
            self.state = s.CLOSED.value
            return
        if flags & SYN:
            self.state = s.SYN_RECEIVED.value if flags & ACK else s.SYN_SENT.value
        else:
            self._synchronized_if_unknown()
        if flags & FIN:
            self.fin_end = (seq_rel + seg_len) % _MOD
            if self.state in (s.ESTABLISHED.value, s.SYN_RECEIVED.value):
                self.state = s.FIN_WAIT_1.value
            elif self.state == s.CLOSE_WAIT.value:
                self.state = s.LAST_ACK.value

    def received(self, flags: int, ack_rel: int | None) -> None:
        s = State
        if flags & RST:
            self.state = s.CLOSED.value
            return
        if flags & SYN:
            if not flags & ACK:
                self.state = s.SYN_RECEIVED.value
            elif self.state == s.SYN_SENT.value:
                self.state = s.ESTABLISHED.value
        else:
            self._synchronized_if_unknown()
        if flags & ACK and ack_rel is not None:
            acks_syn = ack_rel >= 1
            acks_fin = self.fin_end is not None and (ack_rel - self.fin_end) % _MOD < _MOD // 2
            if self.state == s.SYN_RECEIVED.value and acks_syn and not flags & SYN:
                self.state = s.ESTABLISHED.value
            elif acks_fin and self.state == s.FIN_WAIT_1.value:
                self.state = s.FIN_WAIT_2.value
            elif acks_fin and self.state == s.CLOSING.value:
                self.state = s.TIME_WAIT.value
            elif acks_fin and self.state == s.LAST_ACK.value:
                self.state = s.CLOSED.value
        if flags & FIN:
            self.state = {
                s.ESTABLISHED.value: s.CLOSE_WAIT.value,
                s.SYN_RECEIVED.value: s.CLOSE_WAIT.value,
                s.FIN_WAIT_1.value: s.CLOSING.value,
                s.FIN_WAIT_2.value: s.TIME_WAIT.value,
            }.get(self.state or "", self.state)


def _direction(word: str, seg: Segment, stack_port: int) -> LadderDirection:
    by_port: LadderDirection | None = None
    if seg.src_port == stack_port and seg.dst_port != stack_port:
        by_port = STACK_TO_KERNEL
    elif seg.dst_port == stack_port and seg.src_port != stack_port:
        by_port = KERNEL_TO_STACK
    given = _DIRECTION_WORDS.get(word)
    if given is not None and by_port is not None and given != by_port:
        raise ValueError(f"segment marked {word!r} but its ports say {by_port}: {seg.summary()}")
    direction = given or by_port
    if direction is None:
        raise ValueError(f"cannot tell the direction of {seg.summary()} (stack port {stack_port})")
    return direction


Observed = tuple[float, str, Segment] | tuple[float, str, Segment, FaultNote | None]
"""(time it crossed, direction, segment[, what the fault engine did to it]): what a driver's observer
sees. A dropped segment is given with the time it was lost and a note whose faults say "drop"."""


def _describe_faults(entry_faults: tuple[str, ...], held_for: float | None) -> str:
    if "drop" in entry_faults:
        return "dropped by a fault rule"
    parts = []
    if "dup" in entry_faults:
        parts.append("duplicate made by a fault rule")
    held = [f for f in ("delay", "reorder") if f in entry_faults]
    if held:
        parts.append(f"held {held_for * 1000:.1f} ms by {'+'.join(held)}" if held_for else f"held by {held[0]}")
    for other in ("corrupt", "truncate", "rewrite", "inject"):
        if other in entry_faults:
            parts.append({"inject": "injected", "corrupt": "corrupted", "truncate": "truncated",
                          "rewrite": "rewritten"}[other] + " by a fault rule")
    return "; ".join(parts)


def entries_from_segments(
    segments: Sequence[Observed],
    stack_port: int,
    *,
    stack_states: StateTimeline | None = None,
    kernel_states: StateTimeline | None = None,
    infer_states: bool = False,
) -> list[LadderEntry]:
    """Ladder entries for one connection's segments, with Wireshark-style relative numbers.

    `segments` are (time, direction, segment[, note]): direction is "out"/"in" (as in traces) or a
    ladder direction; any other word (e.g. "") means "tell from the ports", with `stack_port` being
    the stack's port. Each side's state after a segment comes from its timeline (the last change at
    or before the segment's time); a side with no timeline is inferred from the segments when
    `infer_states` is set, and left unknown otherwise.
    Retransmitted SYN/FIN/data (starting below the highest sequence number already sent that way)
    get the note "retransmission"; what a fault did is noted and kept in `faults`.
    """
    rows: list[tuple[float, LadderDirection, Segment, FaultNote | None]] = []
    for item in segments:
        t, word, seg = item[0], item[1], item[2]
        note_in = item[3] if len(item) > 3 else None
        rows.append((t, _direction(word, seg, stack_port), seg, note_in))

    isn: dict[LadderDirection, int] = {}
    for _, direction, seg, _ in rows:  # the first SYN per direction wins over earlier non-SYN segments
        if seg.flags & SYN and direction not in isn:
            isn[direction] = seg.seq
    for _, direction, seg, _ in rows:
        isn.setdefault(direction, seg.seq)

    timelines = {
        STACK_TO_KERNEL: None if stack_states is None else _Timeline(stack_states),
        KERNEL_TO_STACK: None if kernel_states is None else _Timeline(kernel_states),
    }
    inferred = {STACK_TO_KERNEL: _Inferred(), KERNEL_TO_STACK: _Inferred()}  # keyed by sender side
    next_seq: dict[LadderDirection, int] = {}
    # Segments that consumed sequence space and arrived: (arrival time, relative end), per direction.
    arrived: dict[LadderDirection, list[tuple[float, int]]] = {STACK_TO_KERNEL: [], KERNEL_TO_STACK: []}
    entries = []
    for when, direction, seg, fault in rows:
        other: LadderDirection = KERNEL_TO_STACK if direction == STACK_TO_KERNEL else STACK_TO_KERNEL
        faults = fault.faults if fault is not None else ()
        seq_rel = (seg.seq - isn[direction]) % _MOD
        ack_rel: int | None = None
        if seg.flags & ACK:
            # Without any segment from the other side there is no ISN to count from: show it raw.
            ack_rel = (seg.ack - isn[other]) % _MOD if other in isn else seg.ack
        held = "delay" in faults or "reorder" in faults
        sent = fault.since if fault is not None and held and fault.since < when else None
        if ack_rel is not None and other in isn:
            # Its ACK does not cover a segment that reached its sender before it arrived here: it
            # was on its way by then (the FINs of a simultaneous close cross like this).
            missed = [t for t, end in arrived[other] if (end - ack_rel) % _MOD < _MOD // 2 and end != ack_rel]
            if missed and min(missed) < (sent if sent is not None else when):
                sent = min(missed)
        notes = []
        copy = "dup" in faults
        if seg.seg_len and not copy and "drop" not in faults:
            end = seq_rel + seg.seg_len
            if direction in next_seq and seq_rel < next_seq[direction]:
                notes.append("retransmission")
            next_seq[direction] = max(end, next_seq.get(direction, 0))
        if faults:
            notes.append(_describe_faults(faults, when - fault.since if fault is not None else None))
        if seg.seg_len and not {"drop", "corrupt", "truncate"} & set(faults):  # it reached the receiver
            arrived[direction].append((when, (seq_rel + seg.seg_len) % _MOD))

        if "drop" not in faults:  # a lost segment changes neither side's state
            inferred[direction].sent(seg.flags, seq_rel, seg.seg_len)
            inferred[other].received(seg.flags, ack_rel)

        def state_of(side: LadderDirection, when: float = when) -> str | None:
            timeline = timelines[side]
            if timeline is not None:
                return timeline.at(when)
            return inferred[side].state if infer_states else None

        entries.append(
            LadderEntry(
                time=when,
                direction=direction,
                flags=flags_text(seg.flags),
                seq_rel=seq_rel,
                ack_rel=ack_rel,
                length=len(seg.payload),
                stack_state=state_of(STACK_TO_KERNEL),
                kernel_state=state_of(KERNEL_TO_STACK),
                note="; ".join(n for n in notes if n),
                sent=sent,
                faults=faults,
            )
        )
    return entries


def marks_from_states(stack_states: Iterable[StateChanged], side: Literal["stack", "kernel"] = "stack"
                      ) -> list[LadderMark]:
    """Rows for the state changes a timer made (no segment did): the 2MSL expiry of TIME-WAIT, an
    orphan FIN-WAIT-2 reaped, retries exhausted. Their text says what expired and after how long."""
    marks: list[LadderMark] = []
    entered: dict[str, float] = {}
    for change in stack_states:
        entered[change.new.value] = change.time
        cause = change.cause
        if "timeout" not in cause and "exhausted" not in cause:
            continue
        since = entered.get(change.old.value)
        after = f" after {change.time - since:.3f} s" if since is not None else ""
        what = "2MSL expired" if "2MSL" in cause else cause
        marks.append(LadderMark(change.time, side, f"{what}: {change.old.value} -> {change.new.value}{after}",
                                change.new.value))
    return marks


def segments_from_packets(
    packets: Iterable[tuple[float, bytes]], stack_port: int, peer_port: int | None = None
) -> list[tuple[float, str, Segment]]:
    """The TCP segments of one connection in a capture (e.g. `read_pcap`), ready for
    `entries_from_segments`. Packets that are not well-formed TCP over IPv4 or IPv6, or belong to other
    ports, are skipped: a capture on a shared interface has plenty of both."""
    from stack.wire.parse import parse_packet  # here, so the renderers work without the wire codec
    from stack.wire.reasons import MalformedPacket

    out: list[tuple[float, str, Segment]] = []
    for when, packet in packets:
        try:
            seg = parse_packet(packet)
        except MalformedPacket:
            continue
        ports = {seg.src_port, seg.dst_port}
        if stack_port in ports and (peer_port is None or peer_port in ports):
            out.append((when, "", seg))
    return out


# ---------------------------------------------------------------------------------------------
# Text rendering


Row = LadderEntry | LadderMark


def rows_in_time_order(entries: Sequence[LadderEntry], marks: Sequence[LadderMark] = ()) -> list[Row]:
    """Entries in their order, marks slotted in by time (after entries of the same time)."""
    rows: list[Row] = list(entries)
    for mark in sorted(marks, key=lambda m: m.time):
        at = len(rows)
        while at > 0 and rows[at - 1].time > mark.time:
            at -= 1
        rows.insert(at, mark)
    return rows


def crossing_note(entry: LadderEntry, t0: float) -> str:
    """What the rows say about a segment that left its sender before the rows above it."""
    if entry.sent is None or entry.held:
        return ""
    return f"sent at {(entry.sent - t0) * 1000.0:.3f} ms, crossing the segment it does not ack"


def render_text(entries: Sequence[LadderEntry], left: str = "stack", right: str = "kernel", title: str = "",
                marks: Sequence[LadderMark] = ()) -> str:
    """A terminal ladder: one row per segment with the time it arrived (ms since the first row),
    the left side's state, the arrow with its label, the right side's state and any note. A
    dropped segment's arrow stops midway at an X; a mark is a row of its own between the lifelines."""
    labels = [e.label for e in entries]
    inner = max([34, len(left) + len(right) + 6] + [len(lb) + 14 for lb in labels] +
                [len(m.text) + 6 for m in marks])
    lstate_w = max([len(f"{left} state")] + [len(e.stack_state or "") for e in entries] +
                   [len(m.state or "") for m in marks if m.side == "stack"])
    rstate_w = max([len(f"{right} state")] + [len(e.kernel_state or "") for e in entries])
    rows = rows_in_time_order(entries, marks)
    t0 = rows[0].time if rows else 0.0

    lines: list[str] = []
    if title:
        lines += [title, ""]
    # Header: names sit over the two '|' lifeline columns.
    names = f"{left:<{inner // 2 + 1}}{right:>{inner - inner // 2 + 1}}"
    lines.append(f"{'time ms':>10}  {left + ' state':<{lstate_w}}  {names}  {right + ' state'}")
    lines.append(f"{'-' * 10}  {'-' * lstate_w}  {'|' + ' ' * inner + '|'}  {'-' * rstate_w}")
    lstate = rstate = ""
    for row in rows:
        ms = (row.time - t0) * 1000.0
        if isinstance(row, LadderMark):
            if row.side == "stack":
                lstate = row.state or lstate
            else:
                rstate = row.state or rstate
            middle = "|" + f" {row.text} ".center(inner, ".") + "|"
            lines.append(f"{ms:10.3f}  {lstate:<{lstate_w}}  {middle}  {rstate:<{rstate_w}}".rstrip())
            continue
        entry, label = row, row.label
        # Both kinds of arrow put the label in the same column, so seq/ack line up down the page.
        if entry.dropped:
            if entry.direction == STACK_TO_KERNEL:
                arrow = "|" + f"--- {label} --X".ljust(inner) + "|"
            else:
                arrow = "|" + " " * 4 + f"X-- {label} ".ljust(inner - 4, "-") + "|"
        elif entry.direction == STACK_TO_KERNEL:
            arrow = "|" + f"--- {label} ".ljust(inner - 1, "-") + ">|"
        else:
            arrow = "|<" + f"-- {label} ".ljust(inner - 1, "-") + "|"
        lstate, rstate = entry.stack_state or "", entry.kernel_state or ""
        text = f"{ms:10.3f}  {lstate:<{lstate_w}}  {arrow}  {rstate:<{rstate_w}}"
        note = "; ".join(n for n in (entry.note, crossing_note(entry, t0)) if n)
        if note:
            text += f"  ({note})"
        lines.append(text.rstrip())
    lines.append(f"{'':10}  {'':{lstate_w}}  {'|' + ' ' * inner + '|'}")
    lines.append("seq/ack relative to each side's ISN (SYN = seq 0): a SYN or FIN at seq n is acked by n+1.")
    lines.append("Times are arrivals, in ms since the first row; X: lost on the way.")
    return "\n".join(lines) + "\n"
