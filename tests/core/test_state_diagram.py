"""The state table: every arrow of RFC 9293's diagram is taken by the core, and no change outside the
table can happen (the core raises IllegalTransition, failing any test).

Each arrow is driven here on a host of its own and read back from that host's edge counts, so the
test holds in any order and alone (no process-wide state).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from stack.tcp.states import DIAGRAM_EDGES, TRANSITIONS, IllegalTransition, State, check_transition
from stack.wire.segment import ACK, RST, SYN
from tests.core.harness import IRS, ISS, LPORT, REMOTE, RPORT, Harness

S = State


def test_illegal_transition_raises() -> None:
    with pytest.raises(IllegalTransition):
        check_transition(S.ESTABLISHED, S.SYN_SENT)
    with pytest.raises(IllegalTransition):
        check_transition(S.TIME_WAIT, S.ESTABLISHED)


def test_table_contains_the_diagram() -> None:
    assert set(DIAGRAM_EDGES) <= TRANSITIONS
    assert len(DIAGRAM_EDGES) == 20


def _passive_send(h: Harness) -> None:
    h.conn = h.host.open_passive(REMOTE, RPORT, LPORT, h.now)
    h.conn.send(b"x", h.now)


def _listener_close(h: Harness) -> None:
    h.listen()
    assert h.listener is not None
    h.listener.close(h.now)


def _syn_sent_close(h: Harness) -> None:
    h.syn_sent().conn.close(h.now)  # type: ignore[union-attr]


def _simultaneous_open(h: Harness) -> None:
    h.syn_sent().recv(SYN, IRS)


def _syn_sent_established(h: Harness) -> None:
    h.syn_sent().recv(SYN | ACK, IRS, ISS + 1)


def _syn_received_close(h: Harness) -> None:
    h.syn_received().conn.close(h.now)  # type: ignore[union-attr]


def _syn_received_rst(h: Harness) -> None:
    h.syn_received().recv(RST, IRS + 1)


def _closing_acked(h: Harness) -> None:
    h.closing().recv(ACK, IRS + 2, ISS + 2)


def _time_wait_expires(h: Harness) -> None:
    h.time_wait().advance(h.config.time_wait_duration + 1)


def _last_ack_acked(h: Harness) -> None:
    h.last_ack().recv(ACK, IRS + 2, ISS + 2)


DRIVERS: dict[tuple[State, State], Callable[[Harness], object]] = {
    (S.CLOSED, S.LISTEN): Harness.listen,
    (S.CLOSED, S.SYN_SENT): Harness.syn_sent,
    (S.LISTEN, S.SYN_RECEIVED): Harness.syn_received,
    (S.LISTEN, S.SYN_SENT): _passive_send,
    (S.LISTEN, S.CLOSED): _listener_close,
    (S.SYN_SENT, S.CLOSED): _syn_sent_close,
    (S.SYN_SENT, S.SYN_RECEIVED): _simultaneous_open,
    (S.SYN_SENT, S.ESTABLISHED): _syn_sent_established,
    (S.SYN_RECEIVED, S.ESTABLISHED): Harness.established,
    (S.SYN_RECEIVED, S.FIN_WAIT_1): _syn_received_close,
    (S.SYN_RECEIVED, S.LISTEN): _syn_received_rst,
    (S.ESTABLISHED, S.FIN_WAIT_1): Harness.fin_wait_1,
    (S.ESTABLISHED, S.CLOSE_WAIT): Harness.close_wait,
    (S.FIN_WAIT_1, S.FIN_WAIT_2): Harness.fin_wait_2,
    (S.FIN_WAIT_1, S.CLOSING): Harness.closing,
    (S.FIN_WAIT_2, S.TIME_WAIT): Harness.time_wait,
    (S.CLOSING, S.TIME_WAIT): _closing_acked,
    (S.TIME_WAIT, S.CLOSED): _time_wait_expires,
    (S.CLOSE_WAIT, S.LAST_ACK): Harness.last_ack,
    (S.LAST_ACK, S.CLOSED): _last_ack_acked,
}


def test_every_diagram_edge_has_a_driver() -> None:
    assert set(DRIVERS) == set(DIAGRAM_EDGES)


@pytest.mark.parametrize("edge", list(DIAGRAM_EDGES), ids=lambda e: f"{e[0]}->{e[1]}")
def test_diagram_edge_is_taken(edge: tuple[State, State]) -> None:
    h = Harness()
    DRIVERS[edge](h)
    assert h.host.edges.get(edge, 0) >= 1, f"{edge[0]} -> {edge[1]} ({DIAGRAM_EDGES[edge]}) not taken"
