"""Trace files are JSON lines that follow the documented schema."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from stack.observe.trace import SCHEMA, TraceWriter, read_trace, validate_record
from stack.tcp.events import Closed, CloseReason, StateChanged
from stack.tcp.states import State
from stack.wire.segment import ACK, FIN, Segment

FOUR = ("10.0.0.2", 40000, "10.0.0.1", 7)
FIN_SEG = Segment("10.0.0.2", "10.0.0.1", 40000, 7, 1001, 5001, FIN | ACK, 64240)


def write_sample(w: TraceWriter) -> None:
    w.call(4.999, "10.0.0.2:40000", "10.0.0.1:7", "close")
    w.state_changed(StateChanged(5.0, FOUR, State.ESTABLISHED, State.FIN_WAIT_1, "CLOSE / snd FIN"))
    w.segment(5.0, "out", FIN_SEG)
    w.fault(5.0, "drop", direction="out", segment=FIN_SEG, detail="rule 1: drop first FIN")
    w.segment(5.0, "out", FIN_SEG, fault="drop")
    w.fault(5.1, "link-down")
    w.state(5.2, "10.0.0.2:40000", "10.0.0.1:7", "FIN-WAIT-1", State.FIN_WAIT_2, "rcv ACK of FIN")
    w.call(5.3, "10.0.0.2:40000", None, "listen", "EADDRINUSE")


def test_every_line_is_json_with_the_schema() -> None:
    out = io.StringIO()
    with TraceWriter(out) as w:
        write_sample(w)
    lines = out.getvalue().splitlines()
    assert len(lines) == 8
    records = [json.loads(line) for line in lines]
    for rec in records:
        validate_record(rec)
        assert list(rec) == list(SCHEMA[rec["kind"]])  # documented key order
    assert [r["kind"] for r in records] == ["call", "state", "segment", "fault", "segment", "fault", "state", "call"]
    assert records[1] == {
        "kind": "state",
        "time": 5.0,
        "local": "10.0.0.2:40000",
        "remote": "10.0.0.1:7",
        "old": "ESTABLISHED",
        "new": "FIN-WAIT-1",
        "cause": "CLOSE / snd FIN",
    }
    assert records[2]["segment"] == FIN_SEG.summary() and records[2]["fault"] is None
    assert records[4]["fault"] == "drop"
    assert records[3]["detail"] == "rule 1: drop first FIN"
    assert records[5] == {
        "kind": "fault",
        "time": 5.1,
        "fault": "link-down",
        "dir": None,
        "segment": None,
        "detail": "",
    }
    assert records[6]["new"] == "FIN-WAIT-2"
    assert records[7]["remote"] is None and records[7]["result"] == "EADDRINUSE"
    assert not out.closed  # a stream we did not open stays open


def test_events_keeps_state_changes_and_ignores_the_rest() -> None:
    out = io.StringIO()
    w = TraceWriter(out)
    closed = Closed(handle=None, reason=CloseReason.NORMAL)  # type: ignore[arg-type]
    w.events([closed, StateChanged(1.0, FOUR, State.LAST_ACK, State.CLOSED, "rcv ACK of FIN")])
    w.close()
    (rec,) = read_trace(io.StringIO(out.getvalue()))
    assert (rec["old"], rec["new"]) == ("LAST-ACK", "CLOSED")


def test_path_target_is_buffered_and_closed(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    w = TraceWriter(path)
    write_sample(w)
    assert path.read_text() == ""  # nothing written per record
    w.close()
    w.close()
    assert len(read_trace(path)) == 8
    with pytest.raises(ValueError, match="closed"):
        w.call(1.0, "a:1", None, "close")


def test_flushes_by_size(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    with TraceWriter(path, flush_bytes=1000) as w:
        for i in range(10):
            w.state(float(i), "10.0.0.2:1", "10.0.0.1:2", "ESTABLISHED", "CLOSE-WAIT", "rcv FIN / snd ACK")
        assert 0 < len(path.read_text().splitlines()) < 10
    assert len(read_trace(path)) == 10


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {"kind": "nope", "time": 1.0},
        {"kind": "segment", "time": 1.0, "dir": "sideways", "segment": "x", "fault": None},
        {"kind": "segment", "time": "1.0", "dir": "in", "segment": "x", "fault": None},
        {"kind": "segment", "time": True, "dir": "in", "segment": "x", "fault": None},
        {"kind": "segment", "dir": "in", "time": 1.0, "segment": "x", "fault": None},  # key order
        {"kind": "segment", "time": 1.0, "dir": "in", "segment": "x"},
        {"kind": "state", "time": 1, "local": "a:1", "remote": "b:2", "old": "OPEN", "new": "CLOSED", "cause": ""},
    ],
)
def test_validate_rejects_malformed(bad: Any) -> None:
    with pytest.raises(ValueError):
        validate_record(bad)


def test_bad_direction_and_bad_file() -> None:
    w = TraceWriter(io.StringIO())
    with pytest.raises(ValueError):
        w.segment(1.0, "sideways", FIN_SEG)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="line 2"):
        read_trace(
            io.StringIO(
                '{"kind": "fault", "time": 1, "fault": "drop", "dir": null, "segment": null, "detail": ""}\nnot json\n'
            )
        )
