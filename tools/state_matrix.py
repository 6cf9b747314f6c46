#!/usr/bin/env python3
"""The state x event matrix: what the core does with each kind of segment in each of the 11 states.

Every cell is measured, not written down: the state is built with the test harness
(tests/core/harness.py, the host plays one end and the test the other, ISS = 1000, IRS = 5000, no
options), one segment is fed, and what comes back is recorded -- the segments sent (sequence numbers
relative to our ISS, acknowledgments relative to the peer's IRS), the state of the 4-tuple after
it, the counters it touched and what the application was told. Each cell also names the rule of
RFC 9293 / RFC 5961 (or Linux, where the RFC leaves the choice) that answer follows.

    .venv/bin/python tools/state_matrix.py [--output docs/state-event-matrix.md] [--check]

`--check` only compares the file with what the core does now (exit 1 if it is stale).
tests/robust/test_state_matrix.py holds the expected answer of every cell, written from the RFCs.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from stack.tcp.events import Accepted, Closed, Connected, EndOfStream, Readable, StateChanged, Writable  # noqa: E402
from stack.tcp.seq import MASK, seq_sub  # noqa: E402
from stack.tcp.states import State  # noqa: E402
from stack.wire.segment import ACK, FIN, RST, SYN, Segment, flags_text  # noqa: E402
from tests.core.harness import IRS, ISS, LOCAL, LPORT, REMOTE, RPORT, WIN, Harness  # noqa: E402

S = State
DEFAULT_OUTPUT = ROOT / "docs" / "state-event-matrix.md"

STATES = (S.CLOSED, S.LISTEN, S.SYN_SENT, S.SYN_RECEIVED, S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSE_WAIT,
          S.CLOSING, S.LAST_ACK, S.TIME_WAIT)
SHORT = {S.CLOSED: "CLOSED", S.LISTEN: "LISTEN", S.SYN_SENT: "SYN-SENT", S.SYN_RECEIVED: "SYN-RCVD",
         S.ESTABLISHED: "ESTAB", S.FIN_WAIT_1: "FIN-WAIT-1", S.FIN_WAIT_2: "FIN-WAIT-2", S.CLOSE_WAIT: "CLOSE-WAIT",
         S.CLOSING: "CLOSING", S.LAST_ACK: "LAST-ACK", S.TIME_WAIT: "TIME-WAIT"}
NO_TCB = (S.CLOSED, S.LISTEN)
PEER_SYN_UNSEEN = (S.CLOSED, S.LISTEN, S.SYN_SENT)
PEER_FIN_SEEN = (S.CLOSE_WAIT, S.CLOSING, S.LAST_ACK, S.TIME_WAIT)
QUIET_COUNTERS = {"InSegs", "OutSegs"}
DATA = b"0123456789"


@dataclass(frozen=True)
class EventSpec:
    """One kind of arriving segment; SEQ and ACK are expressions over the state's TCB (see VARS)."""

    key: str
    title: str
    flags: int
    seq: str
    ack: str = "0"
    payload: bytes = b""

    def describe(self) -> str:
        text = f"[{flags_text(self.flags)}] seq={self.seq}"
        if self.flags & ACK:
            text += f" ack={self.ack}"
        if self.payload:
            text += f" len={len(self.payload)}"
        return text


EVENTS: tuple[EventSpec, ...] = (
    EventSpec("syn", "SYN", SYN, "SYN.SEQ"),
    EventSpec("syn_new", "SYN, new SEQ far above", SYN, "RCV.NXT+1000000"),
    EventSpec("syn_ack", "SYN,ACK", SYN | ACK, "SYN.SEQ", "SND.NXT"),
    EventSpec("syn_fin", "SYN,FIN", SYN | FIN, "SYN.SEQ"),
    EventSpec("ack", "ACK of SND.NXT", ACK, "RCV.NXT", "SND.NXT"),
    EventSpec("ack_dup", "ACK below SND.UNA", ACK, "RCV.NXT", "SND.UNA-1"),
    EventSpec("ack_old", "ACK too old (< SND.UNA-MAX.SND.WND)", ACK, "RCV.NXT", "SND.UNA-MAX.SND.WND-1"),
    EventSpec("ack_above", "ACK above SND.NXT", ACK, "RCV.NXT", "SND.NXT+1"),
    EventSpec("data", "data in window", ACK, "RCV.NXT", "ACK.NONE", DATA),
    EventSpec("data_above", "data above window", ACK, "RCV.NXT+RCV.WND", "ACK.NONE", DATA),
    EventSpec("data_below", "data below window (old)", ACK, "RCV.NXT-10", "ACK.NONE", DATA),
    EventSpec("fin", "FIN", FIN | ACK, "FIN.SEQ", "ACK.NONE"),
    EventSpec("fin_ack", "FIN acking SND.NXT", FIN | ACK, "FIN.SEQ", "SND.NXT"),
    EventSpec("rst", "RST exact", RST, "RCV.NXT"),
    EventSpec("rst_in", "RST in window", RST, "RCV.NXT+1"),
    EventSpec("rst_out", "RST outside window", RST, "RCV.NXT+RCV.WND"),
    EventSpec("rst_ack", "RST,ACK exact", RST | ACK, "RCV.NXT", "SND.NXT"),
    EventSpec("none", "no flags", 0, "RCV.NXT"),
)
EVENT_BY_KEY = {e.key: e for e in EVENTS}

VARS_DOC = """\
Variables (RFC 9293 §3.3.1) are the TCB's just before the segment arrives. Where a state has none
(CLOSED, LISTEN) or not yet (SYN-SENT's RCV.NXT), the segment is written as if from a peer whose
ISN is IRS: RCV.NXT = IRS+1, SND.UNA = SND.NXT = ISS+1 (ISS for SYN-SENT's SND.UNA), RCV.WND =
MAX.SND.WND = 65535.

* `SYN.SEQ` -- the SEQ of a SYN: IRS where the peer's SYN is not known yet (CLOSED, LISTEN,
  SYN-SENT), else RCV.NXT (a SYN inside the window).
* `FIN.SEQ` -- the peer's FIN: RCV.NXT, or RCV.NXT-1 (a retransmission) once it was received
  (CLOSE-WAIT, CLOSING, LAST-ACK, TIME-WAIT).
* `ACK.NONE` -- an acknowledgment of nothing new: SND.UNA; SND.NXT where SND.UNA = ISS is not
  acceptable (SYN-SENT, SYN-RECEIVED).
* In the answers, `ISS+n` and `IRS+n` are relative to our ISS (1000) and the peer's (5000); `0`
  is the absolute zero of `<SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>`."""


# ---------------------------------------------------------------------------------------------- cells
@dataclass
class Cell:
    state: State
    event: EventSpec
    vars: dict[str, int]
    seg: Segment
    out: list[Segment]
    new_state: str
    counters: dict[str, int] = field(default_factory=dict)
    user: list[str] = field(default_factory=list)

    def out_text(self) -> str:
        return "; ".join(format_segment(s) for s in self.out) or "--"


def build(state: State) -> Harness:
    """A harness whose host holds the 4-tuple in `state` (CLOSED: nothing at all, not even a listener)."""
    h = Harness()
    if state is not S.CLOSED:
        h.in_state(state)
    return h


def tcb_vars(h: Harness, state: State) -> dict[str, int]:
    v: dict[str, int] = {"ISS": ISS, "IRS": IRS, "RCV.WND": WIN, "MAX.SND.WND": WIN}
    if state in NO_TCB:
        v.update({"SND.UNA": ISS + 1, "SND.NXT": ISS + 1, "RCV.NXT": IRS + 1})
    elif state is S.SYN_SENT:
        c = h.c
        v.update({"ISS": c.iss, "SND.UNA": c.snd_una, "SND.NXT": c.snd_max, "RCV.NXT": IRS + 1})
    else:
        c = h.c
        v.update({"ISS": c.iss, "IRS": c.irs, "SND.UNA": c.snd_una, "SND.NXT": c.snd_max, "RCV.NXT": c.rcv_nxt,
                  "RCV.WND": c.rcv_wnd, "MAX.SND.WND": c.max_snd_wnd or WIN})
    v["SYN.SEQ"] = v["IRS"] if state in PEER_SYN_UNSEEN else v["RCV.NXT"]
    v["FIN.SEQ"] = v["RCV.NXT"] - 1 if state in PEER_FIN_SEEN else v["RCV.NXT"]
    v["ACK.NONE"] = v["SND.NXT"] if state in (*NO_TCB, S.SYN_SENT, S.SYN_RECEIVED) else v["SND.UNA"]
    return v


_TERM = re.compile(r"([+-]?)([A-Z][A-Z.]*|\d+)")


def evaluate(expr: str, env: dict[str, int]) -> int:
    """'SND.UNA-MAX.SND.WND-1' -> a sequence number (mod 2**32), names looked up in `env`."""
    total = 0
    pos = 0
    for m in _TERM.finditer(expr.replace(" ", "")):
        if m.start() != pos:
            raise ValueError(f"bad expression {expr!r}")
        sign, term = m.groups()
        value = int(term) if term.isdigit() else env[term]
        total += -value if sign == "-" else value
        pos = m.end()
    if pos != len(expr.replace(" ", "")):
        raise ValueError(f"bad expression {expr!r}")
    return total & MASK


def state_of(h: Harness, state: State) -> str:
    """The state after the segment: of our connection while it exists (or of its TIME-WAIT record;
    a reset one is CLOSED, a passive embryo back in LISTEN); where there was none, of whatever now
    holds the 4-tuple (a new connection, else the listener or nothing)."""
    lport = h.conn.four_tuple[1] if h.conn is not None else LPORT
    key = (LOCAL, lport, REMOTE, RPORT)
    conn = h.host.connections.get(key)
    if key in h.host.time_wait:
        return S.TIME_WAIT.value
    if conn is not None:
        return conn.state.value
    if h.conn is not None:
        return S.CLOSED.value if state is S.TIME_WAIT else h.conn.state.value
    return state.value


def observe(state: State, event: EventSpec) -> Cell:
    """Build `state`, feed one `event` segment, and record everything that came of it."""
    h = build(state)
    h.events.clear()
    env = tcb_vars(h, state)
    seg = h.segment(event.flags, evaluate(event.seq, env), evaluate(event.ack, env) if event.flags & ACK else 0,
                    event.payload)
    env = {**env, "SEG.SEQ": seg.seq, "SEG.ACK": seg.ack, "SEG.LEN": seg.seg_len}
    before = dict(h.host.counters)
    out = h.feed(seg)
    counters = {k: v - before.get(k, 0) for k, v in h.host.counters.items()
                if v != before.get(k, 0) and k not in QUIET_COUNTERS}
    user = [_event_text(e) for e in h.events if not isinstance(e, StateChanged)]
    return Cell(state, event, env, seg, out, state_of(h, state), counters, user)


def _event_text(e: object) -> str:
    if isinstance(e, Closed):
        return f"Closed({e.reason.value})"
    for kind in (Accepted, Connected, Readable, EndOfStream, Writable):
        if isinstance(e, kind):
            return kind.__name__
    return type(e).__name__


def _rel(value: int, base: int, name: str) -> str:
    if value == 0 and base != 0:
        return "0"
    d = seq_sub(value, base)
    return name if d == 0 else f"{name}{d:+d}"


def format_segment(seg: Segment) -> str:
    """`[A] seq=ISS+2 ack=IRS+2`: relative to our ISS and the peer's IRS (the harness's constants)."""
    text = f"[{flags_text(seg.flags)}] seq={_rel(seg.seq, ISS, 'ISS')}"
    if seg.flags & ACK:
        text += f" ack={_rel(seg.ack, IRS, 'IRS')}"
    if seg.payload:
        text += f" len={len(seg.payload)}"
    return text


def run_matrix() -> dict[tuple[State, str], Cell]:
    return {(state, ev.key): observe(state, ev) for state in STATES for ev in EVENTS}


# ---------------------------------------------------------------------------------------------- rules
def rule_for(state: State, key: str) -> str:
    """The rule a cell's answer follows (where the RFC leaves a choice, what Linux does)."""
    if state is S.CLOSED:
        return ("§3.10.7.1: a RST is discarded" if key.startswith("rst") else
                "§3.10.7.1: <SEQ=SEG.ACK><CTL=RST>" if EVENT_BY_KEY[key].flags & ACK else
                "§3.10.7.1: <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>")
    if state is S.LISTEN:
        if key.startswith("rst"):
            return "§3.10.7.2 first: RST ignored"
        if EVENT_BY_KEY[key].flags & ACK:
            return "§3.10.7.2 second: <SEQ=SEG.ACK><CTL=RST>"
        if key == "syn_fin":
            return "§3.10.7.2 third; SYN+FIN dropped as Linux does (tcp_rcv_state_process)"
        if key in ("syn", "syn_new"):
            return "§3.10.7.2 third: SYN-RECEIVED, <SEQ=ISS><ACK=RCV.NXT><CTL=SYN,ACK>"
        return "§3.10.7.2 fourth: drop"
    if state is S.SYN_SENT:
        return {
            "syn": "§3.10.7.3 fourth: simultaneous open, SYN,ACK", "syn_new": "§3.10.7.3 fourth: simultaneous open",
            "syn_ack": "§3.10.7.3 fourth: ESTABLISHED, <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>",
            "syn_fin": "§3.10.7.3 fourth: simultaneous open (FIN not processed, as Linux)",
            "ack_dup": "§3.10.7.3 first: SEG.ACK =< ISS: <SEQ=SEG.ACK><CTL=RST>",
            "ack_old": "§3.10.7.3 first: SEG.ACK =< ISS: <SEQ=SEG.ACK><CTL=RST>",
            "ack_above": "§3.10.7.3 first: SEG.ACK > SND.NXT: <SEQ=SEG.ACK><CTL=RST>",
            "rst": "§3.10.7.3 second: RST without ACK dropped", "rst_in": "§3.10.7.3 second: RST without ACK dropped",
            "rst_out": "§3.10.7.3 second: RST without ACK dropped",
            "rst_ack": "§3.10.7.3 second: acceptable ACK: connection refused, CLOSED",
        }.get(key, "§3.10.7.3 fifth: neither SYN nor RST: drop")
    if state is S.TIME_WAIT:
        return {
            "syn": "RFC 5961 §4 / Linux: ACK (SEQ not above RCV.NXT: no reopen)",
            "syn_new": "RFC 9293 MAY-2, RFC 6191 / Linux: SEQ > RCV.NXT reopens; ISS = SND.NXT+65537",
            "syn_ack": "Linux tcp_timewait_state_process: ACK", "syn_fin": "Linux tcp_timewait_state_process: ACK",
            "ack": "in-window bare ACK: restart 2MSL silently (Linux)",
            "ack_dup": "in-window bare ACK: restart 2MSL silently (Linux)",
            "ack_old": "in-window bare ACK: restart 2MSL silently (Linux)",
            "ack_above": "in-window bare ACK: restart 2MSL silently (Linux)",
            "data": "§3.10.7.4 seventh: text ignored; ACKed (Linux)",
            "data_above": "§3.10.7.4 first: unacceptable: ACK", "data_below": "§3.10.7.4 first: unacceptable: ACK",
            "fin": "§3.10.7.4 eighth: ACK the retransmitted FIN, restart 2MSL",
            "fin_ack": "§3.10.7.4 eighth: ACK the retransmitted FIN, restart 2MSL",
            "rst": "§3.10.7.4 second: CLOSED (rfc1337 off, Linux default)",
            "rst_in": "RFC 5961 §3.2: challenge ACK (Linux: ignored)", "rst_out": "RFC 5961 §3.2: drop silently",
            "rst_ack": "§3.10.7.4 second: CLOSED", "none": "in-window bare segment: restart 2MSL silently (Linux)",
        }[key]
    passive_embryo = state is S.SYN_RECEIVED
    peer_done = state in PEER_FIN_SEEN
    rules = {
        "syn": ("§3.10.7.4 fourth: passive OPEN returns to LISTEN" if passive_embryo else
                "§3.10.7.4 fourth, RFC 5961 §4.2: challenge ACK"),
        "syn_new": "RFC 5961 §4.2: challenge ACK irrespective of SEQ (§3.10.7.4 first: unacceptable: ACK)",
        "syn_ack": ("§3.10.7.4 fourth: passive OPEN returns to LISTEN" if passive_embryo else
                    "§3.10.7.4 fourth, RFC 5961 §4.2: challenge ACK"),
        "syn_fin": ("§3.10.7.4 fourth: passive OPEN returns to LISTEN" if passive_embryo else
                    "§3.10.7.4 fourth, RFC 5961 §4.2: challenge ACK"),
        "ack": "§3.10.7.4 fifth",
        "ack_dup": ("§3.10.7.4 fifth: unacceptable ACK: <SEQ=SEG.ACK><CTL=RST>" if passive_embryo else
                    "§3.10.7.4 fifth: duplicate ACK ignored"),
        "ack_old": ("§3.10.7.4 fifth: unacceptable ACK: <SEQ=SEG.ACK><CTL=RST>" if passive_embryo else
                    "RFC 5961 §5.2: ACK older than SND.UNA-MAX.SND.WND: challenge ACK"),
        "ack_above": ("§3.10.7.4 fifth: unacceptable ACK: <SEQ=SEG.ACK><CTL=RST>" if passive_embryo else
                      "§3.10.7.4 fifth: SEG.ACK > SND.NXT: ACK, drop"),
        "data": ("§3.10.7.4 seventh: text ignored after the peer's FIN" if peer_done else
                 "§3.10.7.4 fifth (SYN-RECEIVED -> ESTABLISHED) and seventh" if passive_embryo else
                 "§3.10.7.4 seventh: accept, <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>"),
        "data_above": "§3.10.7.4 first: unacceptable: <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>",
        "data_below": "§3.10.7.4 first: unacceptable: <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>",
        "fin": ("§3.10.7.4 first: the retransmitted FIN is old: ACK" if peer_done else "§3.10.7.4 eighth"),
        "fin_ack": ("§3.10.7.4 first: the retransmitted FIN is old: ACK (its ACK not processed)" if peer_done else
                    "§3.10.7.4 fifth and eighth"),
        "rst": ("§3.10.7.4 second: passive OPEN returns to LISTEN" if passive_embryo else
                "RFC 5961 §3.2, §3.10.7.4 second: reset, CLOSED"),
        "rst_in": "RFC 5961 §3.2: challenge ACK",
        "rst_out": "RFC 5961 §3.2: drop silently",
        "rst_ack": ("§3.10.7.4 second: passive OPEN returns to LISTEN" if passive_embryo else
                    "§3.10.7.4 second: reset, CLOSED"),
        "none": "§3.10.7.4 fifth: ACK bit off: drop",
    }
    return rules[key]


# ---------------------------------------------------------------------------------------------- the document
def _summary(cell: Cell) -> str:
    parts = []
    for s in cell.out:
        text = flags_text(s.flags)
        if s.flags == ACK and cell.counters.get("TCPChallengeACK"):
            text = "A(ch)"
        parts.append(text)
    out = "+".join(parts) or "--"
    if cell.new_state != cell.state.value:
        out += " -> " + SHORT[State(cell.new_state)]
    return out


def render(cells: dict[tuple[State, str], Cell]) -> str:
    lines = [
        "# State x event matrix",
        "",
        "What the core does with each kind of arriving segment in each state -- measured, not written",
        "down: `tools/state_matrix.py` builds every state with the test harness (tests/core/harness.py:",
        "ISS = 1000, IRS = 5000, no TCP options, no delayed ACK), feeds one segment and records the",
        "answer. Regenerate with `.venv/bin/python tools/state_matrix.py`; `tests/robust/test_state_matrix.py`",
        "checks every cell against the answer the RFCs define (RFC 9293 §3.10.7, RFC 5961), written",
        "there independently of this file.",
        "",
        "## Summary",
        "",
        "Flags sent (`A(ch)`: a challenge ACK, counted as `TCPChallengeACK`; `--`: nothing), and the new",
        "state of the 4-tuple when it changes.",
        "",
    ]
    header = "| state | " + " | ".join(e.title for e in EVENTS) + " |"
    lines += [header, "|" + "---|" * (len(EVENTS) + 1)]
    for state in STATES:
        lines.append(f"| **{state.value}** | " + " | ".join(_summary(cells[(state, e.key)]) for e in EVENTS) + " |")
    lines += ["", "## The segments", ""]
    for e in EVENTS:
        lines.append(f"* **{e.title}**: `{e.describe()}`")
    lines += ["", VARS_DOC, ""]
    for state in STATES:
        lines += [f"## {state.value}", "", "| segment in | answer | new state | counters | application | rule |",
                  "|---|---|---|---|---|---|"]
        for e in EVENTS:
            c = cells[(state, e.key)]
            counters = ", ".join(sorted(c.counters)) or "--"
            user = ", ".join(c.user) or "--"
            new = c.new_state if c.new_state != state.value else "(same)"
            lines.append(f"| {e.title} | `{c.out_text()}` | {new} | {counters} | {user} | {rule_for(state, e.key)} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--check", action="store_true", help="only check that the file is up to date")
    args = parser.parse_args(argv)
    text = render(run_matrix())
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is stale: run tools/state_matrix.py", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0
    args.output.write_text(text)
    print(f"wrote {args.output} ({len(STATES)} states x {len(EVENTS)} segments)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
