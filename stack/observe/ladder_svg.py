"""Ladder diagrams as standalone SVG: the rows of stack.observe.ladder, drawn.

Two lifelines with named heads; one slanted arrow per segment, leaving its sender and landing lower
at its receiver (time flows down; rows are evenly spaced, the real time of each row is printed on
the left). A segment that left its sender earlier than its row -- held by a fault, or in flight
while the other side's segment arrived -- starts at that earlier row's height, so arrows that were
in flight together cross. A dropped segment stops midway at an X; a held one is dashed, a
duplicate dotted. Timer events (the 2MSL expiry) are dashed lines across the diagram at their
time. A legend under the diagram says all of this. Elements carry classes (`lifeline`, `arrow`,
`state`, `mark`, `legend`, `title`) so tests and stylesheets can find them.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from xml.sax.saxutils import escape, quoteattr

from stack.observe.ladder import STACK_TO_KERNEL, LadderEntry, LadderMark, Row, rows_in_time_order

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


_GREY = "#7f8c8d"
_LEGEND_COLOURS = (("SYN", "#1e8449"), ("FIN", "#7d3c98"), ("RST", "#c0392b"), ("data", "#1f5fa8"),
                   ("ACK", "#505a64"))


class _TimeAxis:
    """Height of a time: rows are evenly spaced, times between two rows fall between them."""

    def __init__(self, times: list[float], ys: list[float]) -> None:
        self.times = times
        self.ys = ys

    def y(self, when: float) -> float:
        times, ys = self.times, self.ys
        if not times:
            return 0.0
        i = bisect.bisect_right(times, when)
        if i == 0:
            return ys[0]
        if i == len(times):
            return ys[-1]
        t0, t1 = times[i - 1], times[i]
        frac = (when - t0) / (t1 - t0) if t1 > t0 else 0.0
        return ys[i - 1] + frac * (ys[i] - ys[i - 1])


def render_svg(
    entries: Sequence[LadderEntry],
    left: str = "stack",
    right: str = "kernel",
    title: str = "TCP connection close",
    *,
    marks: Sequence[LadderMark] = (),
    row: float = 58.0,
    slant: float = 30.0,
) -> str:
    """A standalone SVG ladder diagram of `entries` (and `marks`), see the module docstring."""
    pad = 20.0
    label_size, state_size, note_size = 12.5, 12.0, 11.0
    rows: list[Row] = rows_in_time_order(entries, marks)
    labels = {id(e): f"[{_flag_names(e.flags)}] " + e.label.split(" ", 1)[1] for e in entries}
    label_w = max([0.0] + [len(lb) * label_size * _MONO_CHAR for lb in labels.values()])
    note_w = max([0.0] + [len(e.note) * note_size * 0.55 for e in entries] +
                 [len(m.text) * note_size * 0.6 for m in marks])
    names = [s for e in entries for s in (e.stack_state, e.kernel_state) if s] + [m.state for m in marks if m.state]
    state_box_w = max([len("ESTABLISHED")] + [len(s) for s in names]) * state_size * _SANS_BOLD_CAPS * 0.92 + 16
    head_w = max(len(left), len(right)) * 14 * 0.62 + 28

    time_col = 96.0
    left_x = pad + time_col + max(state_box_w + 22, head_w / 2)
    gap = max(340.0, label_w + 110, note_w + 110, head_w + 60)
    right_x = left_x + gap
    width = right_x + max(state_box_w + 22, head_w / 2) + pad
    head_top, head_h = 48.0, 30.0
    first_y = head_top + head_h + 42
    last_y = first_y + max(len(rows) - 1, 0) * row + slant
    legend_y = last_y + 44
    height = legend_y + 64

    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_fmt(width)}" height="{_fmt(height)}" '
        f'viewBox="0 0 {_fmt(width)} {_fmt(height)}" font-family={quoteattr(_SANS)}>',
        f"<title>{escape(title)}</title>",
        f'<rect width="{_fmt(width)}" height="{_fmt(height)}" fill="#ffffff"/>',
        _text(width / 2, 28, title, class_="title", text_anchor="middle", font_size="17", font_weight="bold",
              fill="#1c2833"),
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
        out.append(_text(x, head_top + 20, name, text_anchor="middle", font_size="14", font_weight="bold",
                         fill="#ffffff"))
    if not rows:
        out.append(_text((left_x + right_x) / 2, first_y, "(no segments)", text_anchor="middle", fill=_GREY))

    t0 = rows[0].time if rows else 0.0
    axis = _TimeAxis([r.time for r in rows], [first_y + i * row for i in range(len(rows))])
    prev: dict[str, str | None] = {"stack": None, "kernel": None}
    last_box_y: dict[str, float] = {"stack": -math.inf, "kernel": -math.inf}
    state_marks: list[str] = []  # drawn after all arrows so boxes stay readable

    def state_change(side: str, state: str | None, at_y: float) -> None:
        if state is None or state == prev[side]:
            return
        prev[side] = state
        x, on_left = (left_x, True) if side == "stack" else (right_x, False)
        box_y = max(at_y, last_box_y[side] + 24)  # push down rather than overlap the last box
        last_box_y[side] = box_y
        state_marks.append(_state_box(x, at_y, box_y, state, on_left, state_box_w, state_size))

    for i, item in enumerate(rows):
        y_row = first_y + i * row
        out.append(_text(pad + time_col - 10, y_row + 4, _time_label(item.time - t0), text_anchor="end",
                         font_family=_MONO, font_size="11", fill=_GREY))
        if isinstance(item, LadderMark):
            out.append(_mark(item, left_x, right_x, y_row + slant / 2, note_size))
            state_change(item.side, item.state, y_row + slant / 2)
            continue
        entry, label = item, labels[id(item)]
        rightward = entry.direction == STACK_TO_KERNEL
        x1, x2 = (left_x, right_x) if rightward else (right_x, left_x)
        y1 = axis.y(entry.sent) if entry.sent is not None else y_row
        y2 = y_row + slant
        out.append(_arrow(entry, label, x1, y1, x2, y2, label_size, note_size))
        for side, state in (("stack", entry.stack_state), ("kernel", entry.kernel_state)):
            sender = (side == "stack") == rightward
            if entry.dropped and not sender:
                continue  # it never arrived
            state_change(side, state, y1 if sender else y2)

    out += state_marks
    out += _legend(pad, legend_y, note_size)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _arrow(entry: LadderEntry, label: str, x1: float, y1: float, x2: float, y2: float, label_size: float,
           note_size: float) -> str:
    """One segment: shaft (dashed when held, dotted for a duplicate), head or X, label along it."""
    colour = _colour(entry)
    rightward = x2 > x1
    angle = math.degrees(math.atan2(y2 - y1, x2 - x1))
    length = math.hypot(x2 - x1, y2 - y1)
    ux, uy = (x2 - x1) / length, (y2 - y1) / length
    mx, my = (x1 + x2) / 2, (y1 + y2) / 2
    text_angle = angle if rightward else angle - 180  # keep text upright
    shaft_w = 2.4 if "F" in entry.flags or "R" in entry.flags else 1.8  # closing segments stand out
    dash = ' stroke-dasharray="8 5"' if entry.held else ' stroke-dasharray="2 4"' if "dup" in entry.faults else ""
    kind = "dropped" if entry.dropped else "held" if entry.held else "duplicate" if "dup" in entry.faults else ""
    parts = [f'<g class="arrow" data-direction="{entry.direction}"' + (f' data-fault="{kind}"' if kind else "") + ">"]
    if entry.dropped:
        # Lost on the way: the shaft stops at the middle, where an X marks the loss.
        ex, ey = x1 + ux * length * 0.55, y1 + uy * length * 0.55
        parts.append(f'<line x1="{_fmt(x1)}" y1="{_fmt(y1)}" x2="{_fmt(ex)}" y2="{_fmt(ey)}" stroke="{colour}" '
                     f'stroke-width="{shaft_w}"{dash}/>')
        r = 7.0
        parts.append(f'<path class="loss" d="M{_fmt(ex - r)},{_fmt(ey - r)} L{_fmt(ex + r)},{_fmt(ey + r)} '
                     f'M{_fmt(ex - r)},{_fmt(ey + r)} L{_fmt(ex + r)},{_fmt(ey - r)}" stroke="#c0392b" '
                     f'stroke-width="3"/>')
    else:
        # Stop the shaft at the arrowhead's base so the line's butt does not poke through the tip.
        head = 11.0
        bx, by = x2 - ux * head, y2 - uy * head
        px, py = -uy * 5, ux * 5
        parts.append(f'<line x1="{_fmt(x1)}" y1="{_fmt(y1)}" x2="{_fmt(bx)}" y2="{_fmt(by)}" stroke="{colour}" '
                     f'stroke-width="{shaft_w}"{dash}/>')
        parts.append(f'<polygon points="{_fmt(x2)},{_fmt(y2)} {_fmt(bx + px)},{_fmt(by + py)} '
                     f'{_fmt(bx - px)},{_fmt(by - py)}" fill="{colour}"/>')
    parts.append(f'<g transform="translate({_fmt(mx)} {_fmt(my)}) rotate({text_angle:.2f})">')
    parts.append(_text(0, -7, label, font_family=_MONO, font_size=str(label_size), text_anchor="middle", fill=colour,
                       stroke="#ffffff", stroke_width="4", paint_order="stroke", stroke_linejoin="round"))
    if entry.note:
        parts.append(_text(0, 15, entry.note, font_size=str(note_size), font_style="italic", text_anchor="middle",
                           fill=_GREY))
    parts.append("</g></g>")
    return "".join(parts)


def _mark(mark: LadderMark, left_x: float, right_x: float, y: float, size: float) -> str:
    """A timer event at its time: a dashed line across both lifelines, the text on it."""
    return (f'<g class="mark" data-side="{mark.side}">'
            f'<line x1="{_fmt(left_x - 8)}" y1="{_fmt(y)}" x2="{_fmt(right_x + 8)}" y2="{_fmt(y)}" stroke="#b9770e" '
            f'stroke-width="1.5" stroke-dasharray="3 3"/>'
            + _text((left_x + right_x) / 2, y - 6, mark.text, text_anchor="middle", font_size=str(size),
                    font_weight="bold", fill="#b9770e", stroke="#ffffff", stroke_width="4", paint_order="stroke")
            + "</g>")


def _legend(x: float, y: float, size: float) -> list[str]:
    """What colours, line styles and marks mean, in two lines under the diagram."""
    out = ['<g class="legend">']
    cx = x
    for name, colour in _LEGEND_COLOURS:
        out.append(f'<line x1="{_fmt(cx)}" y1="{_fmt(y - 4)}" x2="{_fmt(cx + 22)}" y2="{_fmt(y - 4)}" '
                   f'stroke="{colour}" stroke-width="2.4"/>')
        out.append(_text(cx + 27, y, name, font_size=str(size), fill="#1c2833"))
        cx += 27 + len(name) * size * 0.62 + 16
    y2 = y + 20
    cx = x
    for name, style in (("held by a fault rule", ' stroke-dasharray="8 5"'), ("duplicate", ' stroke-dasharray="2 4"')):
        out.append(f'<line x1="{_fmt(cx)}" y1="{_fmt(y2 - 4)}" x2="{_fmt(cx + 22)}" y2="{_fmt(y2 - 4)}" '
                   f'stroke="#505a64" stroke-width="1.8"{style}/>')
        out.append(_text(cx + 27, y2, name, font_size=str(size), fill="#1c2833"))
        cx += 27 + len(name) * size * 0.58 + 16
    out.append(f'<path d="M{_fmt(cx + 4)},{_fmt(y2 - 10)} L{_fmt(cx + 16)},{_fmt(y2 + 2)} M{_fmt(cx + 4)},'
               f'{_fmt(y2 + 2)} L{_fmt(cx + 16)},{_fmt(y2 - 10)}" stroke="#c0392b" stroke-width="3"/>')
    out.append(_text(cx + 24, y2, "lost on the way", font_size=str(size), fill="#1c2833"))
    cx += 24 + len("lost on the way") * size * 0.58 + 16
    out.append(f'<line x1="{_fmt(cx)}" y1="{_fmt(y2 - 4)}" x2="{_fmt(cx + 22)}" y2="{_fmt(y2 - 4)}" stroke="#b9770e" '
               f'stroke-width="1.5" stroke-dasharray="3 3"/>')
    out.append(_text(cx + 27, y2, "timer expired", font_size=str(size), fill="#1c2833"))
    out.append(_text(x, y2 + 20, "seq/ack relative to each side's ISN (SYN = seq 0): a SYN or FIN at seq n is acked "
                     "by n+1.", font_size=str(size), fill=_GREY))
    out.append(_text(x, y2 + 36, "Times on the left are arrivals, since the first row; arrows that were in flight at "
                     "the same time cross.", font_size=str(size), fill=_GREY))
    out.append("</g>")
    return out


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
