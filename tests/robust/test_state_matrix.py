"""Every state x every kind of segment, against the answer RFC 9293 §3.10.7 and RFC 5961 define.

The expected table below is written from the RFCs (and docs/closing-rules.md, which follows Linux where
the RFC leaves a choice); it is not taken from tools/state_matrix.py, which only measures what the
core does (and writes docs/state-event-matrix.md). Answers are written in the RFC's own terms:
`<SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>` is `("A", "SND.NXT", "RCV.NXT")`, evaluated against the TCB
just before the segment arrives (SEG.* are the arriving segment's fields).

A cell where the core differs from the RFC is marked xfail (strict) with the reason: see DEVIATIONS.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from stack.tcp.states import State
from stack.wire.segment import ACK, flags_text
from tests.robust import load_tool

matrix = load_tool("state_matrix")
S = State

Out = tuple[str, str, str | None]  # flags (tcpdump letters), SEQ expression, ACK expression


@dataclass(frozen=True)
class X:
    """The expected answer: segments sent, the state after, counters that must and must not move."""

    out: tuple[Out, ...] = ()
    state: State | None = None  # None: unchanged
    counters: frozenset[str] = frozenset()
    quiet: frozenset[str] = frozenset()
    rule: str = ""


def nothing(rule: str, state: State | None = None, counters: tuple[str, ...] = ()) -> X:
    return X((), state, frozenset(counters), rule=rule)


def ack(rule: str, ack_expr: str = "RCV.NXT", state: State | None = None) -> X:
    """<SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK> (after RCV.NXT moved over accepted text/FIN: ack_expr)."""
    return X((("A", "SND.NXT", ack_expr),), state, rule=rule)


def challenge(rule: str) -> X:
    """RFC 5961 challenge ACK <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>, rate-limited and counted."""
    return X((("A", "SND.NXT", "RCV.NXT"),), None, frozenset({"TCPChallengeACK"}), rule=rule)


def rst_seg_ack(rule: str) -> X:
    """<SEQ=SEG.ACK><CTL=RST>"""
    return X((("R", "SEG.ACK", None),), None, frozenset({"OutRsts"}), rule=rule)


def rst_zero(rule: str) -> X:
    """<SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>"""
    return X((("RA", "0", "SEG.SEQ+SEG.LEN"),), None, frozenset({"OutRsts"}), rule=rule)


def reset(rule: str, counters: tuple[str, ...] = ()) -> X:
    return nothing(rule, S.CLOSED, counters)


# ---------------------------------------------------------------------------------------------- CLOSED
_CLOSED_RST = "RFC 9293 §3.10.7.1: an incoming segment containing a RST is discarded"
_CLOSED_ACK = "RFC 9293 §3.10.7.1: ACK bit on: <SEQ=SEG.ACK><CTL=RST>"
_CLOSED_NOACK = "RFC 9293 §3.10.7.1: ACK bit off: <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>"
CLOSED: dict[str, X] = {
    "syn": rst_zero(_CLOSED_NOACK), "syn_new": rst_zero(_CLOSED_NOACK), "syn_ack": rst_seg_ack(_CLOSED_ACK),
    "syn_fin": rst_zero(_CLOSED_NOACK), "ack": rst_seg_ack(_CLOSED_ACK), "ack_dup": rst_seg_ack(_CLOSED_ACK),
    "ack_old": rst_seg_ack(_CLOSED_ACK), "ack_above": rst_seg_ack(_CLOSED_ACK), "data": rst_seg_ack(_CLOSED_ACK),
    "data_above": rst_seg_ack(_CLOSED_ACK), "data_below": rst_seg_ack(_CLOSED_ACK), "fin": rst_seg_ack(_CLOSED_ACK),
    "fin_ack": rst_seg_ack(_CLOSED_ACK), "rst": nothing(_CLOSED_RST), "rst_in": nothing(_CLOSED_RST),
    "rst_out": nothing(_CLOSED_RST), "rst_ack": nothing(_CLOSED_RST), "none": rst_zero(_CLOSED_NOACK),
}

# ---------------------------------------------------------------------------------------------- LISTEN
_L_RST = "RFC 9293 §3.10.7.2 first: an incoming RST should be ignored"
_L_ACK = "RFC 9293 §3.10.7.2 second: any acknowledgment is bad in LISTEN: <SEQ=SEG.ACK><CTL=RST>"
_L_SYN = X((("SA", "ISS", "SEG.SEQ+1"),), S.SYN_RECEIVED, frozenset({"PassiveOpens"}),
           rule="RFC 9293 §3.10.7.2 third: <SEQ=ISS><ACK=RCV.NXT><CTL=SYN,ACK>, SYN-RECEIVED")
LISTEN: dict[str, X] = {
    "syn": _L_SYN, "syn_new": _L_SYN, "syn_ack": rst_seg_ack(_L_ACK),
    # RFC 9293 would queue the FIN of a SYN+FIN; Linux (tcp_rcv_state_process, LISTEN: `if (th->fin)
    # goto discard`) drops the pair, which no real stack sends. docs/closing-rules.md: Linux's choice.
    "syn_fin": nothing("Linux: SYN+FIN in LISTEN is discarded"),
    "ack": rst_seg_ack(_L_ACK), "ack_dup": rst_seg_ack(_L_ACK), "ack_old": rst_seg_ack(_L_ACK),
    "ack_above": rst_seg_ack(_L_ACK), "data": rst_seg_ack(_L_ACK), "data_above": rst_seg_ack(_L_ACK),
    "data_below": rst_seg_ack(_L_ACK), "fin": rst_seg_ack(_L_ACK), "fin_ack": rst_seg_ack(_L_ACK),
    "rst": nothing(_L_RST), "rst_in": nothing(_L_RST), "rst_out": nothing(_L_RST), "rst_ack": nothing(_L_RST),
    "none": nothing("RFC 9293 §3.10.7.2 fourth: other control or text: drop"),
}

# ---------------------------------------------------------------------------------------------- SYN-SENT
_SS_BADACK = "RFC 9293 §3.10.7.3 first: SEG.ACK =< ISS or SEG.ACK > SND.NXT: <SEQ=SEG.ACK><CTL=RST>"
_SS_NOACK_RST = "RFC 9293 §3.10.7.3 second: RST without an (acceptable) ACK: drop"
_SS_FIFTH = "RFC 9293 §3.10.7.3 fifth: neither SYN nor RST: drop"
# Simultaneous open: SYN-RECEIVED and <SEQ=ISS><ACK=RCV.NXT><CTL=SYN,ACK>. Other controls (a FIN)
# wait until ESTABLISHED, so the answer acknowledges the SYN only. That SYN,ACK is no retransmission.
_SS_SYN = X((("SA", "ISS", "SEG.SEQ+1"),), S.SYN_RECEIVED, quiet=frozenset({"RetransSegs", "TCPSynRetrans"}),
            rule="RFC 9293 §3.10.7.3 fourth: simultaneous open")
SYN_SENT: dict[str, X] = {
    "syn": _SS_SYN, "syn_new": _SS_SYN, "syn_fin": _SS_SYN,
    "syn_ack": X((("A", "SND.NXT", "SEG.SEQ+1"),), S.ESTABLISHED,
                 rule="RFC 9293 §3.10.7.3 fourth: SND.UNA > ISS: ESTABLISHED, <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>"),
    "ack": nothing(_SS_FIFTH), "ack_dup": rst_seg_ack(_SS_BADACK), "ack_old": rst_seg_ack(_SS_BADACK),
    "ack_above": rst_seg_ack(_SS_BADACK), "data": nothing(_SS_FIFTH), "data_above": nothing(_SS_FIFTH),
    "data_below": nothing(_SS_FIFTH), "fin": nothing(_SS_FIFTH), "fin_ack": nothing(_SS_FIFTH),
    "rst": nothing(_SS_NOACK_RST), "rst_in": nothing(_SS_NOACK_RST), "rst_out": nothing(_SS_NOACK_RST),
    "rst_ack": reset("RFC 9293 §3.10.7.3 second: RST with an acceptable ACK: connection refused, CLOSED",
                     ("AttemptFails",)),
    "none": nothing(_SS_FIFTH),
}

# ---------------------------------------------------------------------------------------------- SYN-RECEIVED
_SR_BADACK = "RFC 9293 §3.10.7.4 fifth, SYN-RECEIVED: unacceptable ACK: <SEQ=SEG.ACK><CTL=RST>"
_SR_TO_LISTEN = "RFC 9293 §3.10.7.4 passive OPEN: return to LISTEN (the user need not be informed)"
_UNACCEPTABLE = "RFC 9293 §3.10.7.4 first: unacceptable segment: <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>, drop"
SYN_RECEIVED: dict[str, X] = {
    "syn": nothing(_SR_TO_LISTEN + " (fourth, SYN)", S.LISTEN, ("AttemptFails",)),
    "syn_new": ack(_UNACCEPTABLE),
    "syn_ack": nothing(_SR_TO_LISTEN + " (fourth, SYN)", S.LISTEN, ("AttemptFails",)),
    "syn_fin": nothing(_SR_TO_LISTEN + " (fourth, SYN)", S.LISTEN, ("AttemptFails",)),
    "ack": nothing("RFC 9293 §3.10.7.4 fifth: SND.UNA < SEG.ACK =< SND.NXT: ESTABLISHED", S.ESTABLISHED),
    "ack_dup": rst_seg_ack(_SR_BADACK), "ack_old": rst_seg_ack(_SR_BADACK), "ack_above": rst_seg_ack(_SR_BADACK),
    "data": ack("RFC 9293 §3.10.7.4 fifth (ESTABLISHED) and seventh (text)", "RCV.NXT+10", S.ESTABLISHED),
    "data_above": ack(_UNACCEPTABLE), "data_below": ack(_UNACCEPTABLE),
    "fin": ack("RFC 9293 §3.10.7.4 eighth: SYN-RECEIVED/ESTABLISHED: CLOSE-WAIT", "RCV.NXT+1", S.CLOSE_WAIT),
    "fin_ack": ack("RFC 9293 §3.10.7.4 eighth: SYN-RECEIVED/ESTABLISHED: CLOSE-WAIT", "RCV.NXT+1", S.CLOSE_WAIT),
    "rst": nothing(_SR_TO_LISTEN + " (second, RST)", S.LISTEN, ("AttemptFails",)),
    "rst_in": challenge("RFC 9293 §3.10.7.4 second (3), RFC 5961 §3.2: challenge ACK"),
    "rst_out": nothing("RFC 9293 §3.10.7.4 second (1): RST outside the window: drop silently"),
    "rst_ack": nothing(_SR_TO_LISTEN + " (second, RST)", S.LISTEN, ("AttemptFails",)),
    "none": nothing("RFC 9293 §3.10.7.4 fifth: ACK bit off: drop"),
}


# ---------------------------------------------------------------------------------------------- synchronized
def synchronized(state: State) -> dict[str, X]:
    """ESTABLISHED, FIN-WAIT-1, FIN-WAIT-2, CLOSE-WAIT, CLOSING, LAST-ACK (docs/closing-rules.md, first part)."""
    peer_fin = state in (S.CLOSE_WAIT, S.CLOSING, S.LAST_ACK)
    syn = challenge("RFC 9293 §3.10.7.4 fourth, RFC 5961 §4.2: SYN: challenge ACK, drop")
    resets = ("EstabResets",) if state in (S.ESTABLISHED, S.CLOSE_WAIT) else ()
    table = {
        "syn": syn, "syn_ack": syn, "syn_fin": syn,
        "syn_new": challenge("RFC 5961 §4.2 (RFC 9293 §3.10.7.4 fourth): a SYN gets a challenge ACK "
                             "'irrespective of the sequence number'"),
        "ack": nothing("RFC 9293 §3.10.7.4 fifth: SND.UNA < SEG.ACK =< SND.NXT"),
        "ack_dup": nothing("RFC 9293 §3.10.7.4 fifth: duplicate ACK (SEG.ACK < SND.UNA) ignored"),
        "ack_old": challenge("RFC 5961 §5.2: SEG.ACK < SND.UNA-MAX.SND.WND: discard, send an ACK (throttled, §7)"),
        "ack_above": ack("RFC 9293 §3.10.7.4 fifth: SEG.ACK > SND.NXT: send an ACK, drop"),
        "data": ack("RFC 9293 §3.10.7.4 seventh: accept the text, <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>",
                    "RCV.NXT+10"),
        "data_above": ack(_UNACCEPTABLE), "data_below": ack(_UNACCEPTABLE),
        "fin": ack("RFC 9293 §3.10.7.4 eighth: advance RCV.NXT over the FIN, ACK it", "RCV.NXT+1"),
        "fin_ack": ack("RFC 9293 §3.10.7.4 fifth then eighth", "RCV.NXT+1"),
        "rst": reset("RFC 9293 §3.10.7.4 second (2), RFC 5961 §3.2: SEG.SEQ = RCV.NXT: reset, CLOSED", resets),
        "rst_in": challenge("RFC 9293 §3.10.7.4 second (3), RFC 5961 §3.2: in window, not exact: challenge ACK"),
        "rst_out": nothing("RFC 9293 §3.10.7.4 second (1): RST outside the window: drop silently"),
        "rst_ack": reset("RFC 9293 §3.10.7.4 second (2): SEG.SEQ = RCV.NXT: reset, CLOSED", resets),
        "none": nothing("RFC 9293 §3.10.7.4 fifth: ACK bit off: drop"),
    }
    if peer_fin:
        # The peer's FIN came already: its retransmission is an old duplicate (unacceptable: ACK it,
        # the segment -- ACK field included -- is dropped), and new text is ignored (seventh step).
        old_fin = ack("RFC 9293 §3.10.7.4 first: the retransmitted FIN is old: ACK, drop; docs/closing-rules.md: "
                      "stay, ACK it")
        table.update({"fin": old_fin, "fin_ack": old_fin,
                      "data": nothing("RFC 9293 §3.10.7.4 seventh: text after the peer's FIN is ignored")})
    if state is S.FIN_WAIT_1:
        table.update({
            "ack": nothing("RFC 9293 §3.10.7.4 fifth: our FIN is acknowledged: FIN-WAIT-2", S.FIN_WAIT_2),
            "fin": ack("RFC 9293 §3.10.7.4 eighth: our FIN not yet ACKed: CLOSING", "RCV.NXT+1", S.CLOSING),
            "fin_ack": ack("RFC 9293 §3.10.7.4 eighth: our FIN ACKed in this segment: TIME-WAIT", "RCV.NXT+1",
                           S.TIME_WAIT),
        })
    elif state is S.FIN_WAIT_2:
        fin = ack("RFC 9293 §3.10.7.4 eighth: FIN-WAIT-2: TIME-WAIT", "RCV.NXT+1", S.TIME_WAIT)
        table.update({"fin": fin, "fin_ack": fin})
    elif state is S.ESTABLISHED:
        fin = ack("RFC 9293 §3.10.7.4 eighth: ESTABLISHED: CLOSE-WAIT", "RCV.NXT+1", S.CLOSE_WAIT)
        table.update({"fin": fin, "fin_ack": fin})
    elif state is S.CLOSING:
        table["ack"] = nothing("RFC 9293 §3.10.7.4 fifth: CLOSING, our FIN ACKed: TIME-WAIT", S.TIME_WAIT)
    elif state is S.LAST_ACK:
        table["ack"] = nothing("RFC 9293 §3.10.7.4 fifth: LAST-ACK, our FIN ACKed: delete the TCB, CLOSED", S.CLOSED)
    return table


# ---------------------------------------------------------------------------------------------- TIME-WAIT
# RFC 9293 §3.10.7.4 plus the choices docs/closing-rules.md takes from Linux's tcp_timewait_state_process:
# an in-window bare segment restarts 2MSL silently; anything else but a RST is ACKed (pure ACKs and
# SYNs at most once per 500 ms); a SYN above RCV.NXT may reopen the 4-tuple (RFC 9293 MAY-2, RFC 6191)
# with ISS = SND.NXT + 65535 + 2.
_TW_ACK = "TIME-WAIT: <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK> (Linux tcp_timewait_state_process)"
_TW_BARE = "TIME-WAIT: in-window bare segment: restart 2MSL, send nothing (Linux)"
TIME_WAIT: dict[str, X] = {
    "syn": ack("RFC 5961 §4.2 challenge ACK; no reopen: SEG.SEQ is not above RCV.NXT (Linux: after())"),
    "syn_new": X((("SA", "SND.NXT+65537", "SEG.SEQ+1"),), S.SYN_RECEIVED,
                 rule="RFC 9293 §3.10.7.4 fourth / RFC 1122 §4.2.2.13 (MAY-2): a SYN above RCV.NXT reopens; "
                      "docs/closing-rules.md: ISS = old SND.NXT + 65535 + 2"),
    "syn_ack": ack(_TW_ACK), "syn_fin": ack(_TW_ACK),
    "ack": nothing(_TW_BARE), "ack_dup": nothing(_TW_BARE), "ack_old": nothing(_TW_BARE),
    "ack_above": nothing(_TW_BARE),
    "data": ack("RFC 9293 §3.10.7.4 seventh: text ignored; " + _TW_ACK),
    "data_above": ack(_UNACCEPTABLE), "data_below": ack(_UNACCEPTABLE),
    "fin": ack("RFC 9293 §3.10.7.4 eighth: TIME-WAIT: ACK the retransmitted FIN, restart 2MSL"),
    "fin_ack": ack("RFC 9293 §3.10.7.4 eighth: TIME-WAIT: ACK the retransmitted FIN, restart 2MSL"),
    "rst": reset("RFC 9293 §3.10.7.4 second: CLOSED (docs/closing-rules.md: rfc1337 off, the Linux default)"),
    "rst_in": ack("RFC 9293 §3.10.7.4 second (3), RFC 5961 §3.2: in window, not exact: challenge ACK"),
    "rst_out": nothing("RFC 9293 §3.10.7.4 second (1): RST outside the window: drop silently"),
    "rst_ack": reset("RFC 9293 §3.10.7.4 second: CLOSED"),
    "none": nothing(_TW_BARE),
}

EXPECTED: dict[State, dict[str, X]] = {
    S.CLOSED: CLOSED, S.LISTEN: LISTEN, S.SYN_SENT: SYN_SENT, S.SYN_RECEIVED: SYN_RECEIVED,
    **{s: synchronized(s) for s in (S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSE_WAIT, S.CLOSING, S.LAST_ACK)},
    S.TIME_WAIT: TIME_WAIT,
}

# Cells where the core knowingly differs from the expectation, with the reason (xfail, strict).
# Empty: the deviations found earlier (out-of-window SYN, TIME-WAIT inexact RST, the SYN,ACK of a
# simultaneous open counted as a retransmission) were fixed in the core.
DEVIATIONS: dict[tuple[State, str], str] = {}


def _cases() -> list[object]:
    cases: list[object] = []
    for state in matrix.STATES:
        for event in matrix.EVENTS:
            marks = []
            if (state, event.key) in DEVIATIONS:
                marks.append(pytest.mark.xfail(strict=True, reason=DEVIATIONS[(state, event.key)]))
            cases.append(pytest.param(state, event.key, marks=marks, id=f"{state.value}-{event.key}"))
    return cases


def test_expected_table_is_complete() -> None:
    assert set(EXPECTED) == set(matrix.STATES) and len(matrix.STATES) == 11
    for state, row in EXPECTED.items():
        assert set(row) == {e.key for e in matrix.EVENTS}, state
        for key, x in row.items():
            assert x.rule, (state, key)


@pytest.mark.parametrize(("state", "key"), _cases())
def test_cell(state: State, key: str) -> None:
    cell = matrix.observe(state, matrix.EVENT_BY_KEY[key])
    x = EXPECTED[state][key]
    env = cell.vars
    expected = [
        (flags, matrix.evaluate(seq, env), matrix.evaluate(ack_expr, env) if ack_expr is not None else None)
        for flags, seq, ack_expr in x.out
    ]
    got = [(flags_text(s.flags), s.seq, s.ack if s.flags & ACK else None) for s in cell.out]
    context = f"{state.value} + {cell.event.describe()}: got {cell.out_text()} -> {cell.new_state}; rule: {x.rule}"
    assert got == expected, context
    assert all(not s.payload for s in cell.out), context
    assert cell.new_state == (x.state or state).value, context
    for name in x.counters:
        assert cell.counters.get(name, 0) > 0, f"{context}; {name} did not move ({cell.counters})"
    for name in x.quiet:
        assert cell.counters.get(name, 0) == 0, f"{context}; {name} moved ({cell.counters})"


def test_document_is_current() -> None:
    """docs/state-event-matrix.md is what the core does now (regenerate: tools/state_matrix.py)."""
    current = matrix.DEFAULT_OUTPUT.read_text()
    assert current == matrix.render(matrix.run_matrix()), "stale: run .venv/bin/python tools/state_matrix.py"
