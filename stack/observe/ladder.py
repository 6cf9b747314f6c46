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
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal
from xml.sax.saxutils import escape, quoteattr

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
    means unknown, and the renderers leave it blank.
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

    @property
    def label(self) -> str:
        """Compact text of the arrow: 'FA seq=1 ack=1' (+ ' len=n' when carrying data)."""
        parts = [self.flags, f"seq={self.seq_rel}"]
        if self.ack_rel is not None:
            parts.append(f"ack={self.ack_rel}")
        if self.length:
            parts.append(f"len={self.length}")
        return " ".join(parts)


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


def entries_from_segments(
    segments: Sequence[tuple[float, str, Segment]],
    stack_port: int,
    *,
    stack_states: StateTimeline | None = None,
    kernel_states: StateTimeline | None = None,
    infer_states: bool = False,
) -> list[LadderEntry]:
    """Ladder entries for one connection's segments, with Wireshark-style relative numbers.

    `segments` are (time, direction, segment): direction is "out"/"in" (as in traces) or a ladder
    direction; any other word (e.g. "") means "tell from the ports", with `stack_port` being the
    stack's port. Each side's state after a segment comes from its timeline (the last change at
    or before the segment's time); a side with no timeline is inferred from the segments when
    `infer_states` is set, and left unknown otherwise.
    Retransmitted SYN/FIN/data (starting below the highest sequence number already sent that way)
    get the note "retransmission".
    """
    rows = [(t, _direction(word, seg, stack_port), seg) for t, word, seg in segments]

    isn: dict[LadderDirection, int] = {}
    for _, direction, seg in rows:  # the first SYN per direction wins over earlier non-SYN segments
        if seg.flags & SYN and direction not in isn:
            isn[direction] = seg.seq
    for _, direction, seg in rows:
        isn.setdefault(direction, seg.seq)

    timelines = {
        STACK_TO_KERNEL: None if stack_states is None else _Timeline(stack_states),
        KERNEL_TO_STACK: None if kernel_states is None else _Timeline(kernel_states),
    }
    inferred = {STACK_TO_KERNEL: _Inferred(), KERNEL_TO_STACK: _Inferred()}  # keyed by sender side
    next_seq: dict[LadderDirection, int] = {}
    entries = []
    for when, direction, seg in rows:
        other: LadderDirection = KERNEL_TO_STACK if direction == STACK_TO_KERNEL else STACK_TO_KERNEL
        seq_rel = (seg.seq - isn[direction]) % _MOD
        ack_rel: int | None = None
        if seg.flags & ACK:
            # Without any segment from the other side there is no ISN to count from: show it raw.
            ack_rel = (seg.ack - isn[other]) % _MOD if other in isn else seg.ack
        note = ""
        if seg.seg_len:
            end = seq_rel + seg.seg_len
            if direction in next_seq and seq_rel < next_seq[direction]:
                note = "retransmission"
            next_seq[direction] = max(end, next_seq.get(direction, 0))

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
                note=note,
            )
        )
    return entries


def segments_from_packets(
    packets: Iterable[tuple[float, bytes]], stack_port: int, peer_port: int | None = None
) -> list[tuple[float, str, Segment]]:
    """The TCP segments of one connection in a capture (e.g. `read_pcap`), ready for
    `entries_from_segments`. Packets that are not well-formed IPv4/TCP, or belong to other ports,
    are skipped: a capture on a shared interface has plenty of both."""
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


def render_text(entries: Sequence[LadderEntry], left: str = "stack", right: str = "kernel", title: str = "") -> str:
    """A terminal ladder: one row per segment with the time since the first one (ms), the left
    side's state, the arrow with its label, the right side's state and any note."""
    labels = [e.label for e in entries]
    inner = max([34, len(left) + len(right) + 6] + [len(lb) + 10 for lb in labels])
    lstate_w = max([len(f"{left} state")] + [len(e.stack_state or "") for e in entries])
    rstate_w = max([len(f"{right} state")] + [len(e.kernel_state or "") for e in entries])
    t0 = entries[0].time if entries else 0.0

    lines: list[str] = []
    if title:
        lines += [title, ""]
    # Header: names sit over the two '|' lifeline columns.
    names = f"{left:<{inner // 2 + 1}}{right:>{inner - inner // 2 + 1}}"
    lines.append(f"{'time ms':>10}  {left + ' state':<{lstate_w}}  {names}  {right + ' state'}")
    lines.append(f"{'-' * 10}  {'-' * lstate_w}  {'|' + ' ' * inner + '|'}  {'-' * rstate_w}")
    for entry, label in zip(entries, labels, strict=True):
        # Both kinds of arrow put the label in the same column, so seq/ack line up down the page.
        if entry.direction == STACK_TO_KERNEL:
            arrow = "|" + f"--- {label} ".ljust(inner - 1, "-") + ">|"
        else:
            arrow = "|<" + f"-- {label} ".ljust(inner - 1, "-") + "|"
        ms = (entry.time - t0) * 1000.0
        lstate, rstate = entry.stack_state or "", entry.kernel_state or ""
        row = f"{ms:10.3f}  {lstate:<{lstate_w}}  {arrow}  {rstate:<{rstate_w}}"
        if entry.note:
            row += f"  ({entry.note})"
        lines.append(row.rstrip())
    lines.append(f"{'':10}  {'':{lstate_w}}  {'|' + ' ' * inner + '|'}")
    lines.append("seq/ack relative to each side's ISN (SYN = seq 0): a SYN or FIN at seq n is acked by n+1.")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# SVG rendering

_SANS = "DejaVu Sans, Helvetica, Arial, sans-serif"
_MONO = "DejaVu Sans Mono, Menlo, Consolas, monospace"
_MONO_CHAR = 0.61  # advance of one monospace glyph, in ems
_SANS_BOLD_CAPS = 0.74  # generous average advance of a bold capital, in ems (state names)

_FLAG_NAMES = (
    ("S", "SYN"),
    ("F", "FIN"),
    ("R", "RST"),
    ("P", "PSH"),
    ("A", "ACK"),
    ("U", "URG"),
    ("E", "ECE"),
    ("C", "CWR"),
)


def _flag_names(letters: str) -> str:
    """'FA' -> 'FIN, ACK', the Wireshark spelling, easier to read in a picture than letters."""
    names = [name for letter, name in _FLAG_NAMES if letter in letters]
    return ", ".join(names) if names else "none"


def _colour(entry: LadderEntry) -> str:
    if "R" in entry.flags:
        return "#c0392b"  # reset: red
    if "S" in entry.flags:
        return "#1e8449"  # handshake: green
    if "F" in entry.flags:
        return "#7d3c98"  # close: purple
    if entry.length:
        return "#1f5fa8"  # data: blue
    return "#505a64"  # bare ACK: grey


def _fmt(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _text(x: float, y: float, content: str, **attrs: str) -> str:
    # Python names cannot hold '-': font_size -> font-size, and class_ (a keyword) -> class.
    extra = "".join(f" {k.rstrip('_').replace('_', '-')}={quoteattr(v)}" for k, v in attrs.items())
    return f'<text x="{_fmt(x)}" y="{_fmt(y)}"{extra}>{escape(content)}</text>'


def _time_label(seconds: float) -> str:
    # Microsecond resolution in both units: simultaneous-close segments are often 100 us apart
    # even seconds into a run, and "+1.000 s" twice would hide their order.
    if seconds < 1.0:
        return f"+{seconds * 1000.0:.3f} ms"
    return f"+{seconds:.6f} s"


def render_svg(
    entries: Sequence[LadderEntry],
    left: str = "stack",
    right: str = "kernel",
    title: str = "TCP connection close",
    *,
    row: float = 58.0,
    slant: float = 30.0,
) -> str:
    """A standalone SVG ladder diagram.

    Two lifelines with named heads; one slanted arrow per entry, starting at the sender and landing
    lower at the receiver (time flows down; rows are evenly spaced, the real time since the first
    segment is printed on the left); a `[FLAGS] seq= ack=` label along each arrow; each side's new
    state in a box beside its lifeline where it changes -- at the arrow's tail for the sender, at
    its head for the receiver. Elements carry classes (`lifeline`, `arrow`, `state`, `title`) so
    tests and stylesheets can find them.
    """
    pad = 20.0
    label_size, state_size, note_size = 12.5, 12.0, 11.0
    labels = [f"[{_flag_names(e.flags)}] " + e.label.split(" ", 1)[1] for e in entries]
    label_w = max([0.0] + [len(lb) * label_size * _MONO_CHAR for lb in labels])
    note_w = max([0.0] + [len(e.note) * note_size * 0.55 for e in entries])
    names = [s for e in entries for s in (e.stack_state, e.kernel_state) if s]
    state_box_w = max([len("ESTABLISHED")] + [len(s) for s in names]) * state_size * _SANS_BOLD_CAPS * 0.92 + 16
    head_w = max(len(left), len(right)) * 14 * 0.62 + 28

    time_col = 96.0
    left_x = pad + time_col + max(state_box_w + 22, head_w / 2)
    gap = max(340.0, label_w + 110, note_w + 110, head_w + 60)
    right_x = left_x + gap
    width = right_x + max(state_box_w + 22, head_w / 2) + pad
    head_top, head_h = 48.0, 30.0
    first_y = head_top + head_h + 42
    last_y = first_y + max(len(entries) - 1, 0) * row + slant
    legend_y = last_y + 44
    height = legend_y + 16

    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_fmt(width)}" height="{_fmt(height)}" '
        f'viewBox="0 0 {_fmt(width)} {_fmt(height)}" font-family={quoteattr(_SANS)}>',
        f"<title>{escape(title)}</title>",
        f'<rect width="{_fmt(width)}" height="{_fmt(height)}" fill="#ffffff"/>',
        _text(
            width / 2,
            28,
            title,
            class_="title",
            text_anchor="middle",
            font_size="17",
            font_weight="bold",
            fill="#1c2833",
        ),
    ]
    # Lifelines first so arrows and boxes paint over them.
    for x, name in ((left_x, left), (right_x, right)):
        w = len(name) * 14 * 0.62 + 28
        out.append(
            f'<line class="lifeline" x1="{_fmt(x)}" y1="{_fmt(head_top + head_h)}" x2="{_fmt(x)}" '
            f'y2="{_fmt(last_y + 18)}" stroke="#34495e" stroke-width="2" stroke-dasharray="6 4"/>'
        )
        out.append(
            f'<rect class="lifeline-head" x="{_fmt(x - w / 2)}" y="{_fmt(head_top)}" width="{_fmt(w)}" '
            f'height="{_fmt(head_h)}" rx="6" fill="#34495e"/>'
        )
        out.append(
            _text(
                x,
                head_top + 20,
                name,
                text_anchor="middle",
                font_size="14",
                font_weight="bold",
                fill="#ffffff",
            )
        )
    if not entries:
        out.append(_text((left_x + right_x) / 2, first_y, "(no segments)", text_anchor="middle", fill="#7f8c8d"))

    t0 = entries[0].time if entries else 0.0
    prev: dict[str, str | None] = {"stack": None, "kernel": None}
    last_box_y: dict[str, float] = {"stack": -math.inf, "kernel": -math.inf}
    state_marks: list[str] = []  # drawn after all arrows so boxes stay readable
    for i, (entry, label) in enumerate(zip(entries, labels, strict=True)):
        y1 = first_y + i * row
        y2 = y1 + slant
        rightward = entry.direction == STACK_TO_KERNEL
        x1, x2 = (left_x, right_x) if rightward else (right_x, left_x)
        colour = _colour(entry)
        angle = math.degrees(math.atan2(y2 - y1, x2 - x1))
        # Stop the shaft at the arrowhead's base so the line's butt does not poke through the tip.
        ux, uy = (x2 - x1) / math.hypot(x2 - x1, y2 - y1), (y2 - y1) / math.hypot(x2 - x1, y2 - y1)
        head = 11.0
        bx, by = x2 - ux * head, y2 - uy * head
        px, py = -uy * 5, ux * 5
        mx, my = (x1 + x2) / 2, (y1 + y2) / 2
        # Keep text upright: a leftward arrow's angle is near 180 degrees, so turn it around.
        text_angle = angle if rightward else angle - 180
        shaft_w = 2.4 if "F" in entry.flags or "R" in entry.flags else 1.8  # closing segments stand out
        out.append(f'<g class="arrow" data-direction="{entry.direction}">')
        out.append(
            f'<line x1="{_fmt(x1)}" y1="{_fmt(y1)}" x2="{_fmt(bx)}" y2="{_fmt(by)}" stroke="{colour}" '
            f'stroke-width="{shaft_w}"/>'
        )
        out.append(
            f'<polygon points="{_fmt(x2)},{_fmt(y2)} {_fmt(bx + px)},{_fmt(by + py)} '
            f'{_fmt(bx - px)},{_fmt(by - py)}" fill="{colour}"/>'
        )
        out.append(f'<g transform="translate({_fmt(mx)} {_fmt(my)}) rotate({text_angle:.2f})">')
        out.append(
            _text(
                0,
                -7,
                label,
                font_family=_MONO,
                font_size=str(label_size),
                text_anchor="middle",
                fill=colour,
                stroke="#ffffff",
                stroke_width="4",
                paint_order="stroke",
                stroke_linejoin="round",
            )
        )
        if entry.note:
            out.append(
                _text(
                    0,
                    15,
                    entry.note,
                    font_size=str(note_size),
                    font_style="italic",
                    text_anchor="middle",
                    fill="#7f8c8d",
                )
            )
        out.append("</g>")
        out.append(
            _text(
                pad + time_col - 10,
                y1 + 4,
                _time_label(entry.time - t0),
                text_anchor="end",
                font_family=_MONO,
                font_size="11",
                fill="#7f8c8d",
            )
        )
        out.append("</g>")

        for side, state, x, on_left in (
            ("stack", entry.stack_state, left_x, True),
            ("kernel", entry.kernel_state, right_x, False),
        ):
            if state is None or state == prev[side]:
                continue
            prev[side] = state
            sender = (side == "stack") == rightward
            at_y = y1 if sender else y2
            box_y = max(at_y, last_box_y[side] + 24)  # push down rather than overlap the last box
            last_box_y[side] = box_y
            state_marks.append(_state_box(x, at_y, box_y, state, on_left, state_box_w, state_size))

    out += state_marks
    out.append(
        _text(
            pad,
            legend_y,
            "seq/ack relative to each side's ISN (SYN = seq 0): a SYN or FIN at seq n is acked by "
            "n+1.  Times since the first segment.",
            font_size="11",
            fill="#7f8c8d",
        )
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _state_box(x: float, at_y: float, box_y: float, state: str, on_left: bool, box_w: float, size: float) -> str:
    """A state name in a rounded box beside a lifeline, with a dot where the change happened."""
    text_w = len(state) * size * _SANS_BOLD_CAPS * 0.92 + 16
    w = min(box_w, text_w)
    h = 20.0
    bx = x - 12 - w if on_left else x + 12
    parts = [f'<g class="state" data-state={quoteattr(state)}>']
    parts.append(f'<circle cx="{_fmt(x)}" cy="{_fmt(at_y)}" r="4" fill="#34495e"/>')
    edge = bx + w if on_left else bx
    parts.append(
        f'<line x1="{_fmt(x)}" y1="{_fmt(at_y)}" x2="{_fmt(edge)}" y2="{_fmt(box_y)}" stroke="#34495e" '
        f'stroke-width="1"/>'
    )
    parts.append(
        f'<rect x="{_fmt(bx)}" y="{_fmt(box_y - h / 2)}" width="{_fmt(w)}" height="{_fmt(h)}" rx="5" '
        f'fill="#eaf2f8" stroke="#34495e" stroke-width="1"/>'
    )
    parts.append(
        _text(
            bx + w / 2,
            box_y + 4.2,
            state,
            text_anchor="middle",
            font_size=str(size),
            font_weight="bold",
            fill="#1c2833",
        )
    )
    parts.append("</g>")
    return "".join(parts)
