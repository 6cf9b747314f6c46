"""Ladder diagrams: Wireshark-style relative numbers, both renderers, states from events or inferred."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stack.faults.adapter import FaultNote
from stack.observe.ladder import (
    KERNEL_TO_STACK,
    STACK_TO_KERNEL,
    LadderEntry,
    Observed,
    entries_from_segments,
    marks_from_states,
    render_text,
    segments_from_packets,
)
from stack.observe.ladder_svg import render_svg
from stack.tcp.events import StateChanged
from stack.tcp.states import State
from stack.wire.build import build_packet
from stack.wire.segment import ACK, FIN, PSH, SYN, Segment

STACK = ("10.0.0.2", 40000)
KERNEL = ("10.0.0.1", 7)
SVG_NS = "{http://www.w3.org/2000/svg}"

ALL_CLOSE_STATES = {
    "SYN-SENT",
    "SYN-RECEIVED",
    "ESTABLISHED",
    "FIN-WAIT-1",
    "FIN-WAIT-2",
    "CLOSE-WAIT",
    "LAST-ACK",
    "TIME-WAIT",
    "CLOSED",
}


def out(seq: int, ack: int, flags: int, payload: bytes = b"") -> Segment:
    return Segment(STACK[0], KERNEL[0], STACK[1], KERNEL[1], seq % 2**32, ack % 2**32, flags, 64240, payload=payload)


def inn(seq: int, ack: int, flags: int, payload: bytes = b"") -> Segment:
    return Segment(KERNEL[0], STACK[0], KERNEL[1], STACK[1], seq % 2**32, ack % 2**32, flags, 65160, payload=payload)


def four_way_close(a: int = 0xFFFFFFFE, b: int = 123456) -> list[tuple[float, str, Segment]]:
    """SYN, SYN-ACK, ACK, FIN, ACK, FIN, ACK; the stack's ISN wraps past 2**32 on purpose."""
    return [
        (10.000, "out", out(a, 0, SYN)),
        (10.001, "in", inn(b, a + 1, SYN | ACK)),
        (10.002, "out", out(a + 1, b + 1, ACK)),
        (11.000, "out", out(a + 1, b + 1, FIN | ACK)),
        (11.001, "in", inn(b + 1, a + 2, ACK)),
        (11.500, "in", inn(b + 1, a + 2, FIN | ACK)),
        (11.501, "out", out(a + 2, b + 2, ACK)),
    ]


EXPECTED_NUMBERS = [  # (direction, flags, seq_rel, ack_rel), as Wireshark shows them
    (STACK_TO_KERNEL, "S", 0, None),
    (KERNEL_TO_STACK, "SA", 0, 1),
    (STACK_TO_KERNEL, "A", 1, 1),
    (STACK_TO_KERNEL, "FA", 1, 1),
    (KERNEL_TO_STACK, "A", 1, 2),
    (KERNEL_TO_STACK, "FA", 1, 2),
    (STACK_TO_KERNEL, "A", 2, 2),
]
EXPECTED_STATES = [  # (stack, kernel) once each segment has been sent and received
    ("SYN-SENT", "SYN-RECEIVED"),
    ("ESTABLISHED", "SYN-RECEIVED"),
    ("ESTABLISHED", "ESTABLISHED"),
    ("FIN-WAIT-1", "CLOSE-WAIT"),
    ("FIN-WAIT-2", "CLOSE-WAIT"),
    ("TIME-WAIT", "LAST-ACK"),
    ("TIME-WAIT", "CLOSED"),
]


def test_relative_numbers_and_inferred_states() -> None:
    entries = entries_from_segments(four_way_close(), STACK[1], infer_states=True)
    assert [(e.direction, e.flags, e.seq_rel, e.ack_rel) for e in entries] == EXPECTED_NUMBERS
    assert [(e.stack_state, e.kernel_state) for e in entries] == EXPECTED_STATES
    assert all(e.length == 0 and e.note == "" for e in entries)


def test_states_from_timelines_take_precedence() -> None:
    four = (*STACK, *KERNEL)
    s = State
    stack_events = [
        StateChanged(10.000, four, s.CLOSED, s.SYN_SENT, "active OPEN / snd SYN"),
        StateChanged(10.001, four, s.SYN_SENT, s.ESTABLISHED, "rcv SYN,ACK / snd ACK"),
        StateChanged(11.000, four, s.ESTABLISHED, s.FIN_WAIT_1, "CLOSE / snd FIN"),
        StateChanged(11.001, four, s.FIN_WAIT_1, s.FIN_WAIT_2, "rcv ACK of FIN"),
        StateChanged(11.500, four, s.FIN_WAIT_2, s.TIME_WAIT, "rcv FIN / snd ACK"),
    ]
    kernel_polls: list[tuple[float, State | str]] = [(10.0, "SYN-RECV"), (11.6, s.CLOSED)]  # e.g. from `ss`
    entries = entries_from_segments(four_way_close(), STACK[1], stack_states=stack_events, kernel_states=kernel_polls)
    assert [e.stack_state for e in entries] == [st for st, _ in EXPECTED_STATES]
    assert [e.kernel_state for e in entries] == ["SYN-RECV"] * 7  # what the polls saw, nothing inferred
    without = entries_from_segments(four_way_close(), STACK[1])
    assert all(e.stack_state is None and e.kernel_state is None for e in without)


def test_text_ladder_shows_every_state_and_relative_numbers() -> None:
    entries = entries_from_segments(four_way_close(), STACK[1], infer_states=True)
    text = render_text(entries, title="four-way close")
    print(text)
    for state in ALL_CLOSE_STATES:
        assert state in text
    rows = [line for line in text.splitlines() if ">|" in line or "|<" in line]
    assert len(rows) == 7
    # Each row: stack's state left, kernel's right, arrow pointing from sender to receiver.
    for row, (direction, flags, seq, ack), (sst, kst) in zip(rows, EXPECTED_NUMBERS, EXPECTED_STATES, strict=True):
        label = f"{flags} seq={seq}" + ("" if ack is None else f" ack={ack}")
        assert label in row
        assert (">|" in row) == (direction == STACK_TO_KERNEL) and ("|<" in row) == (direction == KERNEL_TO_STACK)
        left, right = row.split("|")[0], row.split("|")[-1]
        assert sst in left and kst in right
    # The times are relative to the first segment, in ms.
    assert rows[0].split()[0] == "0.000" and rows[-1].split()[0] == "1501.000"
    # Lifeline bars line up on every row.
    bars = {tuple(m.start() for m in re.finditer(r"\|", r)) for r in rows}
    assert len(bars) == 1


def svg_tree(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG_NS}svg"
    return root


def by_class(root: ET.Element, cls: str) -> list[ET.Element]:
    return [el for el in root.iter() if el.get("class") == cls]


def test_svg_has_two_lifelines_one_arrow_per_segment_and_state_labels() -> None:
    entries = entries_from_segments(four_way_close(), STACK[1], infer_states=True)
    svg = render_svg(entries, left="tcpstack", right="linux", title="Four-way close & <friends>")
    root = svg_tree(svg)
    lifelines = by_class(root, "lifeline")
    assert len(lifelines) == 2
    assert all(el.get("x1") == el.get("x2") for el in lifelines)  # vertical
    left_x, right_x = sorted(float(el.get("x1", "nan")) for el in lifelines)

    arrows = by_class(root, "arrow")
    assert len(arrows) == len(entries)
    for arrow, (direction, _flags, seq, ack) in zip(arrows, EXPECTED_NUMBERS, strict=True):
        line = arrow.find(f"{SVG_NS}line")
        assert line is not None
        x1, y1, x2, y2 = (float(line.get(k, "nan")) for k in ("x1", "y1", "x2", "y2"))
        assert y2 > y1  # time flows down
        if direction == STACK_TO_KERNEL:
            assert x1 == left_x and x2 > x1
        else:
            assert x1 == right_x and x2 < x1
        text = " ".join("".join(t.itertext()) for t in arrow.iter(f"{SVG_NS}text"))
        assert f"seq={seq}" in text and (ack is None or f"ack={ack}" in text)

    states = [el.get("data-state") for el in by_class(root, "state")]
    assert set(states) == ALL_CLOSE_STATES
    # A box appears only where a side's state changes: 5 changes for each side.
    assert len(states) == 10
    titles = by_class(root, "title")
    assert len(titles) == 1 and "".join(titles[0].itertext()) == "Four-way close & <friends>"
    assert "tcpstack" in svg and "linux" in svg


def test_svg_geometry_stays_inside_the_canvas() -> None:
    """Nothing drawn past the edges (labels of long arrows, boxes of long state names)."""
    segs = four_way_close()
    segs.insert(3, (10.5, "out", out(0xFFFFFFFF, 123457, PSH | ACK, b"x" * 1448)))
    entries = entries_from_segments(segs, STACK[1], infer_states=True)
    root = svg_tree(render_svg(entries, left="a very long left-hand name", right="r"))
    width, height = float(root.get("width", "0")), float(root.get("height", "0"))
    # Arrow labels live in rotated groups with local coordinates; everything else is absolute.
    local = {el for g in root.iter(f"{SVG_NS}g") if g.get("transform") for el in g.iter() if el is not g}
    checked = 0
    for el in root.iter():
        if el in local:
            continue
        for key in ("x", "x1", "x2", "cx"):
            if key in el.attrib:
                assert 0 <= float(el.attrib[key]) <= width, (el.tag, el.attrib)
                checked += 1
        for key in ("y", "y1", "y2", "cy"):
            if key in el.attrib:
                assert 0 <= float(el.attrib[key]) <= height, (el.tag, el.attrib)
        if el.tag == f"{SVG_NS}rect":
            assert float(el.get("x", "0")) + float(el.attrib["width"]) <= width, el.attrib
    assert checked > 50


def test_svg_of_nothing_is_still_valid() -> None:
    root = svg_tree(render_svg([]))
    assert len(by_class(root, "lifeline")) == 2 and not by_class(root, "arrow")


def test_data_lengths_and_retransmissions() -> None:
    a, b = 100, 900
    segs = [
        (0.0, "out", out(a, 0, SYN)),
        (0.1, "in", inn(b, a + 1, SYN | ACK)),
        (0.2, "out", out(a + 1, b + 1, ACK)),
        (0.3, "out", out(a + 1, b + 1, PSH | ACK, b"hello")),
        (0.5, "out", out(a + 1, b + 1, PSH | ACK, b"hello")),  # RTO retransmission
        (0.6, "in", inn(b + 1, a + 6, ACK)),
        (0.7, "out", out(a + 6, b + 1, FIN | ACK)),
        (0.9, "out", out(a + 6, b + 1, FIN | ACK)),  # FIN retransmitted
        (1.0, "in", inn(b + 1, a + 7, FIN | ACK)),
    ]
    entries = entries_from_segments(segs, STACK[1])
    assert [(e.seq_rel, e.length, e.note) for e in entries[3:5]] == [(1, 5, ""), (1, 5, "retransmission")]
    assert [e.note for e in entries[6:]] == ["", "retransmission", ""]
    assert entries[6].label == "FA seq=6 ack=1" and entries[3].label == "PA seq=1 ack=1 len=5"
    assert entries[8].ack_rel == 7  # FIN at seq 6 acked by 7
    assert "(retransmission)" in render_text(entries)


def test_capture_starting_mid_stream_counts_from_first_seen() -> None:
    segs = [
        (0.0, "", out(5000, 9000, FIN | ACK)),
        (0.1, "", inn(9000, 5001, FIN | ACK)),
        (0.2, "", out(5001, 9001, ACK)),
    ]
    entries = entries_from_segments(segs, STACK[1], infer_states=True)
    assert [(e.seq_rel, e.ack_rel) for e in entries] == [(0, 0), (0, 1), (1, 1)]
    assert [e.direction for e in entries] == [STACK_TO_KERNEL, KERNEL_TO_STACK, STACK_TO_KERNEL]
    assert [(e.stack_state, e.kernel_state) for e in entries] == [
        ("FIN-WAIT-1", "CLOSE-WAIT"),
        ("TIME-WAIT", "LAST-ACK"),  # its FIN carried the ACK of ours: FIN-WAIT-1 -> -2 -> TIME-WAIT
        ("TIME-WAIT", "CLOSED"),
    ]


def test_direction_must_agree_with_ports() -> None:
    with pytest.raises(ValueError, match="ports say"):
        entries_from_segments([(0.0, "in", out(1, 0, SYN))], STACK[1])
    with pytest.raises(ValueError, match="cannot tell"):
        entries_from_segments([(0.0, "", out(1, 0, SYN))], 9999)


def test_segments_from_packets_keeps_one_connection() -> None:
    close = four_way_close()
    other = Segment("10.0.0.1", "10.0.0.2", 7, 40001, 1, 0, SYN, 100)
    packets = [(t, build_packet(s)) for t, _, s in close]
    packets.insert(2, (10.0015, build_packet(other)))
    packets.insert(4, (10.003, b"\x60" + bytes(39)))  # IPv6: not ours
    segs = segments_from_packets(packets, STACK[1], KERNEL[1])
    assert [s for _, _, s in segs] == [s for _, _, s in close]
    entries = entries_from_segments(segs, STACK[1], infer_states=True)
    assert [(e.direction, e.flags, e.seq_rel, e.ack_rel) for e in entries] == EXPECTED_NUMBERS


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_relative_numbers_do_not_depend_on_the_isns(a: int, b: int) -> None:
    entries = entries_from_segments(four_way_close(a, b), STACK[1], infer_states=True)
    assert [(e.direction, e.flags, e.seq_rel, e.ack_rel) for e in entries] == EXPECTED_NUMBERS
    assert [(e.stack_state, e.kernel_state) for e in entries] == EXPECTED_STATES


def test_entry_label() -> None:
    e = LadderEntry(0.0, STACK_TO_KERNEL, "PA", 1, 1, 10, None, None)
    assert e.label == "PA seq=1 ack=1 len=10"


# ------------------------------------------------------------------------------ what faults did
def _note(*faults: str, since: float) -> FaultNote:
    return FaultNote(tuple(faults), since)


def test_dropped_segments_stop_midway_and_change_no_state() -> None:
    segs: list[Observed] = list(four_way_close())
    fin = segs[5]  # the kernel's FIN
    segs.insert(5, (fin[0] - 0.2, "in", fin[2], _note("drop", since=fin[0] - 0.2)))
    entries = entries_from_segments(segs, STACK[1], infer_states=True)
    lost = entries[5]
    assert lost.dropped and lost.note == "dropped by a fault rule"
    assert lost.stack_state == "FIN-WAIT-2"  # the lost FIN moved nobody to TIME-WAIT
    assert entries[6].stack_state == "TIME-WAIT"
    text = render_text(entries)
    row = next(line for line in text.splitlines() if "dropped" in line)
    assert "X-- FA seq=1 ack=2" in row and "|<" not in row
    root = svg_tree(render_svg(entries))
    arrows = by_class(root, "arrow")
    dropped = [a for a in arrows if a.get("data-fault") == "dropped"]
    assert len(dropped) == 1
    assert dropped[0].find(f"{SVG_NS}polygon") is None  # no arrowhead: it never arrived
    line = dropped[0].find(f"{SVG_NS}line")
    assert line is not None
    lifelines = sorted(float(el.get("x1", "nan")) for el in by_class(root, "lifeline"))
    assert lifelines[0] < float(line.get("x2", "nan")) < lifelines[1]  # stops between the lifelines
    assert any(el.get("class") == "loss" for el in dropped[0].iter())


def test_duplicates_made_by_a_fault_are_not_retransmissions() -> None:
    segs: list[Observed] = list(four_way_close())
    t, word, fin = segs[3]
    segs.insert(4, (t, word, fin, _note("dup", since=t)))
    entries = entries_from_segments(segs, STACK[1])
    assert entries[4].note == "duplicate made by a fault rule"
    assert "retransmission" not in render_text(entries)
    # A real retransmission is still one.
    segs.insert(5, (t + 0.2, word, fin))
    assert entries_from_segments(segs, STACK[1])[5].note == "retransmission"


def test_held_segments_leave_their_sender_when_sent() -> None:
    segs: list[Observed] = list(four_way_close())
    t, word, fin = segs[3]  # the stack's FIN, held 0.3 s by a delay rule
    segs[3] = (t + 0.3, word, fin, _note("delay", since=t))
    segs.sort(key=lambda s: s[0])
    entries = entries_from_segments(segs, STACK[1])
    held = next(e for e in entries if e.held)
    assert held.sent == t and held.time == t + 0.3 and held.note == "held 300.0 ms by delay"
    root = svg_tree(render_svg(entries))
    arrow = next(a for a in by_class(root, "arrow") if a.get("data-fault") == "held")
    line = arrow.find(f"{SVG_NS}line")
    assert line is not None and line.get("stroke-dasharray")  # dashed


def simultaneous_close(a: int = 1000, b: int = 5000) -> list[tuple[float, str, Segment]]:
    """Both FINs cross: the kernel's FIN (ack=a+1) was sent before ours (seq a+1) reached it, but
    arrives here after it left -- as when the stack's input is paused."""
    return [
        (0.0, "out", out(a, 0, SYN)),
        (0.001, "in", inn(b, a + 1, SYN | ACK)),
        (0.002, "out", out(a + 1, b + 1, ACK)),
        (1.000, "out", out(a + 1, b + 1, FIN | ACK)),
        (1.020, "in", inn(b + 1, a + 1, FIN | ACK)),
        (1.021, "in", inn(b + 2, a + 2, ACK)),
        (1.022, "out", out(a + 2, b + 2, ACK)),
    ]


def _segment_line(arrow: ET.Element) -> tuple[float, float, float, float]:
    line = arrow.find(f"{SVG_NS}line")
    assert line is not None
    return tuple(float(line.get(k, "nan")) for k in ("x1", "y1", "x2", "y2"))  # type: ignore[return-value]


def _intersect(p: tuple[float, float, float, float], q: tuple[float, float, float, float]) -> bool:
    (x1, y1, x2, y2), (x3, y3, x4, y4) = p, q

    def side(ax: float, ay: float, bx: float, by: float, cx: float, cy: float) -> float:
        return (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)

    return (side(x1, y1, x2, y2, x3, y3) * side(x1, y1, x2, y2, x4, y4) < 0
            and side(x3, y3, x4, y4, x1, y1) * side(x3, y3, x4, y4, x2, y2) < 0)


def test_fins_of_a_simultaneous_close_cross() -> None:
    entries = entries_from_segments(simultaneous_close(), STACK[1], infer_states=True)
    their_fin = entries[4]
    assert their_fin.sent == 1.000  # its ack=1 had not seen our FIN, which arrived at 1.000
    assert entries[3].sent is None and entries[5].sent is None  # the ACK after covers our FIN
    assert "crossing" in render_text(entries)
    arrows = by_class(svg_tree(render_svg(entries)), "arrow")
    ours, theirs = _segment_line(arrows[3]), _segment_line(arrows[4])
    assert _intersect(ours, theirs)
    # In an ordinary four-way close nothing crosses.
    plain = by_class(svg_tree(render_svg(entries_from_segments(four_way_close(), STACK[1]))), "arrow")
    lines = [_segment_line(a) for a in plain]
    assert not any(_intersect(p, q) for i, p in enumerate(lines) for q in lines[i + 1:])


def test_2msl_expiry_is_a_row_on_the_time_axis_and_the_svg_has_a_legend() -> None:
    four = (*STACK, *KERNEL)
    s = State
    changes = [
        StateChanged(11.000, four, s.ESTABLISHED, s.FIN_WAIT_1, "CLOSE"),
        StateChanged(11.001, four, s.FIN_WAIT_1, s.FIN_WAIT_2, "rcv ACK of FIN"),
        StateChanged(11.500, four, s.FIN_WAIT_2, s.TIME_WAIT, "rcv FIN"),
        StateChanged(13.500, four, s.TIME_WAIT, s.CLOSED, "timeout = 2MSL"),
    ]
    marks = marks_from_states(changes)
    assert [(m.time, m.text, m.state) for m in marks] == [
        (13.5, "2MSL expired: TIME-WAIT -> CLOSED after 2.000 s", "CLOSED")]
    entries = entries_from_segments(four_way_close(), STACK[1], stack_states=changes)
    text = render_text(entries, marks=marks)
    last = [line for line in text.splitlines() if "|" in line][-2]
    assert "2MSL expired" in last and last.split()[0] == "3500.000" and "CLOSED" in last
    root = svg_tree(render_svg(entries, marks=marks))
    (mark,) = by_class(root, "mark")
    line = mark.find(f"{SVG_NS}line")
    assert line is not None and line.get("y1") == line.get("y2")  # across, at its time
    arrow_ys = [max(_segment_line(a)[1], _segment_line(a)[3]) for a in by_class(root, "arrow")]
    assert float(line.get("y1", "nan")) > max(arrow_ys)  # after the last segment
    assert "+3.500000 s" in "".join(t.text or "" for t in root.iter(f"{SVG_NS}text"))
    (legend,) = by_class(root, "legend")
    words = " ".join("".join(t.itertext()) for t in legend.iter(f"{SVG_NS}text"))
    for word in ("SYN", "FIN", "RST", "data", "ACK", "held by a fault rule", "duplicate", "lost", "timer"):
        assert word in words
