"""Opens, the CLOSED and LISTEN answers, and the handshake's timers (RFC 9293 §3.10.7.1-3)."""

from __future__ import annotations

import pytest

from stack.tcp.events import Accepted, CloseReason, Connected
from stack.tcp.states import State
from stack.wire.segment import ACK, FIN, RST, SYN, TcpOptions
from tests.core.harness import (
    IRS,
    ISS,
    LOCAL,
    LPORT,
    REMOTE,
    RPORT,
    Expect,
    Harness,
    assert_segments,
    plain_config,
)

S = State


# ---------------------------------------------------------------- CLOSED (§3.10.7.1)
def test_closed_port_answers_syn_with_rst_ack() -> None:
    h = Harness()
    h.conn = None
    out = h.feed(h.segment(SYN, IRS, sport=RPORT))
    assert_segments(out, [Expect(RST | ACK, 0, IRS + 1)])
    assert h.host.counters["TCPRcvNoListener"] == 1 and h.host.counters["OutRsts"] == 1


def test_closed_port_answers_ack_with_rst_at_its_ack() -> None:
    h = Harness()
    assert_segments(h.feed(h.segment(ACK, IRS, 777, b"x")), [Expect(RST, 777)])


def test_closed_port_never_answers_rst() -> None:
    h = Harness()
    assert_segments(h.feed(h.segment(RST | ACK, IRS, 777)), [])


# ---------------------------------------------------------------- LISTEN (§3.10.7.2)
def test_listen_answers_syn_with_syn_ack() -> None:
    h = Harness().listen()
    assert_segments(h.recv(SYN, IRS), [Expect(SYN | ACK, ISS, IRS + 1, window=65535)])
    assert h.host.counters["PassiveOpens"] == 1


def test_listen_ignores_rst_and_resets_ack() -> None:
    h = Harness().listen()
    assert_segments(h.recv(RST, IRS), [])
    assert_segments(h.recv(ACK, IRS, 4242), [Expect(RST, 4242)])
    assert not h.host.connections


def test_listen_drops_syn_fin() -> None:
    h = Harness().listen()
    assert_segments(h.recv(SYN | FIN, IRS), [])
    assert not h.host.connections


def test_listen_backlog_limit_drops_syns() -> None:
    h = Harness(plain_config(syn_backlog=2)).listen()
    for port in (1001, 1002, 1003):
        h.feed(h.segment(SYN, IRS, sport=port))
    assert len(h.host.connections) == 2
    assert h.host.counters["ListenOverflows"] == 1


def test_listener_close_goes_closed_and_refuses() -> None:
    h = Harness().listen()
    assert h.listener is not None
    h.listener.close(h.now)
    assert h.listener.state is S.CLOSED
    assert_segments(h.recv(SYN, IRS), [Expect(RST | ACK, 0, IRS + 1)])


def test_syn_options_are_negotiated() -> None:
    h = Harness(plain_config(timestamps=True, sack=True, window_scaling=True)).listen()
    out = h.recv(SYN, IRS, options=TcpOptions(mss=1000, wscale=7, sack_permitted=True, timestamp=(77, 0)))
    (synack,) = out
    opts = synack.options
    assert opts.mss == 1460 and opts.wscale == 7 and opts.sack_permitted and opts.timestamp is not None
    assert opts.timestamp[1] == 77
    conn = h.host.connections[(LOCAL, LPORT, REMOTE, RPORT)]
    assert conn.snd_mss == 1000 - 12 and conn.snd_wscale == 7 and conn.sack_ok and conn.ts_ok


def test_options_absent_from_syn_are_not_used() -> None:
    h = Harness(plain_config(timestamps=True, sack=True, window_scaling=True)).listen()
    (synack,) = h.recv(SYN, IRS)
    assert synack.options.wscale is None and not synack.options.sack_permitted and synack.options.timestamp is None
    conn = h.host.connections[(LOCAL, LPORT, REMOTE, RPORT)]
    assert conn.snd_mss == 536 and conn.rcv_wscale == 0


# ---------------------------------------------------------------- SYN-RECEIVED
def test_syn_received_ack_establishes_and_announces() -> None:
    h = Harness().established()
    assert [type(e) for e in h.events if isinstance(e, Accepted | Connected)] == [Accepted]


def test_syn_received_bad_ack_is_reset() -> None:
    h = Harness().syn_received()
    assert_segments(h.recv(ACK, IRS + 1, ISS + 50), [Expect(RST, ISS + 50)])
    assert h.c.state is S.SYN_RECEIVED


def test_syn_received_rst_returns_to_listen() -> None:
    h = Harness().syn_received()
    assert_segments(h.recv(RST, IRS + 1), [])
    assert h.c.state is S.LISTEN
    assert not h.host.connections and h.listener is not None and not h.listener.embryos
    assert h.host.counters["AttemptFails"] == 1


def test_syn_received_retransmitted_syn_resends_syn_ack() -> None:
    h = Harness().syn_received()
    assert_segments(h.recv(SYN, IRS), [Expect(SYN | ACK, ISS, IRS + 1)])


def test_syn_received_new_syn_returns_to_listen() -> None:
    h = Harness().syn_received()
    assert_segments(h.recv(SYN, IRS + 10), [])
    assert h.c.state is S.LISTEN and not h.host.connections


def test_syn_ack_is_retransmitted_then_given_up() -> None:
    h = Harness(plain_config(synack_retries=2)).syn_received()
    out = h.advance(10.0)
    assert_segments(out, [Expect(SYN | ACK, ISS, IRS + 1)] * 2)
    assert h.c.state is S.CLOSED and not h.host.connections


def test_data_on_the_handshake_ack_is_delivered() -> None:
    h = Harness().syn_received()
    assert_segments(h.recv(ACK, IRS + 1, ISS + 1, b"hi"), [Expect(ACK, ISS + 1, IRS + 3)])
    assert h.c.state is S.ESTABLISHED and h.conn.receive(h.now) == b"hi"


# ---------------------------------------------------------------- SYN-SENT (§3.10.7.3)
def test_syn_sent_syn_ack_establishes() -> None:
    h = Harness().syn_sent()
    assert_segments(h.recv(SYN | ACK, IRS, ISS + 1), [Expect(ACK, ISS + 1, IRS + 1)])
    assert h.c.state is S.ESTABLISHED
    assert any(isinstance(e, Connected) for e in h.events)
    assert h.host.counters["ActiveOpens"] == 1


def test_syn_sent_unacceptable_ack_is_reset() -> None:
    h = Harness().syn_sent()
    assert_segments(h.recv(SYN | ACK, IRS, ISS + 7), [Expect(RST, ISS + 7)])
    assert h.c.state is S.SYN_SENT


def test_syn_sent_rst_ack_is_refused() -> None:
    h = Harness().syn_sent()
    assert_segments(h.recv(RST | ACK, 0, ISS + 1), [])
    assert h.c.state is S.CLOSED and h.c.close_reason is CloseReason.REFUSED


def test_syn_sent_rst_without_ack_is_ignored() -> None:
    h = Harness().syn_sent()
    assert_segments(h.recv(RST, 0), [])
    assert h.c.state is S.SYN_SENT


def test_simultaneous_open() -> None:
    h = Harness().syn_sent()
    assert_segments(h.recv(SYN, IRS), [Expect(SYN | ACK, ISS, IRS + 1)])
    assert h.c.state is S.SYN_RECEIVED
    assert_segments(h.recv(SYN | ACK, IRS, ISS + 1), [])
    assert h.c.state is S.ESTABLISHED
    assert any(isinstance(e, Connected) for e in h.events)


def test_close_in_simultaneous_syn_received_sends_fin() -> None:
    h = Harness().syn_sent()
    h.recv(SYN, IRS)
    h.conn.close(h.now)
    assert_segments(h.take(), [Expect(FIN | ACK, ISS + 1, IRS + 1)])
    assert h.c.state is S.FIN_WAIT_1
    assert_segments(h.recv(ACK, IRS + 1, ISS + 2), [])
    assert h.c.state is S.FIN_WAIT_2


def test_close_in_syn_sent_deletes_tcb() -> None:
    h = Harness().syn_sent()
    h.conn.close(h.now)
    assert_segments(h.take(), [])
    assert h.c.state is S.CLOSED and not h.host.connections and len(h.host.wheel) == 0


def _syn_gaps(h: Harness) -> list[int]:
    sent_at = []
    for _ in range(400):
        for seg in h.advance(0.5):
            assert seg.flags == SYN and seg.seq == ISS
            sent_at.append(h.now)
    return [round(b - a) for a, b in zip([0.0, *sent_at], sent_at, strict=False)]


def test_syn_is_retransmitted_with_backoff_then_times_out() -> None:
    h = Harness(plain_config(syn_retries=3, syn_linear_timeouts=0)).syn_sent()
    assert _syn_gaps(h) == [1, 2, 4]  # RFC 6298 §5.5: initial RTO 1 s, doubled each time
    assert h.c.state is S.CLOSED and h.c.close_reason is CloseReason.TIMED_OUT
    assert h.host.counters["TCPSynRetrans"] == 3


def test_the_first_syn_retransmissions_keep_the_initial_rto() -> None:
    """Linux's tcp_syn_linear_timeouts (4 by default): four more SYNs a second apart, then the
    timer doubles."""
    h = Harness(plain_config(syn_retries=7)).syn_sent()
    assert _syn_gaps(h) == [1, 1, 1, 1, 1, 2, 4]  # seven retransmissions
    assert h.c.state is S.CLOSED


# ---------------------------------------------------------------- a fully specified passive OPEN
def test_fully_specified_passive_open_accepts_its_peer() -> None:
    h = Harness()
    h.conn = h.host.open_passive(REMOTE, RPORT, LPORT, h.now)
    assert h.c.state is S.LISTEN
    assert_segments(h.recv(SYN, IRS), [Expect(SYN | ACK, ISS, IRS + 1)])
    assert_segments(h.recv(RST, IRS + 1), [])
    assert h.c.state is S.LISTEN and h.host.connections  # still listening for that peer


def test_send_on_passive_open_becomes_active() -> None:
    h = Harness()
    h.conn = h.host.open_passive(REMOTE, RPORT, LPORT, h.now)
    h.conn.send(b"early", h.now)
    assert_segments(h.take(), [Expect(SYN, ISS)])
    assert h.c.state is S.SYN_SENT
    # The queued data follows the handshake.
    assert_segments(h.recv(SYN | ACK, IRS, ISS + 1), [Expect(ACK | 0x08, ISS + 1, IRS + 1, b"early")])


def test_close_passive_open() -> None:
    h = Harness()
    h.conn = h.host.open_passive(REMOTE, RPORT, LPORT, h.now)
    h.conn.close(h.now)
    assert h.c.state is S.CLOSED and not h.host.connections


@pytest.mark.parametrize("iss", [2**32 - 1, 2**32 - 50])
def test_handshake_across_sequence_wrap(iss: int) -> None:
    h = Harness(plain_config(isn=lambda ft, now: iss))
    h.listen()
    out = h.recv(SYN, 2**32 - 1)
    assert_segments(out, [Expect(SYN | ACK, iss, 0)])
    h.conn = h.host.connections[(LOCAL, LPORT, REMOTE, RPORT)].handle
    h.recv(ACK, 0, (iss + 1) % 2**32, b"wrap")
    assert h.c.state is S.ESTABLISHED and h.conn.receive(h.now) == b"wrap"
