"""TCP states and the table of legal state changes, kept as data (the h11 `_state.py` model).

Every state change in the core goes through `check_transition`; a change that is not in
`TRANSITIONS` is a bug and raises `IllegalTransition`, so no test can pass through an edge the table
does not allow. `DIAGRAM_EDGES` are the arrows of RFC 9293's state diagram (Figure 5); each host
counts the edges its connections took (`Host.edges`), and the test suite checks that every arrow is
exercised.
"""

from __future__ import annotations

from enum import Enum


class State(Enum):
    CLOSED = "CLOSED"
    LISTEN = "LISTEN"
    SYN_SENT = "SYN-SENT"
    SYN_RECEIVED = "SYN-RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN-WAIT-1"
    FIN_WAIT_2 = "FIN-WAIT-2"
    CLOSE_WAIT = "CLOSE-WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST-ACK"
    TIME_WAIT = "TIME-WAIT"

    # Members are singletons compared by identity: hashing by identity is exact, and C-fast
    # (Enum's own __hash__ is Python code, and states are looked up in sets on every segment).
    __hash__ = object.__hash__

    def __str__(self) -> str:
        return self.value

    @property
    def ss_name(self) -> str:
        """The name `ss -tan` prints (ESTAB, SYN-RECV, FIN-WAIT-1, TIME-WAIT, ...)."""
        return _SS_NAMES.get(self, self.value)

    @property
    def synchronized(self) -> bool:
        """RFC 9293 §3.5.2: the states after the three-way handshake completed on our side."""
        return self in SYNCHRONIZED


_SS_NAMES = {State.ESTABLISHED: "ESTAB", State.SYN_RECEIVED: "SYN-RECV", State.CLOSED: "UNCONN"}

SYNCHRONIZED = frozenset(
    {
        State.ESTABLISHED,
        State.FIN_WAIT_1,
        State.FIN_WAIT_2,
        State.CLOSE_WAIT,
        State.CLOSING,
        State.LAST_ACK,
        State.TIME_WAIT,
    }
)

S = State

# States in which the send side may still put data (or our FIN) on the wire.
SENDING_STATES = frozenset({S.ESTABLISHED, S.CLOSE_WAIT, S.FIN_WAIT_1, S.CLOSING, S.LAST_ACK})

# The arrows of RFC 9293 Figure 5, with the event that labels each.
DIAGRAM_EDGES: dict[tuple[State, State], str] = {
    (S.CLOSED, S.LISTEN): "passive OPEN",
    (S.CLOSED, S.SYN_SENT): "active OPEN / snd SYN",
    (S.LISTEN, S.SYN_RECEIVED): "rcv SYN / snd SYN,ACK",
    (S.LISTEN, S.SYN_SENT): "SEND / snd SYN",
    (S.LISTEN, S.CLOSED): "CLOSE / delete TCB",
    (S.SYN_SENT, S.CLOSED): "CLOSE / delete TCB",
    (S.SYN_SENT, S.SYN_RECEIVED): "rcv SYN / snd SYN,ACK (simultaneous open)",
    (S.SYN_SENT, S.ESTABLISHED): "rcv SYN,ACK / snd ACK",
    (S.SYN_RECEIVED, S.ESTABLISHED): "rcv ACK of SYN",
    (S.SYN_RECEIVED, S.FIN_WAIT_1): "CLOSE / snd FIN",
    (S.SYN_RECEIVED, S.LISTEN): "rcv RST (passive open)",
    (S.ESTABLISHED, S.FIN_WAIT_1): "CLOSE / snd FIN",
    (S.ESTABLISHED, S.CLOSE_WAIT): "rcv FIN / snd ACK",
    (S.FIN_WAIT_1, S.FIN_WAIT_2): "rcv ACK of FIN",
    (S.FIN_WAIT_1, S.CLOSING): "rcv FIN / snd ACK",
    (S.FIN_WAIT_2, S.TIME_WAIT): "rcv FIN / snd ACK",
    (S.CLOSING, S.TIME_WAIT): "rcv ACK of FIN",
    (S.TIME_WAIT, S.CLOSED): "timeout = 2MSL",
    (S.CLOSE_WAIT, S.LAST_ACK): "CLOSE / snd FIN",
    (S.LAST_ACK, S.CLOSED): "rcv ACK of FIN",
}

# Changes the RFC's text allows beyond the diagram's arrows: resets, aborts and time-outs. (A FIN
# that arrives together with the ACK of ours goes FIN-WAIT-1 -> FIN-WAIT-2 -> TIME-WAIT, as the
# fifth step of RFC 9293 §3.10.7.4 says to "continue processing in that state".)
_TEXT_EDGES: dict[tuple[State, State], str] = {
    (S.SYN_RECEIVED, S.CLOSED): "rcv RST (active open) / abort / SYN-ACK retries exhausted",
    (S.SYN_SENT, S.CLOSED): "rcv RST / SYN retries exhausted",
    (S.ESTABLISHED, S.CLOSED): "rcv RST / abort / retries exhausted / close with unread data",
    (S.FIN_WAIT_1, S.CLOSED): "rcv RST / abort / retries exhausted / data after close",
    (S.FIN_WAIT_2, S.CLOSED): "rcv RST / abort / orphan fin_timeout / data after close",
    (S.CLOSE_WAIT, S.CLOSED): "rcv RST / abort / retries exhausted",
    (S.CLOSING, S.CLOSED): "rcv RST / abort / retries exhausted",
    (S.LAST_ACK, S.CLOSED): "rcv RST / abort / retries exhausted",
    (S.TIME_WAIT, S.CLOSED): "rcv RST (rfc1337 off) / SYN reopen / time-wait cap",
}

TRANSITIONS: frozenset[tuple[State, State]] = frozenset(DIAGRAM_EDGES) | frozenset(_TEXT_EDGES)

class IllegalTransition(AssertionError):
    """A state change outside `TRANSITIONS`: always a bug in the core."""


def check_transition(old: State, new: State) -> None:
    if (old, new) not in TRANSITIONS:
        raise IllegalTransition(f"illegal TCP state change {old} -> {new}")
